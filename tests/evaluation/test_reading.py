"""Reports that read: each plain sentence's claim and number follow from figures computed
here independently (scikit-learn's ROC AUC, NumPy means, net benefit by its definition)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from heartflow.evaluation.clinical import clinical_report
from heartflow.evaluation.reading import read_report
from heartflow.evaluation.subgroups import subgroup_reports
from heartflow.spec.schema import SubgroupSpec

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)


def _site(n: int, seed: int, shift: float, spread: float = 1.0, noise: float = 0.0):
    """Outcomes from logit z + 1.3 (prevalence near 0.75, as at VA); the model's risks are
    ``spread * (z + noise) + shift``: shifted down, they under-predict; with noise, they
    rank patients worse."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(z + 1.3)))).astype(float)
    return y, 1 / (1 + np.exp(-(spread * (z + rng.normal(0, noise, n)) + shift)))


def _net_benefit(y: np.ndarray, p: np.ndarray, t: float) -> float:
    treat = p >= t
    return np.sum(treat & (y == 1)) / len(y) - np.sum(treat & (y == 0)) / len(y) * t / (1 - t)


def _sentence(sentences: list[str], start: str) -> str:
    return next(s for s in sentences if s.startswith(start))


def test_an_under_predicting_model_worse_than_treating_everyone_is_said_so() -> None:
    """Mean risk far below the prevalence, net benefit below treat-all at every threshold:
    the Cleveland model at VA, in miniature."""
    y, p = _site(300, 0, shift=-0.5, spread=0.75, noise=1.5)
    sentences = read_report(clinical_report(y, p, 0.5, THRESHOLDS))
    # the premise, by hand
    prevalence, mean_risk = y.mean(), p.mean()
    assert mean_risk < prevalence - 0.2
    treat_all = {t: prevalence - (1 - prevalence) * t / (1 - t) for t in THRESHOLDS}
    assert all(_net_benefit(y, p, t) < treat_all[t] for t in THRESHOLDS)

    auc = roc_auc_score(y, p)
    said = _sentence(sentences, "Discrimination")
    assert f"roc_auc {auc:.3f} [" in said and f"{len(y)} rows" in said
    said = _sentence(sentences, "The model under-predicts risk")
    assert f"mean predicted risk {mean_risk:.2f}" in said
    assert f"observed prevalence of {prevalence:.2f}" in said
    assert "recalibrate before use" in said and "calibration_intercept +" in said
    said = _sentence(sentences, "The model is worse than treating everyone at these thresholds")
    for t in THRESHOLDS:
        assert f"at {t:g}: {_net_benefit(y, p, t):.3f} vs treat all {treat_all[t]:.3f}" in said
    assert any("ECE (expected calibration error) is the average gap" in s for s in sentences)


def test_a_calibrated_useful_model_is_said_so_and_small_subgroups_are_named() -> None:
    y, p = _site(2000, 1, shift=1.3)  # the outcome's own risks: calibrated
    features = pd.DataFrame({"clinic": ["a"] * 1980 + ["b"] * 20})
    groups = subgroup_reports(features, y, p, [SubgroupSpec(column="clinic")], 0.5,
                              (0.1,), 30)
    sentences = read_report(clinical_report(y, p, 0.5, (0.1, 0.2)), groups)
    said = _sentence(sentences, "Average risk matches the outcome rate")
    assert f"mean predicted risk {p.mean():.2f}" in said and "which includes 0" in said
    assert any(s.startswith("The spread of the risks fits") for s in sentences)
    prevalence = y.mean()
    useful = [t for t in (0.1, 0.2)
              if _net_benefit(y, p, t) > max(prevalence - (1 - prevalence) * t / (1 - t), 0)]
    if len(useful) == 2:
        assert any(s.startswith("The model does better than treating everyone or no one")
                   for s in sentences)
    small = _sentence(sentences, "Too small to judge")
    cases = int(y[1980:].sum())
    assert f"clinic=b (20 rows, {cases} with the outcome)" in small
    assert "clinic=a" not in small


def test_one_outcome_class_reads_undefined_with_its_reason() -> None:
    report = clinical_report(np.ones(40), np.linspace(0.1, 0.9, 40))
    said = _sentence(read_report(report), "Discrimination cannot be judged")
    assert report.undefined["roc_auc"] in said


def test_the_html_report_opens_with_the_sentences(tmp_path) -> None:
    from heartflow.evaluation.report_html import render_report

    y, p = _site(300, 0, shift=-0.5, spread=0.75, noise=1.5)
    report = clinical_report(y, p, 0.5, THRESHOLDS)
    page = render_report("a model at a site", ["fact"], report, {})
    opening = page.split("<h2>In short</h2>", 1)[1].split("</ul>", 1)[0]
    assert page.index("In short") < page.index("<h2>Figures</h2>")
    assert "under-predicts risk" in opening and "worse than treating everyone" in opening
    assert f"roc_auc {roc_auc_score(y, p):.3f}" in opening


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_the_card_says_what_was_not_computed_and_why(activation: str) -> None:
    from heartflow.evaluation.card import rigour_lines

    spec = {"model": {"output": {"activation": activation}}, "evaluate": {}}
    lines = rigour_lines({}, spec)
    assert all("not computed (" in line for line in lines)
    if activation == "sigmoid":
        assert "evaluate.validation" in lines[1]
    else:
        assert "binary outcomes" in lines[0]
