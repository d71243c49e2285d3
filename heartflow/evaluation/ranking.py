"""How finished runs are ranked and chosen (a sweep's choice, ``heartflow compare``).

Runs are ranked on development rows only: the optimism-corrected figure when the runs were
bootstrap-validated (``evaluate.validation``), else the cross-validation mean when they were
cross-validated (on training + validation rows), else the metric on the validation rows.
Test metrics are shown, with their 95% intervals, and never used to rank. A metric that is
undefined (NaN) ranks last and is never chosen.

A run here is anything with a run outcome's fields (``run_id``, ``cv``, ``cv_scores``,
``validation``, ``validation_output``, ``validation_labels``), such as
:class:`heartflow.pipelines.results.RunOutcome`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from heartflow.evaluation.intervals import paired_difference, paired_fold_difference
from heartflow.spec.vocabulary import HIGHER_IS_BETTER, rank_value


def defined(value: Any) -> bool:
    """A number that is not NaN."""
    return isinstance(value, (int, float)) and not math.isnan(value)


def rank_key(value: Any, metric: str) -> float:
    """Sort key: best first, undefined last."""
    return rank_value(metric, value) if defined(value) else math.inf


def selection_score(outcome: Any, metric: str) -> tuple[float, str]:
    """What a finished run is chosen by: (optimism-corrected figure, 'corrected') when the
    run was bootstrap-validated, else (CV mean, 'cv'), else (validation metric,
    'validation')."""
    corrected = getattr(outcome, "corrected", None) or {}
    if metric in corrected and defined(corrected[metric]):
        return float(corrected[metric]), "corrected"
    if metric in outcome.cv:
        return float(outcome.cv[metric][0]), "cv"
    value = outcome.validation.get(metric)
    return (float(value), "validation") if value is not None else (math.nan, "none")


def choose(outcomes: list[Any], metric: str, task: str, threshold: float) -> dict[str, Any]:
    """Rank runs on development rows; say whether the leader beats the runner-up.

    The leader and runner-up are compared on the same rows: fold by fold (Student t) when
    both were cross-validated on the same folds, else by a paired bootstrap on the same
    validation rows. Returns the ranked outcomes and a sentence for the user.
    """
    scored = [(selection_score(o, metric), o) for o in outcomes]
    ranked = [o for (value, _source), o in sorted(
        scored, key=lambda item: rank_key(item[0][0], metric)) if defined(value)]
    out: dict[str, Any] = {"ranked": ranked, "source": scored[0][0][1] if scored else "none",
                           "distinguishable": None, "summary": "no run has a defined "
                           f"development-row {metric}"}
    if not ranked:
        return out
    leader = ranked[0]
    out["summary"] = f"chosen by {out['source']} {metric}: {leader.run_id}"
    if len(ranked) < 2:
        return out
    runner = ranked[1]
    folds_l, folds_r = leader.cv_scores.get(metric), runner.cv_scores.get(metric, [])
    if out["source"] == "cv" and folds_l and len(folds_l) == len(folds_r):
        diff, low, high = paired_fold_difference(folds_l, folds_r)
        how = f"fold by fold over {len(folds_l)} folds"
    elif leader.validation_output and leader.validation_labels == runner.validation_labels:
        diff, low, high = paired_difference(task, np.asarray(leader.validation_labels),
                                            np.asarray(leader.validation_output),
                                            np.asarray(runner.validation_output),
                                            threshold, metric)
        how = f"paired bootstrap on the same {len(leader.validation_labels)} validation rows"
    else:
        out["summary"] += "; the runner-up was scored on other rows: no paired comparison"
        return out
    clear = low > 0 if metric in HIGHER_IS_BETTER else high < 0
    out["distinguishable"] = bool(clear)
    out["difference"] = [diff, low, high]
    verdict = "better than" if clear else "not distinguishable from"
    out["summary"] = (f"leader {leader.run_id[:8]} is {verdict} the runner-up "
                      f"{runner.run_id[:8]}: {metric} difference {diff:+.4f} "
                      f"[{low:+.4f}, {high:+.4f}] ({how}, 95%)")
    return out
