"""Undefined is shown as undefined, with its reason, everywhere a run reports: the evaluate
step's reasons (a diverged network, one class, a withheld interval), the run summary, the
run's HTML report and the model card. Each reason is checked against an independent
reference (scikit-learn refusing the rows, statsmodels, counts made here)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from heartflow.evaluation.heldout import evaluate, evaluate_streamed
from heartflow.spec import load_spec
from tests.conftest import heart_spec


@pytest.fixture
def spec(tmp_path: Path):
    return load_spec(str(heart_spec(tmp_path / "spec.yaml"))).spec


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.5, (n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0]))).astype(float)
    return x, y


def _network(bad_rows: np.ndarray | None = None):
    """A stand-in network: sigmoid of the first input; NaN and +inf on ``bad_rows``."""

    def model(x, training=False):
        p = 1 / (1 + np.exp(-np.asarray(x)[:, :1]))
        if bad_rows is not None:
            p[bad_rows[::2]] = np.nan
            p[bad_rows[1::2]] = np.inf
        return p

    return model


def test_a_diverged_network_says_why_every_test_figure_is_undefined(spec) -> None:
    from sklearn.metrics import roc_auc_score

    x, y = _rows(80)
    bad = np.array([3, 17, 40])
    output = _network(bad)(x)
    with pytest.raises(ValueError):  # the reference refuses such outputs outright
        roc_auc_score(y, output.ravel())
    count = int((~np.isfinite(output)).sum())  # counted here: 3 of 80
    ev = evaluate(spec, _network(bad), x, y, 0.5)
    why = f"{count} of the {len(y)} network outputs are not numbers (NaN or infinite)"
    assert spec.metrics and all(math.isnan(ev.metrics[m]) for m in spec.metrics)
    for name in spec.metrics:
        assert why in ev.undefined[name] and "diverged" in ev.undefined[name], name
        assert ev.as_undefined()[f"test_{name}"] == ev.undefined[name]
    for name in ("calibration_slope", "calibration_intercept", "ece", "mean_risk"):
        assert math.isnan(ev.calibration[name]) and why in ev.undefined[name], name
    assert ev.calibration["prevalence"] == pytest.approx(y.mean())  # needs no risk
    assert "prevalence" not in ev.undefined
    assert not ev.undefined_resamples  # one reason, not 1,000 undefined resamples
    assert any(why in note for note in ev.clinical.notes)


def test_streamed_outputs_that_are_not_numbers_make_every_figure_undefined(spec) -> None:
    import tensorflow as tf

    def network(x, training=False):  # NaN wherever the second input is above 2.5
        x = tf.convert_to_tensor(x, tf.float32)
        return tf.where(x[:, 1:2] > 2.5, tf.constant(np.nan, tf.float32),
                        tf.sigmoid(x[:, :1]))

    x, y = _rows(600, seed=1)
    count = int((x[:, 1] > 2.5).sum())
    assert count > 0
    clean = np.flatnonzero(x[:, 1] <= 2.5)[:200]  # the sample itself holds no NaN
    batches = ((x[i:i + 128].astype(np.float32), y[i:i + 128]) for i in range(0, 600, 128))
    ev = evaluate_streamed(spec, network, batches, 0.5,
                           test_sample=(x[clean].astype(np.float32), y[clean]))
    why = f"{count} of the 600 network outputs are not numbers (NaN or infinite)"
    assert ev.test_rows == 600
    for name in spec.metrics:
        assert math.isnan(ev.metrics[name]) and why in ev.undefined[name], name
        assert all(math.isnan(b) for b in ev.intervals[name])  # not the sample's interval
    assert math.isnan(ev.calibration["calibration_slope"])
    assert why in ev.undefined["calibration_slope"]
    assert ev.calibration["prevalence"] == pytest.approx(y[clean].mean())


def test_an_undefined_auc_says_the_rows_hold_one_class(spec) -> None:
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_auc_score

    x, y = _rows(40, seed=2)
    y[:] = 0.0
    with pytest.warns(UndefinedMetricWarning, match="Only one class"):
        assert math.isnan(roc_auc_score(y, _network()(x).ravel()))
    ev = evaluate(spec, _network(), x, y, 0.5)
    assert math.isnan(ev.metrics["roc_auc"])
    assert ev.undefined["roc_auc"] == ("needs both classes among the rows: all 40 rows are "
                                       "without the outcome")
    assert not math.isnan(ev.metrics["brier"]) and "brier" not in ev.undefined
    assert ev.as_undefined()["test_roc_auc"] == ev.undefined["roc_auc"]


def test_a_withheld_test_interval_says_on_how_many_resamples(spec) -> None:
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_auc_score

    from heartflow.evaluation.intervals import MAX_UNDEFINED_SHARE, RESAMPLES

    x, y = _rows(30, seed=3)
    y[:] = 0.0
    y[[4, 17]] = 1.0  # two cases: most resamples draw none
    p = _network()(x).ravel()
    rng = np.random.default_rng(spec.train.seed)  # the documented resampling, one by one
    draws = [rng.integers(0, 30, 30) for _ in range(RESAMPLES)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        undefined = int(np.isnan([roc_auc_score(y[i], p[i]) for i in draws]).sum())
    assert undefined > MAX_UNDEFINED_SHARE * RESAMPLES
    ev = evaluate(spec, _network(), x, y, 0.5)
    assert ev.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert all(math.isnan(b) for b in ev.intervals["roc_auc"])
    assert ev.undefined["roc_auc"] == (f"interval withheld: undefined on {undefined} of "
                                       f"{RESAMPLES} bootstrap resamples (more than 10%)")
    assert ev.resamples == RESAMPLES and ev.undefined_resamples["roc_auc"] == undefined
    assert ev.as_metrics()["test_roc_auc_undefined_resamples"] == undefined


# -- the run summary (RunOutcome.rows, also the notebook's table) ---------------------------


def _outcome(spec, tmp_path: Path):
    """A run outcome whose calibration is undefined (identical risks), with a subgroup too
    small to judge and a pooled CV report whose slope is undefined."""
    from heartflow.evaluation.cv import CVSummary
    from heartflow.pipelines.results import RunOutcome

    spec.evaluate.subgroups = ["site"]
    x, y = _rows(120, seed=4)
    site = np.where(np.arange(120) < 12, "small", "large")
    ev = evaluate(spec, lambda x, training=False: np.full((len(x), 1), 0.3), x, y, 0.5,
                  test_features=pd.DataFrame({"site": site}))
    summary = CVSummary(scores={"roc_auc": [0.7, 0.8, 0.75]}, pooled_y=y,
                        pooled_p=np.full(len(y), 0.3))
    data = SimpleNamespace(width=3, sizes=lambda: {"train": 200, "validation": 60, "test": 120},
                           sha256="0" * 64, streaming=False, rows=380)
    result = SimpleNamespace(epochs_run=5, best_epoch=5, seconds=1.0)
    recorder = SimpleNamespace(run_id="r", experiment_id="e")
    outcome = RunOutcome.of(spec, data, result, ev, summary, {}, 0.5, "given", recorder,
                            None, None, None)
    return outcome, y, site


def test_the_run_summary_says_undefined_and_why_never_nan(spec, tmp_path: Path) -> None:
    outcome, y, site = _outcome(spec, tmp_path)
    rows = dict(outcome.rows())
    # The reference: with identical risks, the design [1, logit(risk)] has rank 1, so no
    # slope on logit(risk) can be fitted.
    z = np.full(len(y), math.log(0.3 / 0.7))
    assert np.linalg.matrix_rank(np.column_stack([np.ones(len(z)), z])) == 1
    text = " ".join(rows.values())
    assert "nan" not in text.lower().replace("non-finite", ""), rows
    assert rows["test calibration"].startswith(
        "slope undefined (all risks are identical: the slope on logit(risk) is not "
        "identifiable)")
    assert "undefined (all risks are identical" in rows["CV pooled out-of-fold"]
    small = int((site == "small").sum()), int(y[site == "small"].sum())
    line = rows["subgroup site=small"]
    assert line.startswith("TOO SMALL TO JUDGE: counts only")
    assert f"n={small[0]}, {small[1]} cases" in line and "AUC" not in line  # counts only
    assert "AUC" in rows["subgroup site=large"]


# -- the run's HTML report and the model card ----------------------------------------------


def test_the_html_report_shows_counts_only_for_a_small_subgroup_and_says_why(spec) -> None:
    from heartflow.evaluation.report_html import figures_table, subgroups_table

    x, y = _rows(120, seed=4)
    site = np.where(np.arange(120) < 12, "small", "large")
    spec.evaluate.subgroups = ["site"]
    ev = evaluate(spec, lambda x, training=False: np.full((len(x), 1), 0.3), x, y, 0.5,
                  test_features=pd.DataFrame({"site": site}))
    page = subgroups_table(ev.subgroups)
    small = page[page.index("site=small"):]
    small = small[:small.index("</tr>")]
    assert "counts only" in small and "undefined" not in small and "nan" not in small
    assert f"<td>{int((site == 'small').sum())}</td>" in small
    figures = figures_table(ev.clinical)
    assert "undefined (all risks are identical" in figures


def _facts(**kw):
    from heartflow.evaluation.card import CardFacts

    spec = {"data": {"target": "target", "split": {"seed": 42, "stratify": True}},
            "register": {"promote": {"metric": "roc_auc", "rule": "superior",
                                     "margin": 0.01}},
            "evaluate": {"min_subgroup_rows": 30}}
    base = {"name": "m", "version": "1", "aliases": (), "created_ms": 0, "run_id": "r",
            "spec_name": "s", "spec": spec, "split": {"test": "61"},
            "metrics": {"test_brier": 0.2, "test_brier_ci_low": 0.15,
                        "test_brier_ci_high": 0.25, "test_mean_risk": 0.4,
                        "test_prevalence": 0.45}}
    return CardFacts(**{**base, **kw})


def test_the_card_says_undefined_and_why_and_counts_only_for_small_subgroups() -> None:
    from heartflow.evaluation.card import render_card

    table = pd.DataFrame([
        {"subgroup": "sex=0", "rows": 12, "cases": 10, "too_small": True,
         "roc_auc": math.nan, "roc_auc_ci_low": math.nan, "roc_auc_ci_high": math.nan,
         "calibration_slope": math.nan, "mean_risk": math.nan, "prevalence": 10 / 12},
        {"subgroup": "sex=1", "rows": 49, "cases": 20, "too_small": False,
         "roc_auc": 0.8, "roc_auc_ci_low": 0.7, "roc_auc_ci_high": 0.9,
         "calibration_slope": math.nan, "mean_risk": 0.4, "prevalence": 20 / 49}])
    why = "needs both classes among the rows: all 61 rows are without the outcome"
    card = render_card(_facts(undefined={"test_roc_auc": why},
                              subgroups_csv=table.to_csv(index=False)))
    performance = card[card.index("## Performance"):card.index("## Subgroups")]
    assert f"| roc_auc | undefined ({why}) |" in performance  # NaN is never logged
    assert "| brier | 0.200 [0.150, 0.250] |" in performance
    subgroups = card[card.index("## Subgroups"):card.index("## External")]
    assert "nan" not in subgroups
    assert "| sex=0 | 12 | 10 | | | | too small to judge: counts only |" in subgroups
    assert "| sex=1 | 49 | 20 | 0.800 [0.700, 0.900] | undefined | 0.40 / 0.41 | |" in subgroups


def test_the_card_says_which_rows_the_gate_decides_on() -> None:
    from heartflow.evaluation.card import render_card

    card = render_card(_facts())
    section = card[card.index("## Development"):card.index("## Performance")]
    assert "never test rows" in section
    assert ("Promotion uses test rows: the gate scores this version and the champion, each "
            "at its own decision threshold, on this run's test rows that neither model trained "
            "or validated on") in section
    assert "on roc_auc by rule `superior` with margin 0.01" in section
    assert "lower bound of the 95% interval of the difference" in section
    assert "used once, to choose it" in section


def test_the_card_labels_an_evaluation_on_the_recalibration_rows_apparent() -> None:
    from heartflow.evaluation.card import SiteFigures, render_card

    m = {"rows": 200.0, "roc_auc": 0.7, "calibration_intercept": 0.0,
         "calibration_slope": 1.0, "mean_risk": 0.6, "prevalence": 0.6}
    card = render_card(_facts(
        version="2", recalibrated_from="1", recalibration="intercept on va (200 rows)",
        sites=(SiteFigures("va", {**m, "apparent": 1.0}, "a" * 64),
               SiteFigures("ch", {**m, "apparent": 0.0}, "b" * 64))))
    sites = card[card.index("## External"):card.index("## Model updating")]
    assert ("| va: apparent (the rows the recalibration was fitted on), not external "
            "validation | 200 |") in sites
    assert "| ch | 200 |" in sites
    limits = card[card.index("## Limitations"):]
    assert "No external validation yet" not in limits  # ch is external
    only_apparent = render_card(_facts(version="2", recalibrated_from="1",
                                       sites=(SiteFigures("va", {**m, "apparent": 1.0}),)))
    assert "No external validation yet" in only_apparent[only_apparent.index(
        "## Limitations"):]


def test_a_recalibrated_versions_card_shows_its_own_figures_labelled() -> None:
    from heartflow.evaluation.card import render_card

    own = {"before_roc_auc": 0.71, "after_fitted_roc_auc": 0.71,
           "after_cross_fitted_roc_auc": 0.70, "before_mean_risk": 0.31,
           "after_fitted_mean_risk": 0.65, "after_cross_fitted_mean_risk": 0.64,
           "after_fitted_rows": 200.0}
    card = render_card(_facts(version="2", recalibrated_from="1",
                              recalibration="intercept on va (200 rows)",
                              recalibration_metrics=own))
    performance = card[card.index("## Performance"):card.index("## Subgroups")]
    assert "This version's own figures, from its recalibration (intercept on va (200 rows)" \
        in performance
    assert "after, cross-fitted" in performance and "apparent: the rows it was fitted on" \
        in performance
    assert "| roc_auc | 0.700 | 0.710 | 0.710 |" in performance
    assert "| mean_risk | 0.640 | 0.650 | 0.310 |" in performance
    assert "Version 1's network before recalibration, on its test rows (n=61)" in performance
    missing = render_card(_facts(version="2", recalibrated_from="1"))
    assert "does not describe this version's risks" in missing
