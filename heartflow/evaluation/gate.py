"""The promotion gate's judgement: a challenger against the champion on rows neither saw.

Pure evaluation: given the challenger's test rows (typed features, labels, row keys), the
keys of the rows the champion trained or validated on, and both models, :func:`judge`
says whether the challenger is better by the declared margin, on which rows, and why.
Each model is scored at its own decision threshold. Moving aliases and recording the
decision is the registry's job (``heartflow.tracking.registry.apply_decision``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from heartflow.evaluation import metrics as M
from heartflow.spec.vocabulary import improvement


@dataclass(frozen=True)
class GateRows:
    """The challenger's test rows: typed features, labels and stable row keys (hex)."""

    features: pd.DataFrame
    y: np.ndarray
    keys: list[str]

    def unseen_by(self, seen: set[str]) -> tuple[GateRows, int]:
        """The rows whose key is not in ``seen``, and how many were excluded."""
        keep = np.array([k not in seen for k in self.keys], dtype=bool)
        kept = GateRows(self.features[keep].reset_index(drop=True), self.y[keep],
                        [k for k, ok in zip(self.keys, keep, strict=True) if ok])
        return kept, int((~keep).sum())


@dataclass(frozen=True)
class Decision:
    """The outcome of the promotion gate."""

    promoted: bool
    metric: str
    challenger_score: float | None
    champion_score: float | None
    champion_version: str | None
    reason: str
    gate_rows: int | None = None      # rows both models were scored on
    excluded_rows: int | None = None  # test rows the champion had trained or validated on
    undecided: bool = False           # the gate refused to decide (too few or unknown rows)

    def fields(self) -> dict[str, str]:
        """Every field as text ('' for None), for tags."""
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}


def score(scorer: Any, rows: GateRows, metric: str) -> float:
    """One metric of a loaded model (a Scorer) on typed rows, at the model's own threshold."""
    if not len(rows.y):
        return float("nan")
    threshold = float(scorer.meta.threshold) if scorer.meta.threshold is not None else 0.5
    return M.compute(scorer.task, rows.y, scorer.output(rows.features), threshold,
                     [metric])[metric]


def better(metric: str, new: float, old: float, margin: float) -> bool:
    """``new`` beats ``old`` by at least ``margin`` (strictly, with no margin)."""
    gain = improvement(metric, new, old)
    return gain >= margin if margin > 0 else gain > 0


def judge(metric: str, challenger: Any, rows: GateRows, *, champion: Any = None,
          champion_version: str | None = None, seen: set[str] | None = None,
          min_improvement: float = 0.0, min_gate_rows: int = 1,
          baseline_scores: dict[str, float] | None = None) -> Decision:
    """Judge ``challenger`` (a Scorer) against ``champion`` (a Scorer, or None when there
    is none yet) on the rows the champion neither trained nor validated on.

    ``seen`` holds the keys of those rows; None means they cannot be known (the champion
    logged no split manifest), and then the gate refuses to decide rather than guess.
    ``baseline_scores``, when given, must all be beaten too.
    """
    if champion_version is None:
        value = score(challenger, rows, metric)
        if value != value:  # NaN: undefined on these rows
            return Decision(False, metric, None, None, None,
                            f"{metric} is undefined on the {len(rows.y)} test rows (for "
                            "example only one class among them); not promoted", len(rows.y), 0)
        decision = Decision(True, metric, value, None, None, "no champion yet", len(rows.y), 0)
        return _against_baselines(decision, baseline_scores)
    if seen is None:
        return Decision(False, metric, None, None, champion_version,
                        f"undecided: the rows champion v{champion_version} trained and validated "
                        "on cannot be known (its run has no split manifest), so no test row "
                        "can be shown to be new to it; promote by hand with heartflow promote",
                        None, None, undecided=True)
    fair, excluded = rows.unseen_by(seen)
    n = len(fair.y)
    if n < min_gate_rows:
        return Decision(False, metric, None, None, champion_version,
                        f"undecided: only {n} test rows were not seen by champion "
                        f"v{champion_version} in training or validation ({excluded} excluded); "
                        f"the gate needs {min_gate_rows} (register.promote.min_gate_rows)",
                        n, excluded, undecided=True)
    new = score(challenger, fair, metric)
    if new != new:
        return Decision(False, metric, None, None, champion_version,
                        f"{metric} is undefined on the {n} gate rows (for example only one "
                        "class among them); not promoted", n, excluded)
    if not same_inputs(challenger.meta, champion.meta):
        return Decision(False, metric, new, None, champion_version,
                        "input schema differs from the champion's (feature columns or task "
                        "changed); promote by hand with heartflow promote", n, excluded)
    old = score(champion, fair, metric)
    won = better(metric, new, old, min_improvement)
    how = (f"{metric} {new:.4f} vs champion v{champion_version} {old:.4f} on {n} test rows "
           f"neither trained nor validated on ({excluded} excluded), each model at its own "
           f"threshold")
    reason = (f"better by the margin ({how}, margin {min_improvement})" if won else
              f"not better by the margin ({how}, margin {min_improvement})")
    decision = Decision(won, metric, new, old, champion_version, reason, n, excluded)
    return _against_baselines(decision, baseline_scores)


def same_inputs(first: Any, second: Any) -> bool:
    """Two models read the same feature columns for the same task (ModelMeta)."""
    return ((first.numeric, first.categorical, first.task)
            == (second.numeric, second.categorical, second.task))


def _against_baselines(decision: Decision, baseline_scores: dict[str, float] | None
                       ) -> Decision:
    """A promotion stands only if every baseline is beaten too."""
    if not decision.promoted or not baseline_scores or decision.challenger_score is None:
        return decision
    beaten_by = [b for b, s in baseline_scores.items()
                 if not better(decision.metric, decision.challenger_score, s, 0.0)]
    if not beaten_by:
        return decision
    return Decision(False, decision.metric, decision.challenger_score, decision.champion_score,
                    decision.champion_version, f"does not beat baseline(s) "
                    f"{', '.join(beaten_by)} on {decision.metric}", decision.gate_rows,
                    decision.excluded_rows)
