"""Clinical evaluation of a binary risk model: discrimination, calibration and net benefit,
each with a 95% interval and the number of rows it rests on.

- Calibration-in-the-large (intercept) and calibration slope: logistic recalibration of the
  outcome on logit(p) (statsmodels GLM, Wald intervals), as in Van Calster et al.,
  "Calibration: the Achilles heel of predictive analytics" (BMC Medicine, 2019). Ideal:
  intercept 0, slope 1; a slope below 1 means the risks are too extreme.
- Expected calibration error over ten bins of predicted risk with equal counts (the bins of
  scikit-learn's ``calibration_curve(strategy="quantile")``, computed here to keep
  scikit-learn's import, half a second, off every training run; tested equal to it).
- Sensitivity, specificity, PPV and NPV at the model's threshold.
- Net benefit (Vickers & Elkin, 2006) at each declared threshold t:
  TP/n - FP/n * t / (1 - t), against treating everyone and no one (0).
Intervals other than the GLM's are percentile bootstraps (heartflow.evaluation.intervals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from heartflow.model.recalibration import logit
from heartflow.spec.schema import ThresholdCosts

DEFAULT_DECISION_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)


def calibration_intercept_slope(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Intercept (slope fixed at 1, logit(p) as offset) and slope, with 95% Wald intervals."""
    import warnings

    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM  # not statsmodels.api: 1 s

    y = np.asarray(y, dtype=np.float64)
    z = logit(p)
    nan = {k: math.nan for k in ("intercept", "intercept_low", "intercept_high", "slope",
                                 "slope_low", "slope_high")}
    if len(np.unique(y)) < 2:
        return nan
    out = dict(nan)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # separation: the intervals say it (very wide)
            large = GLM(y, np.ones((len(y), 1)), family=families.Binomial(), offset=z).fit()
            low, high = large.conf_int(0.05)[0]
            out.update(intercept=float(large.params[0]), intercept_low=float(low),
                       intercept_high=float(high))
            fitted = GLM(y, np.column_stack([np.ones(len(z)), z]),
                         family=families.Binomial()).fit()
            low, high = fitted.conf_int(0.05)[1]
            out.update(slope=float(fitted.params[1]), slope_low=float(low),
                       slope_high=float(high))
    except (np.linalg.LinAlgError, ValueError):
        pass  # undefined, reported as such
    return out


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
    """Mean |observed - predicted| over the quantile bins of predicted risk, by bin size."""
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
             decision_thresholds: tuple[float, ...], costs: ThresholdCosts | None
             ) -> dict[str, np.ndarray]:
    """Every bootstrapped figure for each row of (resamples, rows) arrays at once."""
    from scipy.stats import rankdata

    n = y.shape[1]
    case = y > 0.5
    cases = case.sum(axis=1)
    non_cases = n - cases
    with np.errstate(invalid="ignore", divide="ignore"):
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
    return {k: np.where(np.isfinite(v), v, np.nan).astype(np.float64) for k, v in out.items()}


@dataclass
class ClinicalReport:
    """Every figure of a clinical evaluation, with intervals and counts."""

    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    rows: int
    rows_with_missing: int
    threshold: float
    decision_thresholds: tuple[float, ...]
    notes: list[str] = field(default_factory=list)

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
        out[f"{prefix}rows"] = float(self.rows)
        out[f"{prefix}rows_with_missing"] = float(self.rows_with_missing)
        return out


def clinical_report(y: np.ndarray, p: np.ndarray, threshold: float = 0.5,
                    decision_thresholds: tuple[float, ...] = DEFAULT_DECISION_THRESHOLDS,
                    rows_with_missing: int = 0, seed: int = 0, bootstrap: bool = True,
                    costs: ThresholdCosts | None = None) -> ClinicalReport:
    """Discrimination, calibration, threshold figures and net benefit for risks ``p``.

    Without ``bootstrap`` only the calibration intercept and slope carry intervals (the
    GLM's). With ``costs``, the expected cost per row of the threshold is reported too.
    """
    from heartflow.evaluation.intervals import _percentiles, _resamples, _subset

    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), 0.0, 1.0)
    point = _figures(y[None], p[None], threshold, tuple(decision_thresholds), costs)
    values = {name: float(v[0]) for name, v in point.items()}
    intervals: dict[str, tuple[float, float]] = {}
    if bootstrap and len(y):
        rows = _subset(len(y), seed)
        ys, ps = y[rows], p[rows]
        rng = np.random.default_rng(seed)
        draws: list[np.ndarray] = []
        total = _resamples(len(rows))
        block = max(1, min(total, 2_000_000 // max(1, len(rows))))
        for start in range(0, total, block):
            idx = rng.integers(0, len(rows), (min(block, total - start), len(rows)))
            figures = _figures(ys[idx], ps[idx], threshold, tuple(decision_thresholds), costs)
            draws.append(np.column_stack([figures[name] for name in values]))
        low, high = _percentiles(np.vstack(draws))
        intervals = {n: (float(low[k]), float(high[k])) for k, n in enumerate(values)}
    glm = calibration_intercept_slope(y, p)
    for name in ("intercept", "slope"):
        values[f"calibration_{name}"] = glm[name]
        intervals[f"calibration_{name}"] = (glm[f"{name}_low"], glm[f"{name}_high"])
    for t in decision_thresholds:
        values[f"treat_all@{t:g}"] = treat_all_benefit(values["prevalence"], t)
    notes = []
    if len(np.unique(y)) < 2:
        notes.append("only one outcome class among these rows: ROC AUC and calibration are "
                     "undefined")
    return ClinicalReport(values, intervals, len(y), rows_with_missing, threshold,
                          tuple(decision_thresholds), notes)
