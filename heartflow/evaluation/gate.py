"""The promotion gate's judgement: a challenger against the champion on rows neither saw.

Pure evaluation: given the challenger's test rows (typed features, labels, row keys), the
keys of the rows the champion trained or validated on, and both models, :func:`judge`
says whether the challenger is better, on which rows, and why. Each model is scored at
its own decision threshold. The rule (``register.promote.rule``) decides on evidence:

- ``superior`` (default): the lower 95% bound of challenger minus champion (a paired
  bootstrap on the same rows) must exceed ``margin``;
- ``non_inferior``: that lower bound must exceed minus ``margin``;
- ``point``: the point difference must exceed ``margin`` (the rule before intervals).

With no champion yet, the challenger faces the no-information model (every row at the
outcome rate) the same way. Moving aliases and recording the decision is the registry's
job (``heartflow.tracking.registry.apply_decision``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.split import KeyPrefixes
from heartflow.evaluation import metrics as M
from heartflow.evaluation.intervals import paired_difference
from heartflow.spec.vocabulary import improvement


@dataclass(frozen=True)
class GateRows:
    """The challenger's test rows: typed features, labels and stable row keys (hex), and the
    baselines' outputs on the same rows (``register.promote.must_beat_baselines``)."""

    features: pd.DataFrame
    y: np.ndarray
    keys: list[str]
    baselines: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "test rows"  # what the rows are, as the gate's reason names them
    scoring: str = ""  # how the challenger's risks on them were made, when not plainly

    def unseen_by(self, seen: set[str] | KeyPrefixes) -> tuple[GateRows, int]:
        """The rows whose key is not in ``seen`` (keyed keys, or a streamed run's prefixes
        of them), and how many were excluded."""
        if isinstance(seen, KeyPrefixes):
            keep = ~seen.isin(self.keys)
        else:
            keep = np.array([k not in seen for k in self.keys], dtype=bool)
        kept = GateRows(self.features[keep].reset_index(drop=True), self.y[keep],
                        [k for k, ok in zip(self.keys, keep, strict=True) if ok],
                        {name: out[keep] for name, out in self.baselines.items()},
                        self.kind, self.scoring)
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
    rule: str = "point"
    difference: float | None = None   # challenger minus champion (or no-information model)
    ci_low: float | None = None       # its 95% paired-bootstrap interval
    ci_high: float | None = None
    awaiting_approval: bool = False   # passed, but register.promote.require_approval holds

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


RULES = ("superior", "non_inferior", "point")


def passes(rule: str, metric: str, diff: float, low: float, high: float,
           margin: float) -> bool:
    """Whether a difference (challenger minus the other, with its 95% interval) passes the
    rule, whichever way the metric points."""
    gain = improvement(metric, diff, 0.0)
    worst = min(improvement(metric, low, 0.0), improvement(metric, high, 0.0))
    if rule == "point":
        return gain >= margin if margin > 0 else gain > 0
    if rule == "non_inferior":
        return worst > -margin
    return worst > margin


def _verdict(rule: str, margin: float) -> str:
    return {"point": f"point difference above {margin}",
            "non_inferior": f"lower 95% bound above -{margin}",
            "superior": f"lower 95% bound above {margin}"}[rule]


def judge(metric: str, challenger: Any, rows: GateRows, *, champion: Any = None,
          champion_version: str | None = None, seen: set[str] | KeyPrefixes | None = None,
          rule: str = "superior", margin: float = 0.0, min_gate_rows: int = 1) -> Decision:
    """Judge ``challenger`` (a Scorer) against ``champion`` (a Scorer, or None when there
    is none yet) on the rows the champion neither trained nor validated on.

    ``seen`` holds the keys of those rows (a streamed champion's as 64-bit prefixes); None
    means they cannot be known (the champion's run logged no split manifest nor, streamed,
    seen file), and then the gate refuses to decide rather than guess.
    The baselines of ``rows``, when given, must all be beaten too, on the same rows.
    """
    if champion_version is None:
        return _against_baselines(against_no_information(metric, challenger, rows, rule),
                                  challenger, rows)
    if seen is None:
        return Decision(False, metric, None, None, champion_version,
                        f"undecided: the rows champion v{champion_version} trained and validated "
                        "on cannot be known (its run has no split manifest nor seen-rows "
                        "file, or one keyed in another format or under another row-key "
                        "secret, or one that does not match its logged split), so no test "
                        "row can be shown to be new to it; promote by hand with heartflow "
                        "promote",
                        None, None, undecided=True)
    fair, excluded = rows.unseen_by(seen)
    n = len(fair.y)
    if n < min_gate_rows:
        return Decision(False, metric, None, None, champion_version,
                        f"undecided: only {n} {rows.kind} were not seen by champion "
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
    diff, low, high = paired_difference(
        challenger.task, fair.y, challenger.output(fair.features),
        champion.output(fair.features), float(challenger.meta.threshold), metric,
        second_threshold=float(champion.meta.threshold))
    won = passes(rule, metric, diff, low, high, margin)
    how = (f"{metric} {new:.4f} vs champion v{champion_version} {old:.4f}, difference "
           f"{diff:+.4f} [{low:+.4f}, {high:+.4f}] (paired bootstrap, 95%) on {n} {rows.kind} "
           f"the champion neither trained nor validated on ({excluded} excluded), each model "
           f"at its own threshold" + (f"; the challenger's risks {rows.scoring}"
                                      if rows.scoring else "")
           + f"; rule {rule}: {_verdict(rule, margin)}")
    reason = f"better by the rule ({how})" if won else f"not better by the rule ({how})"
    decision = Decision(won, metric, new, old, champion_version, reason, n, excluded,
                        rule=rule, difference=diff, ci_low=low, ci_high=high)
    return _against_baselines(decision, challenger, fair)


def no_information(task: str, y: np.ndarray, output: np.ndarray) -> np.ndarray:
    """The no-information model's output on these rows: every row gets the rows' outcome
    rate (binary), class shares (multiclass) or mean (regression)."""
    y = np.asarray(y, dtype=np.float64)
    if task == "multiclass":
        shares = np.bincount(y.astype(np.int64), minlength=output.shape[1]) / len(y)
        return np.tile(shares, (len(y), 1))
    return np.full(len(y), y.mean())


def against_no_information(metric: str, challenger: Any, rows: GateRows,
                           rule: str = "superior") -> Decision:
    """With no champion yet, the challenger must beat the no-information model on the test
    rows by the rule: by its 95% interval (paired bootstrap of the difference) for
    ``superior`` and ``non_inferior``; under ``point`` (the rule before intervals) a defined
    figure is enough."""
    n = len(rows.y)
    output = challenger.output(rows.features) if n else np.empty(0)
    threshold = float(challenger.meta.threshold)
    value = M.compute(challenger.task, rows.y, output, threshold, [metric])[metric] if n \
        else float("nan")
    if value != value:  # NaN: undefined on these rows (or a broken network)
        return Decision(False, metric, None, None, None,
                        f"{metric} is undefined on the {n} test rows (for example only one "
                        "class among them, or outputs that are not numbers); not promoted",
                        n, 0)
    null = no_information(challenger.task, rows.y, output)
    null_value = M.compute(challenger.task, rows.y, null, threshold, [metric])[metric]
    if rule == "point" or null_value != null_value:
        why = ("rule point" if rule == "point" else f"the no-information model's {metric} "
               "is undefined, so it cannot be compared")
        return Decision(True, metric, value, None, None,
                        f"no champion yet; {metric} {value:.4f} on {n} test rows ({why})",
                        n, 0, rule=rule)
    diff, low, high = paired_difference(challenger.task, rows.y, output, null, threshold,
                                        metric)
    won = passes("superior", metric, diff, low, high, 0.0)  # the whole interval above it
    how = (f"{metric} {value:.4f} vs {null_value:.4f} for the no-information model (every "
           f"row at the outcome rate), difference {diff:+.4f} [{low:+.4f}, {high:+.4f}] on "
           f"{n} test rows (paired bootstrap, 95%)")
    reason = (f"no champion yet; better than the no-information model ({how})" if won else
              f"no champion yet, and not shown better than the no-information model ({how}); "
              "not promoted")
    return Decision(won, metric, value, None, None, reason, n, 0, rule=rule, difference=diff,
                    ci_low=low, ci_high=high)


def same_inputs(first: Any, second: Any) -> bool:
    """Two models read the same feature columns for the same task (ModelMeta)."""
    return ((first.numeric, first.categorical, first.task)
            == (second.numeric, second.categorical, second.task))


def _against_baselines(decision: Decision, challenger: Any, rows: GateRows) -> Decision:
    """A promotion stands only if every baseline is beaten too, on the same rows and at the
    challenger's threshold."""
    if not decision.promoted or not rows.baselines or decision.challenger_score is None:
        return decision
    metric, threshold = decision.metric, float(challenger.meta.threshold)
    scores = {name: M.compute(challenger.task, rows.y, out, threshold, [metric])[metric]
              for name, out in rows.baselines.items()}
    beaten_by = [f"{b} ({s:.4f})" for b, s in scores.items()
                 if not better(metric, decision.challenger_score, s, 0.0)]
    if not beaten_by:
        return decision
    return replace(decision, promoted=False, reason=f"does not beat baseline(s) "
                   f"{', '.join(beaten_by)} on {metric} ({decision.challenger_score:.4f}) on "
                   f"the same {len(rows.y)} rows")
