"""The clinical figures per subgroup (``evaluate.subgroups``): levels of a column, or bands
of a numeric one, each with its rows and outcome counts, flagged when too small to judge.

A subgroup is too small when it has fewer than ``min_rows`` rows or fewer than
``MIN_EACH_OUTCOME`` of either outcome: its AUC and calibration would rest on a handful
of patients (a slope of 489 [-791764, 792742] beside the flag says nothing true). Such a
subgroup shows its counts only: every figure but the prevalence (its cases over its rows)
is NaN, without an interval, the reason in the report's ``undefined``. Rows whose
subgroup value is missing form their own group ("missing").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from heartflow.evaluation.clinical import ClinicalReport, clinical_report
from heartflow.spec.schema import SubgroupSpec, ThresholdCosts

MIN_EACH_OUTCOME = 5
COUNTS = ("prevalence",)  # what a subgroup too small to judge still shows: its counts
SHOWN = ("roc_auc", "calibration_intercept", "calibration_slope", "mean_risk", "prevalence",
         "sensitivity", "specificity")


@dataclass
class Subgroup:
    """One subgroup's report."""

    column: str
    level: str
    rows: int
    cases: int
    report: ClinicalReport
    too_small: bool

    @property
    def name(self) -> str:
        """``sex=1``, ``age=[50, 60)``."""
        return f"{self.column}={self.level}"


def _band(edges: list[float], i: int) -> str:
    return f"[{edges[i]:g}, {edges[i + 1]:g})"


def subgroup_labels(values: pd.Series, group: SubgroupSpec) -> np.ndarray:
    """The subgroup label of every row (bands for ``bins``, the level otherwise)."""
    if group.bins is None:
        shown = values.map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
        return np.where(values.isna(), "missing", shown).astype(object)
    edges = list(group.bins)
    x = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    band = np.searchsorted(edges, x, side="right") - 1
    labels = np.array([_band(edges, i) for i in range(len(edges) - 1)] + ["outside"],
                      dtype=object)
    out = labels[np.where((band < 0) | (band >= len(edges) - 1), len(edges) - 1, band)]
    out[np.isnan(x)] = "missing"
    return out


def subgroup_reports(features: pd.DataFrame, y: np.ndarray, p: np.ndarray,
                     groups: list[SubgroupSpec], threshold: float,
                     decision_thresholds: tuple[float, ...], min_rows: int, seed: int = 0,
                     costs: ThresholdCosts | None = None) -> list[Subgroup]:
    """A clinical report for every subgroup of every declared column, with counts."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    out = []
    for group in groups:
        labels = subgroup_labels(features[group.column].reset_index(drop=True), group)
        for level in sorted(set(labels), key=_order(group)):
            rows = labels == level
            ys, ps = y[rows], p[rows]
            cases = int(ys.sum())
            small = (len(ys) < min_rows or cases < MIN_EACH_OUTCOME
                     or len(ys) - cases < MIN_EACH_OUTCOME)
            report = clinical_report(ys, ps, threshold, decision_thresholds, seed=seed,
                                     costs=costs, bootstrap=not small)
            if small:
                _counts_only(report, f"too small to judge: {len(ys)} rows, {cases} with the "
                                     f"outcome (at least {min_rows} rows and "
                                     f"{MIN_EACH_OUTCOME} of each outcome needed)")
            out.append(Subgroup(group.column, str(level), len(ys), cases, report, small))
    return out


def _counts_only(report: ClinicalReport, reason: str) -> None:
    """Withhold every figure of ``report`` but its counts (NaN, no interval), for ``reason``."""
    for name in report.values:
        if name not in COUNTS:
            report.values[name] = float("nan")
            report.undefined[name] = reason
    report.intervals = {name: (float("nan"), float("nan")) for name in report.values}
    report.notes = [f"{reason}: counts only, every other figure withheld"]


def _order(group: SubgroupSpec):
    """Bands in their numeric order, then 'outside' and 'missing'; levels as text."""
    if group.bins is None:
        return lambda label: (label == "missing", label)
    bands = [_band(list(group.bins), i) for i in range(len(group.bins) - 1)]
    return lambda label: bands.index(label) if label in bands else len(bands) + (
        label == "missing")


def subgroup_table(subgroups: list[Subgroup]) -> pd.DataFrame:
    """One row per subgroup: counts, the main figures with intervals, and the flag."""
    rows = []
    for g in subgroups:
        row: dict[str, object] = {"subgroup": g.name, "rows": g.rows, "cases": g.cases,
                                  "too_small": g.too_small}
        for name in SHOWN:
            row[name] = g.report.values.get(name, float("nan"))
            low, high = g.report.intervals.get(name, (float("nan"), float("nan")))
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows)
