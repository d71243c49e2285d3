"""Nothing heartflow says is untrue: figures that cannot be computed on the rows are undefined
(NaN, with the reason in the report), never a tie's 0.5, an absurd finite number, or an
interval that looks confident; each case against an independent reference (scikit-learn,
statsmodels, counts made here)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from heartflow.evaluation import intervals as I
from heartflow.evaluation import metrics as M
from heartflow.evaluation.clinical import calibration_intercept_slope, clinical_report
from heartflow.evaluation.intervals import RESAMPLES, bootstrap_intervals


def _risks(n: int, seed: int = 0, scale: float = 1.0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return y, 1 / (1 + np.exp(-(scale * z + shift)))


def _notes(report) -> str:
    return " ".join(report.notes)


# Item 1: NaN or infinite outputs, saturated risks, separation.

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_make_every_metric_undefined(bad: float) -> None:
    from sklearn.metrics import mean_squared_error, roc_auc_score

    y, p = _risks(80, seed=1)
    p[[3, 40]] = bad
    with pytest.raises(ValueError):  # the reference refuses such rows outright
        roc_auc_score(y, p)
    values = M.binary_metrics(y, p, 0.5, ["roc_auc", "pr_auc"])
    assert all(math.isnan(v) for v in values.values()), values
    assert math.isnan(M.roc_auc(y > 0.5, p)) and math.isnan(M.average_precision(y > 0.5, p))
    assert all(math.isnan(v) for v in M.compute("binary", y, p, 0.5, ["accuracy"]).values())
    per_epoch = M.epoch_metrics("binary", 0.5)(y.reshape(-1, 1), p.reshape(-1, 1))
    assert all(math.isnan(v) for v in per_epoch.values()), per_epoch
    proba = np.column_stack([1 - np.nan_to_num(p, nan=0.5), np.nan_to_num(p, nan=0.5)])
    proba[5, 0] = bad
    multi = M.multiclass_metrics(y.astype(int), proba)
    assert all(math.isnan(v) for v in multi.values()), multi
    with pytest.raises(ValueError):
        mean_squared_error(y, p)
    regression = M.regression_metrics(y, p)
    assert all(math.isnan(v) for v in regression.values()), regression


def test_the_clinical_report_agrees_that_non_finite_risks_are_undefined() -> None:
    y, p = _risks(60, seed=2)
    p[7] = np.nan
    report = clinical_report(y, p, 0.5, (0.2,))
    depends_on_risk = [k for k in report.values if not k.startswith(("prevalence", "treat_all"))]
    assert all(math.isnan(report.values[k]) for k in depends_on_risk), report.values
    assert all(math.isnan(low) and math.isnan(high) for low, high in report.intervals.values())
    assert report.values["prevalence"] == pytest.approx(y.mean())  # needs no risk
    assert "non-finite" in _notes(report) and "roc_auc" in report.undefined
    assert report.values["roc_auc"] != report.values["roc_auc"]  # never 0.5


def test_the_streamed_accumulator_counts_non_finite_outputs() -> None:
    y, p = _risks(300, seed=3)
    p[[10, 11, 250]] = [np.nan, np.inf, -np.inf]
    totals = M.BinaryAccumulator(0.5)
    for start in range(0, 300, 70):
        totals.update(y[start:start + 70], p[start:start + 70])  # no bincount ValueError
    assert totals.n == 300 and totals.non_finite == int((~np.isfinite(p)).sum()) == 3
    assert all(math.isnan(v) for v in totals.result().values()), totals.result()
    clean = M.BinaryAccumulator(0.5)
    clean.update(y[:200], np.linspace(0.01, 0.99, 200))
    assert clean.non_finite == 0 and not math.isnan(clean.result()["accuracy"])


def test_saturated_risks_give_an_undefined_calibration_with_a_reason() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(0, 3, 200)
    y = (rng.random(200) < 1 / (1 + np.exp(-z))).astype(float)
    p = (1 / (1 + np.exp(-40 * z))).astype(np.float32).astype(np.float64)  # diverged network
    saturated = int(((p == 0) | (p == 1)).sum())
    assert saturated > 0
    with np.errstate(divide="ignore"):
        assert not np.isfinite(np.log(p / (1 - p))).all()  # the logit the GLM would need
    got = calibration_intercept_slope(y, p)
    assert all(math.isnan(v) for v in got.values()), got
    report = clinical_report(y, p, 0.5, (0.2,), bootstrap=False)
    for name in ("calibration_intercept", "calibration_slope"):
        assert math.isnan(report.values[name])
        assert all(math.isnan(b) for b in report.intervals[name])
        assert "0 or 1" in report.undefined[name]
    assert f"{saturated} risk" in _notes(report)


def test_separation_leaves_the_slope_undefined_and_the_intercept_exact() -> None:
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    rng = np.random.default_rng(5)
    z = rng.normal(0, 1.5, 120)
    y = (z > 0.3).astype(float)  # the risks order the outcomes perfectly
    p = 1 / (1 + np.exp(-z))
    with pytest.warns(PerfectSeparationWarning):  # no finite maximum-likelihood slope
        sm.GLM(y, sm.add_constant(z), family=sm.families.Binomial()).fit()
    report = clinical_report(y, p, 0.5, (0.2,), bootstrap=False)
    assert math.isnan(report.values["calibration_slope"])
    assert all(math.isnan(b) for b in report.intervals["calibration_slope"])
    assert "separat" in report.undefined["calibration_slope"]
    offset = sm.Logit(y, np.ones(len(y)), offset=z).fit(disp=0)
    assert report.values["calibration_intercept"] == pytest.approx(offset.params[0], rel=1e-5)


# Item 7: degenerate statistics are not shown as confident.

def test_constant_risks_have_no_calibration_slope() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(6)
    y = (rng.random(200) < 0.4).astype(float)
    p = np.full(200, 0.3)
    report = clinical_report(y, p, 0.5, (0.2,), bootstrap=False)
    assert math.isnan(report.values["calibration_slope"])
    assert all(math.isnan(b) for b in report.intervals["calibration_slope"])
    assert "identical" in report.undefined["calibration_slope"]
    assert "calibration_slope" in _notes(report)
    # Calibration-in-the-large stays identifiable: the offset-only fit.
    offset = sm.Logit(y, np.ones(200), offset=np.full(200, np.log(0.3 / 0.7))).fit(disp=0)
    assert report.values["calibration_intercept"] == pytest.approx(offset.params[0], rel=1e-6)


def test_too_small_subgroups_show_counts_only() -> None:
    from sklearn.metrics import roc_auc_score

    from heartflow.evaluation.subgroups import SHOWN, subgroup_reports, subgroup_table
    from heartflow.spec.schema import SubgroupSpec

    y, p = _risks(200, seed=7)
    site = np.array(["a"] * 200, dtype=object)
    small = np.flatnonzero(y == 1)[:10].tolist() + np.flatnonzero(y == 0)[:2].tolist()
    site[small] = "b"  # 12 rows, 2 without the outcome
    features = pd.DataFrame({"site": site})
    found = {g.level: g for g in subgroup_reports(features, y, p, [SubgroupSpec(column="site")],
                                                  0.5, (0.2,), min_rows=10)}
    b = found["b"]
    counts = pd.Series(y).groupby(site).agg(["size", "sum"])
    assert b.too_small and (b.rows, b.cases) == (counts.loc["b", "size"], counts.loc["b", "sum"])
    row = subgroup_table([b]).iloc[0]
    for name in SHOWN:
        if name == "prevalence":
            assert row[name] == pytest.approx(b.cases / b.rows)  # the counts themselves
            continue
        assert math.isnan(row[name]), (name, row[name])
        assert math.isnan(row[f"{name}_ci_low"]) and math.isnan(row[f"{name}_ci_high"])
    assert "too small" in b.report.undefined["calibration_slope"]
    a = found["a"]
    assert not a.too_small
    assert a.report.values["roc_auc"] == pytest.approx(roc_auc_score(y[site == "a"],
                                                                     p[site == "a"]))


def _ece_reference(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE with scikit-learn's quantile bins (calibration_curve: inner percentile edges,
    searchsorted), summed by pandas."""
    edges = np.percentile(p, np.linspace(0, 100, bins + 1))
    ids = np.searchsorted(edges[1:-1], p)
    gaps = pd.DataFrame({"bin": ids, "gap": y - p}).groupby("bin")["gap"].sum()
    return float(gaps.abs().sum() / len(y))


def _cross_fitted(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Logistic recalibration fitted on four fifths, applied to the fifth left out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    z, out = np.log(p / (1 - p)).reshape(-1, 1), np.empty(len(y))
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=0).split(z, y):
        model = LogisticRegression(C=np.inf).fit(z[fit], y[fit])
        out[held] = model.predict_proba(z[held])[:, 1]
    return out


@pytest.mark.parametrize("seed, n", [(0, 100), (2, 200), (3, 400)])
def test_ece_point_lies_within_its_interval_after_cross_fitting(seed: int, n: int) -> None:
    from sklearn.calibration import calibration_curve

    y, raw = _risks(n, seed, scale=1.8, shift=-1.0)
    p = _cross_fitted(y, raw)
    report = clinical_report(y, p, 0.5, (0.2,), seed=seed)
    low, high = report.intervals["ece"]
    assert low <= report.values["ece"] <= high, (report.values["ece"], low, high)
    # Against the ECE of every resample (the same seeded draws), by the reference above,
    # whose bins are checked once against scikit-learn's.
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    ids = np.searchsorted(np.percentile(p, np.linspace(0, 100, 11))[1:-1], p)
    sizes = np.bincount(ids)[np.bincount(ids) > 0]
    plain = _ece_reference(y, p)
    assert plain == pytest.approx(float(np.sum(sizes * np.abs(observed - predicted)) / n))
    draws = np.random.default_rng(seed).integers(0, n, (RESAMPLES, n))
    boot = np.array([_ece_reference(y[i], p[i]) for i in draws])
    assert report.values["ece"] == pytest.approx(max(0.0, 2 * plain - np.median(boot)))
    q_low, q_high = np.percentile(boot, [2.5, 97.5])
    assert (low, high) == pytest.approx((max(0.0, 2 * plain - q_high),
                                         max(0.0, 2 * plain - q_low)))


def test_intervals_resting_on_too_few_defined_resamples_are_withheld_and_counted() -> None:
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(8)
    y = np.zeros(30)
    y[[4, 17]] = 1  # a part with 2 cases
    p = rng.uniform(0.05, 0.6, 30)
    report = clinical_report(y, p, 0.5, (0.2,), seed=3)
    draws = np.random.default_rng(3).integers(0, 30, (RESAMPLES, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # one class: NaN
        undefined = int(np.isnan([roc_auc_score(y[i], p[i]) for i in draws]).sum())
    assert undefined / RESAMPLES > I.MAX_UNDEFINED_SHARE
    assert report.resamples == RESAMPLES
    assert report.undefined_resamples["roc_auc"] == undefined
    assert all(math.isnan(b) for b in report.intervals["roc_auc"])  # withheld
    assert not math.isnan(report.values["roc_auc"])  # the point itself is defined
    assert f"roc_auc {undefined} of {RESAMPLES}" in _notes(report)
    assert "roc_auc" in report.undefined
    assert not all(math.isnan(b) for b in report.intervals["brier"])  # always defined
    assert "brier" not in report.undefined_resamples
    intervals = bootstrap_intervals("binary", y, p, 0.5, ["roc_auc", "brier"], seed=3)
    assert all(math.isnan(b) for b in intervals["roc_auc"])
    assert not any(math.isnan(b) for b in intervals["brier"])
