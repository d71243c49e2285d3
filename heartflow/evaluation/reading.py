"""A clinical evaluation read in plain sentences: what its figures say, each sentence with
the figure it rests on (so a reader can check it against the table below it).

Drawn from the figures only, with fixed rules:

- discrimination: the ROC AUC with its interval; an interval that reaches 0.5 is no better
  than chance;
- calibration-in-the-large: mean predicted risk against the observed prevalence, judged by
  the calibration intercept's 95% interval (above 0: the model under-predicts risk; below
  0: it over-predicts; either way recalibrate before use);
- calibration slope: its interval below 1 means risks too extreme, above 1 too modest;
- the ECE explained in one line;
- net benefit against treating everyone and treating no one at each reported threshold
  (point estimates: the table gives their intervals);
- subgroups too small to judge, named with their counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from heartflow.evaluation.clinical import ClinicalReport, treat_all_benefit

ECE_MEANING = ("ECE (expected calibration error) is the average gap between predicted risk "
               "and the observed rate over ten equal-sized groups of patients ordered by "
               "predicted risk: 0 is perfect, 0.05 means risks are off by 5 points on average")


def _ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _fig(name: str, value: float, interval: tuple[float, float] | None, digits: int,
         signed: bool = False) -> str:
    """``name 0.701 [0.623, 0.779]``: the figure a sentence cites."""
    fmt = f"{'+' if signed else ''}.{digits}f"
    shown = f"{name} {value:{fmt}}"
    if interval and _ok(interval[0]) and _ok(interval[1]):
        shown += f" [{interval[0]:{fmt}}, {interval[1]:{fmt}}]"
    return shown


def discrimination(values: Mapping[str, float], intervals: Mapping[str, tuple[float, float]],
                   rows: int, undefined: Mapping[str, str]) -> str:
    """How well the risks rank patients with the outcome above those without."""
    auc = values.get("roc_auc", math.nan)
    if not _ok(auc):
        return ("Discrimination cannot be judged: the ROC AUC is undefined ("
                f"{undefined.get('roc_auc', 'not computable on these rows')}).")
    low, high = intervals.get("roc_auc", (math.nan, math.nan))
    word = ("excellent" if auc >= 0.9 else "good" if auc >= 0.8 else "fair" if auc >= 0.7
            else "weak" if auc >= 0.6 else "poor")
    text = (f"Discrimination is {word}: a patient with the outcome gets a higher risk than one "
            f"without in {100 * auc:.0f}% of pairs ({_fig('roc_auc', auc, (low, high), 3)}, "
            f"{rows} rows)")
    if _ok(low) and low <= 0.5:
        text += "; its 95% interval reaches 0.5, so it may be no better than chance"
    return text + "."


def calibration_in_the_large(values: Mapping[str, float],
                             intervals: Mapping[str, tuple[float, float]],
                             undefined: Mapping[str, str]) -> str | None:
    """Mean predicted risk against the observed prevalence, judged by the intercept."""
    risk, prevalence = values.get("mean_risk"), values.get("prevalence")
    said = (f"mean predicted risk {risk:.2f} against an observed prevalence of "
            f"{prevalence:.2f}" if _ok(risk) and _ok(prevalence) else "")
    intercept = values.get("calibration_intercept", math.nan)
    if not _ok(intercept):
        if not said and "calibration_intercept" not in values:
            return None
        why = undefined.get("calibration_intercept", "not computable on these rows")
        return (f"Calibration-in-the-large cannot be judged: the calibration intercept is "
                f"undefined ({why})" + (f"; {said}" if said else "") + ".")
    low, high = intervals.get("calibration_intercept", (math.nan, math.nan))
    cited = _fig("calibration_intercept", intercept, (low, high), 2, signed=True)
    said = f"{said}, " if said else ""
    if _ok(low) and low > 0:
        return (f"The model under-predicts risk: {said}{cited}, above 0: recalibrate before "
                "use.")
    if _ok(high) and high < 0:
        return (f"The model over-predicts risk: {said}{cited}, below 0: recalibrate before "
                "use.")
    if not (_ok(low) and _ok(high)):
        return f"Average risk: {said}{cited} (no interval to judge it by)."
    return f"Average risk matches the outcome rate: {said}{cited}, which includes 0."


def calibration_slope(values: Mapping[str, float], intervals: Mapping[str, tuple[float, float]],
                      undefined: Mapping[str, str]) -> str | None:
    """Whether risks spread as much as the outcomes do."""
    if "calibration_slope" not in values:
        return None
    slope = values["calibration_slope"]
    if not _ok(slope):
        why = undefined.get("calibration_slope", "not computable on these rows")
        return f"The calibration slope is undefined ({why})."
    low, high = intervals.get("calibration_slope", (math.nan, math.nan))
    cited = _fig("calibration_slope", slope, (low, high), 2)
    if _ok(high) and high < 1:
        return (f"Risks are too extreme ({cited}, below 1): high risks are too high and low "
                "risks too low, as an overfitted model gives.")
    if _ok(low) and low > 1:
        return f"Risks are too modest ({cited}, above 1): they spread less than they should."
    if not (_ok(low) and _ok(high)):
        return f"Calibration slope: {cited} (no interval to judge it by)."
    return f"The spread of the risks fits ({cited}, which includes 1)."


def ece(values: Mapping[str, float], intervals: Mapping[str, tuple[float, float]]) -> str | None:
    """The ECE and what it means, in one line."""
    value = values.get("ece")
    if not _ok(value):
        return None
    return f"Calibration error: {_fig('ece', value, intervals.get('ece'), 3)}; {ECE_MEANING}."


def net_benefit(values: Mapping[str, float], thresholds: Sequence[float]) -> str | None:
    """The model's net benefit against treating everyone and treating no one (0), at each
    threshold: where it is useful, where treating everyone does better, where it harms."""
    prevalence = values.get("prevalence", math.nan)
    pairs = []
    for t in thresholds:
        nb = values.get(f"net_benefit@{t:g}", math.nan)
        everyone = values.get(f"treat_all@{t:g}", treat_all_benefit(prevalence, t)
                              if _ok(prevalence) else math.nan)
        if _ok(nb) and _ok(everyone):
            pairs.append((t, nb, everyone))
    if not pairs:
        return None
    cited = "; ".join(f"at {t:g}: {nb:.3f} vs treat all {everyone:.3f}"
                      for t, nb, everyone in pairs)
    worse = [t for t, nb, everyone in pairs if nb < everyone]
    harm = [t for t, nb, _ in pairs if nb < 0]
    useful = [t for t, nb, everyone in pairs if nb > max(everyone, 0.0)]

    def listed(ts: list[float]) -> str:
        return ", ".join(f"{t:g}" for t in ts)

    if len(worse) == len(pairs):
        head = ("The model is worse than treating everyone at these thresholds "
                f"({listed(worse)})")
    elif len(useful) == len(pairs):
        head = ("The model does better than treating everyone or no one at every threshold "
                f"reported ({listed(useful)})")
    else:
        parts = [f"better than treating everyone or no one at {listed(useful)}" if useful
                 else "", f"worse than treating everyone at {listed(worse)}" if worse else ""]
        head = "The model is " + "; ".join(p for p in parts if p) if any(parts) else \
            "The model does no better than treating no one"
    if harm:
        head += f"; below treating no one at {listed(harm)}"
    return f"{head} (net benefit, {cited})."


def subgroups(groups: Sequence[Any]) -> str | None:
    """The subgroups too small to judge, with their counts."""
    small = [g for g in groups if g.too_small]
    if not small:
        return None
    named = ", ".join(f"{g.name} ({g.rows} rows, {g.cases} with the outcome)" for g in small)
    return (f"Too small to judge, counts only: {named}; their figures would rest on a "
            "handful of patients.")


def read_figures(values: Mapping[str, float], intervals: Mapping[str, tuple[float, float]],
                 rows: int, *, thresholds: Sequence[float] = (),
                 undefined: Mapping[str, str] | None = None,
                 groups: Sequence[Any] = ()) -> list[str]:
    """The plain sentences of a set of figures (see the module docstring), in order:
    discrimination, calibration-in-the-large, slope, ECE, net benefit, subgroups."""
    why = undefined or {}
    said = [discrimination(values, intervals, rows, why),
            calibration_in_the_large(values, intervals, why),
            calibration_slope(values, intervals, why), ece(values, intervals),
            net_benefit(values, thresholds), subgroups(groups)]
    return [s for s in said if s]


def read_report(report: ClinicalReport, groups: Sequence[Any] = ()) -> list[str]:
    """The plain sentences of a clinical report (and its subgroups)."""
    return read_figures(report.values, report.intervals, report.rows,
                        thresholds=report.decision_thresholds, undefined=report.undefined,
                        groups=groups)
