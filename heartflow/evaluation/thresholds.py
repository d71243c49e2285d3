"""Decision thresholds from error costs, and the expected cost of a threshold.

With costs C_FN (a missed case) and C_FP (a non-case treated), treating a patient of
true risk r costs (1 - r) C_FP and not treating costs r C_FN: the two are equal at
r = C_FP / (C_FP + C_FN). For calibrated risks that is the best threshold
(``cost_ratio``). When the risks are not calibrated, the threshold with the least
expected cost can instead be chosen on validation rows (``validation``): never on
test rows, which are scored once with the threshold already fixed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from heartflow.model.scorer import network_output
from heartflow.spec.schema import Spec, ThresholdCosts


def expected_cost(y: np.ndarray, p: np.ndarray, threshold: float,
                  costs: ThresholdCosts) -> float:
    """Mean cost per row of treating those with risk >= threshold."""
    y, treat = np.asarray(y) > 0.5, np.asarray(p) >= threshold
    fn, fp = np.sum(~treat & y), np.sum(treat & ~y)
    return float((costs.false_negative_cost * fn + costs.false_positive_cost * fp) / len(y))


def least_cost_threshold(y: np.ndarray, p: np.ndarray, costs: ThresholdCosts) -> float:
    """The threshold with the least expected cost on these rows.

    Candidates are midpoints between consecutive distinct risks (and the ends), so the
    choice does not sit on one row's risk; ties go to the one nearest the cost ratio.
    """
    y = np.asarray(y) > 0.5
    p = np.asarray(p, dtype=np.float64)
    distinct = np.unique(p)
    candidates = np.concatenate([[0.0], (distinct[:-1] + distinct[1:]) / 2, [1.0]])
    candidates = np.clip(candidates, 1e-6, 1 - 1e-6)
    order = np.argsort(p)
    p_sorted, y_sorted = p[order], y[order]
    below = np.searchsorted(p_sorted, candidates, side="left")  # rows not treated
    cases_below = np.concatenate([[0], np.cumsum(y_sorted)])[below]
    non_cases_above = (len(y) - below) - (y.sum() - cases_below)
    cost = (costs.false_negative_cost * cases_below
            + costs.false_positive_cost * non_cases_above) / len(y)
    best = np.flatnonzero(np.isclose(cost, cost.min()))
    nearest = best[np.argmin(np.abs(candidates[best] - costs.ratio_threshold))]
    return float(candidates[nearest])


def resolve_threshold(costs: ThresholdCosts | None, fixed: float,
                      y_val: np.ndarray | None, p_val: np.ndarray | None
                      ) -> tuple[float, str]:
    """(threshold, how it was set) for a run."""
    if costs is None:
        return fixed, "given in the spec"
    ratio = costs.ratio_threshold
    stated = (f"false negative cost {costs.false_negative_cost:g}, false positive cost "
              f"{costs.false_positive_cost:g}")
    if costs.method == "cost_ratio" or y_val is None or p_val is None or not len(y_val):
        return ratio, f"cost ratio ({stated}): right when the risks are calibrated"
    chosen = least_cost_threshold(y_val, p_val, costs)
    return chosen, (f"least expected cost on {len(y_val)} validation rows ({stated}); "
                    f"the cost ratio would give {ratio:.3f}")


def settle_threshold(spec: Spec, network: Any, x_val: np.ndarray | None,
                     y_val: np.ndarray | None) -> tuple[float | None, str]:
    """(threshold, how it was set) for a freshly trained binary network, fixed before any
    test row is scored; (None, "") for other tasks. Validation rows are scored only when the
    spec asks for the least-cost threshold on them."""
    if spec.task != "binary":
        return None, ""
    costs = spec.evaluate.costs
    p_val = None
    if costs is not None and costs.method == "validation" and x_val is not None:
        p_val = network_output(network, x_val).reshape(-1)
    return resolve_threshold(costs, spec.evaluate.decision_threshold, y_val, p_val)
