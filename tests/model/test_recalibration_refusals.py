"""A recalibration rule is refused, for the reasons the calibration figures give, when the
rows cannot fit it (risks of exactly 0 or 1, risks that are not numbers, one outcome class,
separation), instead of a rule fitted on invented logits; isotonic ties risks. Each case
against an independent reference (NumPy's logit, statsmodels, scikit-learn)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from heartflow.errors import DataError
from heartflow.evaluation.clinical import calibration_fit
from heartflow.model.recalibration import apply_recalibration, fit_recalibration


def _risks(n: int, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return y, 1 / (1 + np.exp(-scale * z))


@pytest.mark.parametrize("method", ["intercept", "logistic"])
def test_risks_of_exactly_0_or_1_are_refused_with_the_calibration_reason(method: str) -> None:
    y, p = _risks(200, seed=1)
    p[[5, 60]] = 0.0
    p[[7]] = 1.0
    with np.errstate(divide="ignore"):
        logit = np.log(p / (1 - p))  # the reference: their logit is infinite
    assert int((~np.isfinite(logit)).sum()) == 3
    _figures, why = calibration_fit(y, p)  # the calibration figures refuse them too
    assert why["slope"].startswith("3 risk(s) of exactly 0 or 1")
    with pytest.raises(DataError) as refused:
        fit_recalibration(y, p, method)
    assert why["slope"] in str(refused.value) and "200 rows" in str(refused.value)


def test_isotonic_needs_no_logit_and_accepts_risks_of_0_and_1() -> None:
    from sklearn.isotonic import IsotonicRegression

    y, p = _risks(200, seed=1)
    p[[5, 60]], p[7] = 0.0, 1.0
    rule = fit_recalibration(y, p, "isotonic")
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    assert apply_recalibration(p, rule) == pytest.approx(reference.predict(p))


@pytest.mark.parametrize("method", ["intercept", "logistic", "isotonic"])
def test_risks_that_are_not_numbers_and_one_class_are_refused(method: str) -> None:
    from sklearn.isotonic import IsotonicRegression

    y, p = _risks(100, seed=2)
    bad = p.copy()
    bad[[3, 4]] = [np.nan, np.inf]
    with pytest.raises(ValueError):  # scikit-learn refuses such risks outright
        IsotonicRegression().fit(bad, y)
    with pytest.raises(DataError, match=r"2 non-finite risk\(s\)"):
        fit_recalibration(y, bad, method)
    assert calibration_fit(y, bad)[1]["slope"] == "2 non-finite risk(s) (NaN or infinite) " \
                                                  "among these rows"
    with pytest.raises(DataError, match="needs rows with and without the outcome"):
        fit_recalibration(np.ones(100), p, method)


def test_separation_refuses_a_logistic_rule() -> None:
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.5, 120)
    y = (z > 0.2).astype(float)  # the risks order the outcomes perfectly
    p = 1 / (1 + np.exp(-z))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        with pytest.raises(PerfectSeparationWarning):  # no finite maximum-likelihood slope
            sm.GLM(y, sm.add_constant(z), family=sm.families.Binomial()).fit()
    with pytest.raises(DataError, match="separation"):
        fit_recalibration(y, p, "logistic")
    assert "separation" in calibration_fit(y, p)[1]["slope"]


def test_isotonic_keeps_the_order_but_ties_risks() -> None:
    from sklearn.metrics import roc_auc_score

    y, p = _risks(400, seed=4, scale=1.7)
    after = apply_recalibration(p, fit_recalibration(y, p, "isotonic"))
    order = np.argsort(p)
    assert (np.diff(after[order]) >= 0).all()  # never reverses two patients
    assert len(np.unique(after)) < len(np.unique(p)) // 4  # but ties many of them
    # On the rows it was fitted on the AUC cannot fall (the ROC curve's convex hull).
    assert roc_auc_score(y, after) >= roc_auc_score(y, p) - 1e-12
    assert roc_auc_score(y, after) != pytest.approx(roc_auc_score(y, p), abs=1e-9)
