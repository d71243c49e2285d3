"""Subgroups, cost-derived thresholds, the vectorised bootstrap and recalibration, each
against an independent reference (scikit-learn, statsmodels, a brute-force search)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from heartflow.evaluation.clinical import clinical_report
from heartflow.evaluation.intervals import RESAMPLES
from heartflow.spec.schema import SubgroupSpec, ThresholdCosts


def _risks(n: int, seed: int = 0, scale: float = 1.0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return y, 1 / (1 + np.exp(-(scale * z + shift)))


def test_bootstrap_intervals_equal_scikit_learn_on_the_same_resamples() -> None:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y, p = _risks(61, seed=3, scale=0.7)
    report = clinical_report(y, p, 0.5, (0.2,), seed=11)
    assert report.values["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert report.values["brier"] == pytest.approx(brier_score_loss(y, p))
    rng = np.random.default_rng(11)  # the documented resampling: seeded, rows with replacement
    draws = rng.integers(0, len(y), (RESAMPLES, len(y)))
    aucs = [roc_auc_score(y[i], p[i]) for i in draws if 0 < y[i].sum() < len(i)]
    briers = [brier_score_loss(y[i], p[i]) for i in draws]
    assert report.intervals["roc_auc"] == pytest.approx(tuple(np.percentile(aucs, [2.5, 97.5])))
    assert report.intervals["brier"] == pytest.approx(tuple(np.percentile(briers,
                                                                          [2.5, 97.5])))


def test_least_cost_threshold_matches_a_brute_force_search() -> None:
    from sklearn.metrics import confusion_matrix

    from heartflow.evaluation.thresholds import expected_cost, least_cost_threshold

    costs = ThresholdCosts(false_negative_cost=3)
    assert costs.ratio_threshold == pytest.approx(0.25)
    y, p = _risks(150, seed=4, scale=0.5, shift=-1.0)  # miscalibrated: ratio is not optimal

    def cost(t: float) -> float:
        _tn, fp, fn, _tp = confusion_matrix(y, p >= t, labels=[0, 1]).ravel()
        return (3 * fn + fp) / len(y)

    best = min(cost(t) for t in [*np.unique(p), 1.01])  # every split of the rows
    chosen = least_cost_threshold(y, p, costs)
    assert cost(chosen) == pytest.approx(best)
    assert expected_cost(y, p, chosen, costs) == pytest.approx(best)
    assert cost(chosen) <= cost(costs.ratio_threshold)
    report = clinical_report(y, p, chosen, (0.1,), costs=costs)
    assert report.values["expected_cost"] == pytest.approx(best)
    low, high = report.intervals["expected_cost"]
    assert low <= best <= high


def test_subgroup_figures_are_those_of_the_subset() -> None:
    from sklearn.metrics import roc_auc_score

    from heartflow.evaluation.subgroups import subgroup_reports

    y, p = _risks(400, seed=5)
    rng = np.random.default_rng(5)
    age = rng.uniform(30, 80, 400)
    age[:7] = np.nan
    age[7] = 50.0  # an edge belongs to the band above it
    sex = np.where(rng.random(400) < 0.1, "0", "1")
    features = pd.DataFrame({"age": age, "sex": sex})
    groups = [SubgroupSpec(column="sex"), SubgroupSpec(column="age", bins=[0, 50, 60, 120])]
    found = {g.name: g for g in subgroup_reports(features, y, p, groups, 0.5, (0.2,),
                                                 min_rows=60)}
    assert list(found) == ["sex=0", "sex=1", "age=[0, 50)", "age=[50, 60)", "age=[60, 120)",
                           "age=missing"]
    for name, rows in [("sex=0", sex == "0"), ("sex=1", sex == "1"),
                       ("age=[50, 60)", (age >= 50) & (age < 60))]:
        g = found[name]
        assert g.rows == rows.sum() and g.cases == y[rows].sum()
        if g.too_small:  # counts only: no AUC resting on a handful of patients
            assert np.isnan(g.report.values["roc_auc"])
        else:
            assert g.report.values["roc_auc"] == pytest.approx(roc_auc_score(y[rows], p[rows]))
    assert found["age=missing"].rows == 7 and found["age=missing"].too_small
    assert found["sex=0"].too_small == (found["sex=0"].rows < 60)
    assert not found["sex=1"].too_small


def test_recalibration_rules_against_scikit_learn_and_statsmodels() -> None:
    import statsmodels.api as sm
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from heartflow.model.recalibration import apply_recalibration, fit_recalibration

    y, p = _risks(300, seed=6, scale=1.6, shift=-1.2)  # too extreme and too low
    logit = np.log(p / (1 - p))
    rule = fit_recalibration(y, p, "intercept")
    shifted = apply_recalibration(p, rule)
    assert shifted.mean() == pytest.approx(y.mean(), abs=1e-6)  # mean risk = prevalence
    assert roc_auc_score(y, shifted) == pytest.approx(roc_auc_score(y, p))
    offset = sm.Logit(y, np.ones(len(y)), offset=logit).fit(disp=0)
    assert rule["intercept"] == pytest.approx(offset.params[0], rel=1e-5)
    rule = fit_recalibration(y, p, "logistic")
    reference = LogisticRegression(penalty=None, tol=1e-10, max_iter=1000).fit(
        logit.reshape(-1, 1), y)
    assert rule["slope"] == pytest.approx(reference.coef_[0][0], rel=1e-4)
    assert apply_recalibration(p, rule) == pytest.approx(
        reference.predict_proba(logit.reshape(-1, 1))[:, 1], abs=1e-6)
    rule = fit_recalibration(y, p, "isotonic")
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    fresh = np.random.default_rng(7).uniform(0, 1, 50)
    assert apply_recalibration(fresh, rule) == pytest.approx(iso.predict(fresh))
    with pytest.raises(ValueError, match="unknown recalibration method"):
        fit_recalibration(y, p, "platt")
