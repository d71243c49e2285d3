"""Updating by evidence (closed testing procedure, Vergouwe et al. 2017) on generated rows: every
log-likelihood, LR statistic and p-value against statsmodels' GLM and scipy's chi-square,
the choice against the procedure worked by hand, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import chi2

from heartflow.errors import DataError
from heartflow.evaluation.updating import choose_update, cross_fitted
from heartflow.model import recalibration


def _rows(kind: str, n: int = 600, seed: int = 3):
    """Activations h of 4 units, a model's risks p = sigmoid(w.h + c), and outcomes drawn
    from a truth that differs from the model as ``kind`` says."""
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.normal(0.3, 1.0, (n, 4)), 0.0)  # ReLU-like activations
    w, c = np.array([1.0, -0.8, 0.6, 0.4]), -0.5
    model = h @ w + c
    truth = {"none": model, "intercept": model + 1.2, "logistic": 0.4 * model - 0.3,
             "revision": h @ np.array([1.5, -0.2, -0.6, 0.4]) - 0.5}[kind]
    y = (rng.random(n) < 1 / (1 + np.exp(-truth))).astype(float)
    return y, 1 / (1 + np.exp(-model)), h


def _by_hand(y, p, h, alpha=0.05):
    """Log-likelihoods from statsmodels' GLM; the closed test: revision against none, then
    against intercept, then against logistic; the first not significant is chosen."""
    z = np.log(p / (1 - p))
    ones = np.ones((len(y), 1))
    binomial = sm.families.Binomial()
    ll = {"none": float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))),
          "intercept": sm.GLM(y, ones, family=binomial, offset=z).fit().llf,
          "logistic": sm.GLM(y, np.column_stack([ones, z]), family=binomial).fit().llf,
          "revision": sm.GLM(y, np.column_stack([ones, h]), family=binomial).fit().llf}
    k = {"none": 0, "intercept": 1, "logistic": 2, "revision": h.shape[1] + 1}
    tests = []
    for smaller in ("none", "intercept", "logistic"):
        lr = 2 * (ll["revision"] - ll[smaller])
        df = k["revision"] - k[smaller]
        tests.append(("revision", smaller, lr, df, chi2.sf(lr, df)))
        if tests[-1][-1] >= alpha:
            return smaller, tests, ll
    return "revision", tests, ll


@pytest.mark.parametrize("kind", ["none", "intercept", "logistic", "revision"])
def test_the_closed_test_matches_statsmodels_and_chooses_the_needed_update(kind: str) -> None:
    y, p, h = _rows(kind)
    expected, tests, ll = _by_hand(y, p, h)
    got = choose_update(y, p, h)
    assert got.method == expected == kind  # each truth is found by the procedure
    for method, value in ll.items():
        assert got.updates[method].log_likelihood == pytest.approx(value, rel=1e-7)
    assert [(t.update, t.against, t.df) for t in got.tests] == [t[:2] + t[3:4] for t in tests]
    for t, (_, _, lr, _, pv) in zip(got.tests, tests, strict=True):
        assert t.statistic == pytest.approx(lr, rel=1e-6, abs=1e-8)
        assert t.p_value == pytest.approx(pv, rel=1e-5, abs=1e-300)
    assert got.as_dict()["tests"][0]["update"] == "revision"


def test_the_chosen_updates_coefficients_are_the_glms() -> None:
    y, p, h = _rows("logistic")
    z = np.log(p / (1 - p))
    fit = sm.GLM(y, sm.add_constant(z), family=sm.families.Binomial()).fit()
    got = choose_update(y, p, h)
    assert got.rule()["intercept"] == pytest.approx(fit.params[0], rel=1e-6)
    assert got.rule()["slope"] == pytest.approx(fit.params[1], rel=1e-6)
    assert got.chosen.fitted == pytest.approx(fit.fittedvalues, abs=1e-9)
    revision = sm.GLM(y, sm.add_constant(h), family=sm.families.Binomial()).fit()
    assert got.updates["revision"].bias == pytest.approx(revision.params[0], rel=1e-6)
    assert got.updates["revision"].kernel == pytest.approx(revision.params[1:], rel=1e-6)


def test_a_forced_method_is_reported_with_its_test_against_none() -> None:
    y, p, h = _rows("none")
    got = choose_update(y, p, h, method="logistic")
    z = np.log(p / (1 - p))
    binomial = sm.families.Binomial()
    lr = 2 * (sm.GLM(y, sm.add_constant(z), family=binomial).fit().llf
              - np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
    (test,) = got.tests
    assert (got.method, test.update, test.against, test.df) == ("logistic", "logistic", "none", 2)
    assert test.statistic == pytest.approx(lr, rel=1e-6)
    assert test.p_value == pytest.approx(chi2.sf(lr, 2), rel=1e-5)
    assert not test.significant  # forced all the same


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")  # the reference's
def test_dead_and_dependent_units_are_dropped_from_the_revision() -> None:
    y, p, h = _rows("revision")
    wide = np.column_stack([h, np.zeros(len(y)), h[:, 0] + h[:, 1]])  # dead, dependent
    got = choose_update(y, p, wide).updates["revision"]
    assert got.parameters == np.linalg.matrix_rank(sm.add_constant(wide)) == 5
    reference = sm.GLM(y, sm.add_constant(wide), family=sm.families.Binomial()).fit()
    assert got.log_likelihood == pytest.approx(reference.llf, rel=1e-7)  # same span
    assert got.fitted == pytest.approx(reference.fittedvalues, abs=1e-7)
    dropped = [i for i, k in enumerate(got.kernel) if k == 0.0]
    assert dropped[-1] == 4 and len(dropped) == 2 and dropped[0] in (0, 1, 5)


def test_too_few_rows_refuse_an_update_with_the_reason() -> None:
    # 123 rows, 8 without the outcome (as at Switzerland): 10 per parameter are needed.
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(115), np.zeros(8)]
    p = rng.uniform(0.3, 0.9, 123)
    h = rng.normal(size=(123, 3))
    got = choose_update(y, p, h)
    assert got.method == "none" and not got.tests
    assert "8 rows without the outcome; 1 parameter(s) need at least 10" in got.reason
    with pytest.raises(DataError, match="intercept update refused: 8 rows without"):
        choose_update(y, p, h, method="intercept")
    # Enough rows for two parameters but not for a revision with 4: the procedure runs with
    # logistic recalibration as the most extensive update, and says revision was refused.
    y = np.r_[np.ones(100), np.zeros(30)]
    got = choose_update(y, rng.uniform(0.3, 0.9, 130), rng.normal(size=(130, 3)))
    assert got.updates["revision"].refused.startswith("30 rows without the outcome; 4 ")
    assert [t.update for t in got.tests] == ["logistic"] * len(got.tests)
    assert "revision refused: 30 rows without the outcome" in got.reason


def test_separation_refuses_the_revision_not_the_recalibration() -> None:
    y, p, h = _rows("intercept", n=300)
    separating = np.column_stack([h, np.where(y > 0, 1.0, -1.0)])  # a unit that knows y
    got = choose_update(y, p, separating)
    assert "separation" in got.updates["revision"].refused
    # The procedure runs over none, intercept and logistic, logistic in revision's place.
    z = np.log(p / (1 - p))
    binomial = sm.families.Binomial()
    ll = {"none": np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)),
          "intercept": sm.GLM(y, np.ones(len(y)), family=binomial, offset=z).fit().llf,
          "logistic": sm.GLM(y, sm.add_constant(z), family=binomial).fit().llf}
    expected = next((m for m, k in (("none", 2), ("intercept", 1))
                     if chi2.sf(2 * (ll["logistic"] - ll[m]), k) >= 0.05), "logistic")
    assert got.method == expected
    assert [(t.update, t.against) for t in got.tests] == [
        ("logistic", "none"), ("logistic", "intercept")][:len(got.tests)]
    assert got.tests[0].statistic == pytest.approx(2 * (ll["logistic"] - ll["none"]), rel=1e-6)


def test_cross_fitted_updates_are_refitted_without_each_fold() -> None:
    y, p, h = _rows("logistic")
    for method in ("intercept", "logistic"):  # the recalibration module's own cross-fit
        assert cross_fitted(y, p, h, method) == pytest.approx(
            recalibration.cross_fitted(y, p, method), abs=1e-9)
    honest = cross_fitted(y, p, h, "revision")
    apparent = choose_update(y, p, h, method="revision").chosen.fitted
    assert np.isfinite(honest).all() and 0 < np.abs(honest - apparent).max() < 0.2
