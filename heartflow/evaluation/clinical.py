"""Clinical evaluation of a binary risk model: discrimination, calibration and net benefit,
each with a 95% interval and the number of rows it rests on.

- Calibration-in-the-large (intercept) and calibration slope: logistic recalibration of the
  outcome on logit(p) (statsmodels' Logit, Wald intervals), as in Van Calster et al.,
  "Calibration: the Achilles heel of predictive analytics" (BMC Medicine, 2019). Ideal:
  intercept 0, slope 1; a slope below 1 means the risks are too extreme. Undefined (NaN,
  with the reason) rather than an absurd number when no finite fit exists: risks of
  exactly 0 or 1 (infinite logit), separation (the risks order the outcomes perfectly),
  identical risks (no slope), or a fit that does not converge.
- Expected calibration error over ten bins of predicted risk with equal counts (the bins of
  scikit-learn's ``calibration_curve(strategy="quantile")``, computed here to keep
  scikit-learn's import, half a second, off every training run; tested equal to it).
  With the bootstrap the report shows it bias-corrected, see :func:`debiased_ece`.
- Sensitivity, specificity, PPV and NPV at the model's threshold.
- Net benefit (Vickers & Elkin, 2006) at each declared threshold t:
  TP/n - FP/n * t / (1 - t), against treating everyone and no one (0).
Intervals other than the GLM's are percentile bootstraps (heartflow.evaluation.intervals),
withheld when the figure is undefined on too many resamples; the ECE's is the basic
bootstrap interval. Non-finite risks (NaN, infinity) make every figure that uses them
undefined. ``ClinicalReport.undefined`` says why each undefined figure (or interval) is.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from heartflow.evaluation.intervals import MAX_UNDEFINED_SHARE, _percentiles, _resamples, _subset
from heartflow.evaluation.metrics import binary_metrics_resampled
from heartflow.model.recalibration import (  # reasons shared with the recalibration of a
    ONE_CLASS,  # model, which refuses the same rows for them
    glm,
    non_finite,
    refusal,
    separated,
)
from heartflow.spec.schema import ThresholdCosts

DEFAULT_DECISION_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)
NAN = math.nan
UNDEFINED_REASON = {
    "roc_auc": ONE_CLASS, "calibration_intercept": ONE_CLASS, "calibration_slope": ONE_CLASS,
    "sensitivity": "no row with the outcome", "specificity": "no row without the outcome",
    "ppv": "no row at or above the threshold", "npv": "no row below the threshold"}
"""Why a figure of the report is undefined (NaN) when nothing more specific is known."""
RISK_FREE = ("prevalence",)  # figures that do not use the risks


def calibration_fit(y: np.ndarray, p: np.ndarray) -> tuple[dict[str, float], dict[str, str]]:
    """Intercept (slope fixed at 1, logit(p) as offset) and slope with 95% Wald intervals,
    and why any of the two is undefined (NaN): one outcome class, non-finite risks, risks
    of exactly 0 or 1, separation, identical risks (slope only) or no convergence (the
    reasons :func:`heartflow.model.recalibration.fit_recalibration` refuses a rule for)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    out = {k: NAN for k in ("intercept", "intercept_low", "intercept_high", "slope",
                            "slope_low", "slope_high")}
    why = refusal(y, p)
    if why:
        return out, {"intercept": why, "slope": why}
    case = y > 0.5
    z = np.log(p) - np.log1p(-p)  # exact: no clipping that would invent a finite logit
    reasons: dict[str, str] = {}
    large = glm(y, np.ones((len(y), 1)), offset=z)
    if isinstance(large, str):
        reasons["intercept"] = large
    else:
        out.update(intercept=float(large[0][0]), intercept_low=float(large[1][0][0]),
                   intercept_high=float(large[1][0][1]))
    no_slope = separated(case, z)
    if no_slope:
        reasons["slope"] = no_slope
    else:
        fitted = glm(y, np.column_stack([np.ones(len(z)), z]))
        if isinstance(fitted, str):
            reasons["slope"] = fitted
        else:
            out.update(slope=float(fitted[0][1]), slope_low=float(fitted[1][1][0]),
                       slope_high=float(fitted[1][1][1]))
    return out, reasons


def calibration_intercept_slope(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Intercept and slope with 95% Wald intervals (NaN when undefined: see
    :func:`calibration_fit`, which also says why)."""
    return calibration_fit(y, p)[0]


def _quantile_bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin (0..bins-1) of each risk among the quantile bins of its own row, for each row of
    a (resamples, rows) array: the number of inner bin edges below the risk."""
    inner = np.percentile(p, np.linspace(0, 100, bins + 1)[1:-1], axis=1).T  # (k, bins-1)
    return (p[:, :, None] > inner[:, None, :]).sum(axis=2)


def calibration_bins(y: np.ndarray, p: np.ndarray, bins: int = 10
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed rate, mean predicted risk and rows of each non-empty quantile bin."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    ids = _quantile_bins(p[None], bins)[0]
    counts = np.bincount(ids, minlength=bins).astype(np.float64)
    observed = np.bincount(ids, weights=y, minlength=bins)
    predicted = np.bincount(ids, weights=p, minlength=bins)
    kept = counts > 0
    return observed[kept] / counts[kept], predicted[kept] / counts[kept], counts[kept]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed - predicted| over the quantile bins of predicted risk, by bin size (the
    plug-in estimate, biased upwards on few rows: see :func:`debiased_ece`)."""
    if not len(y):
        return math.nan
    return float(_ece(np.asarray(y, dtype=np.float64)[None], np.asarray(p, dtype=np.float64)[None],
                      bins)[0])


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> np.ndarray:
    """ECE of each row of (resamples, rows) arrays, with the bins of :func:`calibration_bins`."""
    k, n = p.shape
    ids = _quantile_bins(p, bins) + bins * np.arange(k)[:, None]  # one bin set per row
    gap = (np.bincount(ids.ravel(), weights=(y - p).ravel(), minlength=k * bins)
           .reshape(k, bins))
    return np.abs(gap).sum(axis=1) / n  # sum over bins of count * |observed - predicted| / n


def debiased_ece(plain: float, resampled: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Bias-corrected ECE and its 95% basic bootstrap interval, from the plug-in ECE and its
    values on bootstrap resamples.

    The plug-in ECE sums absolute gaps, so sampling noise only ever adds to it: on a
    resample it is larger still, and the percentile interval can lie wholly above the
    point (0.047 [0.053, 0.138]). The bootstrap measures that bias: the point is
    2 ECE - median(ECE*) (median, not mean, so that it always lies inside the interval), and
    the interval is the basic one, [2 ECE - q97.5, 2 ECE - q2.5], which removes the same
    bias from both bounds. All three are cut at 0, the least possible ECE.
    """
    median = float(np.median(resampled))
    q_low, q_high = np.percentile(resampled, [2.5, 97.5])
    return (max(0.0, 2 * plain - median),
            (max(0.0, 2 * plain - float(q_high)), max(0.0, 2 * plain - float(q_low))))


def net_benefit(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    """Net benefit of treating those with risk >= threshold."""
    y, p = np.asarray(y) > 0.5, np.asarray(p)
    n = len(y)
    treat = p >= threshold
    tp, fp = np.sum(treat & y), np.sum(treat & ~y)
    return float(tp / n - fp / n * threshold / (1 - threshold))


def treat_all_benefit(prevalence: float, threshold: float) -> float:
    """Net benefit of treating everyone."""
    return prevalence - (1 - prevalence) * threshold / (1 - threshold)


def at_threshold(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV (NaN where the denominator is 0)."""
    y, pred = np.asarray(y) > 0.5, np.asarray(p) >= threshold
    tp, fp = np.sum(pred & y), np.sum(pred & ~y)
    fn, tn = np.sum(~pred & y), np.sum(~pred & ~y)

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else math.nan

    return {"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn)}


def _figures(y: np.ndarray, p: np.ndarray, threshold: float,
             decision_thresholds: tuple[float, ...], costs: ThresholdCosts | None,
             auc: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every bootstrapped figure for each row of (resamples, rows) arrays at once; NaN for
    each figure that uses the risks on a row where one is NaN. ``auc``: each row's ROC AUC
    when the caller has it (ranking each row costs most of the time on many rows)."""
    n = y.shape[1]
    bad = np.isnan(p).any(axis=1)
    case = y > 0.5
    cases = case.sum(axis=1)
    non_cases = n - cases
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if auc is None:
            from scipy.stats import rankdata  # lazy: scipy.stats, only for bootstrapped reports

            ranks = rankdata(p, axis=1)
            auc = ((ranks * case).sum(axis=1) - cases * (cases + 1) / 2) / (cases * non_cases)
        treat = p >= threshold
        tp, fp = (treat & case).sum(axis=1), (treat & ~case).sum(axis=1)
        fn, tn = cases - tp, non_cases - fp
        out = {"roc_auc": auc, "brier": np.mean((p - y) ** 2, axis=1), "ece": _ece(y, p),
               "prevalence": cases / n, "mean_risk": p.mean(axis=1),
               "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
               "ppv": tp / (tp + fp), "npv": tn / (tn + fn)}
    for t in decision_thresholds:
        chosen = p >= t
        out[f"net_benefit@{t:g}"] = ((chosen & case).sum(axis=1) / n
                                     - (chosen & ~case).sum(axis=1) / n * t / (1 - t))
    if costs is not None:
        out["expected_cost"] = (costs.false_negative_cost * fn
                                + costs.false_positive_cost * fp) / n
    return {k: np.where(np.isfinite(v) & (k in RISK_FREE or ~bad), v, np.nan).astype(np.float64)
            for k, v in out.items()}


@dataclass
class ClinicalReport:
    """Every figure of a clinical evaluation, with intervals and counts.

    ``undefined`` says why a figure is undefined (NaN) or its interval withheld;
    ``undefined_resamples`` how many of the ``resamples`` bootstrap resamples left each
    figure undefined (only figures with any). The notes say both in words.
    """

    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    rows: int
    rows_with_missing: int
    threshold: float
    decision_thresholds: tuple[float, ...]
    notes: list[str] = field(default_factory=list)
    undefined: dict[str, str] = field(default_factory=dict)
    resamples: int = 0
    undefined_resamples: dict[str, int] = field(default_factory=dict)

    def table(self) -> list[tuple[str, str, str]]:
        """(figure, value, 95% interval) rows."""
        out = []
        for name, value in self.values.items():
            low, high = self.intervals.get(name, (math.nan, math.nan))
            shown = "undefined" if value != value else f"{value:.4f}"
            ci = f"[{low:.4f}, {high:.4f}]" if low == low and high == high else ""
            out.append((name, shown, ci))
        return out

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat MLflow metrics (names without '@')."""
        out = {}
        for name, value in self.values.items():
            key = prefix + name.replace("@", "_at_")
            out[key] = value
            if name in self.intervals:
                out[f"{key}_ci_low"], out[f"{key}_ci_high"] = self.intervals[name]
            if name in self.undefined_resamples:
                out[f"{key}_undefined_resamples"] = float(self.undefined_resamples[name])
        out[f"{prefix}rows"] = float(self.rows)
        out[f"{prefix}rows_with_missing"] = float(self.rows_with_missing)
        return out


def clinical_report(y: np.ndarray, p: np.ndarray, threshold: float = 0.5,
                    decision_thresholds: tuple[float, ...] = DEFAULT_DECISION_THRESHOLDS,
                    rows_with_missing: int = 0, seed: int = 0, bootstrap: bool = True,
                    costs: ThresholdCosts | None = None) -> ClinicalReport:
    """Discrimination, calibration, threshold figures and net benefit for risks ``p``.

    Without ``bootstrap`` only the calibration intercept and slope carry intervals (the
    GLM's), and the ECE is the plug-in one. With ``costs``, the expected cost per row of
    the threshold is reported too. Undefined figures are NaN, each with its reason.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    raw = np.asarray(p, dtype=np.float64).ravel()
    finite = np.isfinite(raw)
    p = np.where(finite, np.clip(raw, 0.0, 1.0), np.nan)
    thresholds = tuple(decision_thresholds)
    point = _figures(y[None], p[None], threshold, thresholds, costs)
    values = {name: float(v[0]) for name, v in point.items()}
    intervals: dict[str, tuple[float, float]] = {}
    missing: dict[str, int] = {}
    resamples = 0
    if bootstrap and len(y) and finite.all():
        draws = _bootstrap_draws(y, p, threshold, thresholds, costs, seed, list(values))
        low, high, undefined_counts = _percentiles(draws)
        intervals = {n: (float(low[k]), float(high[k])) for k, n in enumerate(values)}
        resamples = len(draws)
        missing = {n: int(undefined_counts[k]) for k, n in enumerate(values)
                   if undefined_counts[k]}
        values["ece"], intervals["ece"] = debiased_ece(values["ece"],
                                                       draws[:, list(values).index("ece")])
    elif bootstrap and len(y):
        intervals = {n: (NAN, NAN) for n in values}  # non-finite risks: nothing to resample
    glm, why = calibration_fit(y, p)
    for name in ("intercept", "slope"):
        values[f"calibration_{name}"] = glm[name]
        intervals[f"calibration_{name}"] = (glm[f"{name}_low"], glm[f"{name}_high"])
    for t in thresholds:
        values[f"treat_all@{t:g}"] = treat_all_benefit(values["prevalence"], t)
    undefined: dict[str, str] = {}
    for name, value in values.items():
        if value != value:
            undefined[name] = (why.get(name.removeprefix("calibration_"))
                               or (non_finite(int(np.sum(~finite))) if not finite.all()
                                   else UNDEFINED_REASON.get(name,
                                                             "not computable on these rows")))
    withheld = [n for n, m in missing.items() if m > MAX_UNDEFINED_SHARE * resamples]
    for name in withheld:
        undefined.setdefault(name, f"interval withheld: undefined on {missing[name]} of "
                                   f"{resamples} bootstrap resamples (more than "
                                   f"{MAX_UNDEFINED_SHARE:.0%})")
    notes = _notes(undefined, values, missing, resamples, withheld)
    return ClinicalReport(values, intervals, len(y), rows_with_missing, threshold, thresholds,
                          notes, undefined, resamples, missing)


def _bootstrap_draws(y: np.ndarray, p: np.ndarray, threshold: float,
                     thresholds: tuple[float, ...], costs: ThresholdCosts | None, seed: int,
                     names: list[str]) -> np.ndarray:
    """(resamples, figures): the ``names`` on each seeded resample, in vectorised blocks."""
    rows = _subset(len(y), seed)
    ys, ps = y[rows], p[rows]
    rng = np.random.default_rng(seed)
    draws: list[np.ndarray] = []
    total = _resamples(len(rows))
    block = max(1, min(total, 2_000_000 // max(1, len(rows))))
    for start in range(0, total, block):
        idx = rng.integers(0, len(rows), (min(block, total - start), len(rows)))
        # The AUCs from counts over the risks ranked once, not a ranking per resample.
        auc = binary_metrics_resampled(ys, ps, idx, threshold, ["roc_auc"])["roc_auc"]
        figures = _figures(ys[idx], ps[idx], threshold, thresholds, costs, auc)
        draws.append(np.column_stack([figures[name] for name in names]))
    return np.vstack(draws)


def _notes(undefined: dict[str, str], values: dict[str, float], missing: dict[str, int],
           resamples: int, withheld: list[str]) -> list[str]:
    """Undefined figures grouped by reason, then the bootstrap's undefined resamples."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in undefined.items():
        if values[name] != values[name]:
            by_reason.setdefault(reason, []).append(name)
    notes = [f"{', '.join(names)} undefined: {reason}" for reason, names in by_reason.items()]
    shown = {name: count for name, count in missing.items() if values[name] == values[name]}
    if shown:  # (a figure undefined on the rows themselves is undefined on every resample)
        counts = "; ".join(f"{name} {count} of {resamples} undefined"
                           + (" (interval withheld)" if name in withheld else "")
                           for name, count in shown.items())
        notes.append(f"bootstrap resamples on which a figure was undefined (its interval "
                     f"rests on the others, and is withheld past {MAX_UNDEFINED_SHARE:.0%}): "
                     f"{counts}")
    return notes
