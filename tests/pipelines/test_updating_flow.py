"""`update_flow`: a Cleveland model updated by evidence at VA and Switzerland, and on its own
rows. The test recomputes every figure from the registered models themselves (risks from the
pyfunc, hidden activations from the Keras network) with statsmodels and scipy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from mlflow import MlflowClient
from scipy.stats import chi2

import heartflow as hf
from heartflow.data.sources import UCI_COLUMNS
from heartflow.pipelines.updating import update_flow
from tests.conftest import ROOT

SPEC = str(ROOT / "specs/uci_cleveland_16.yaml")
BINOMIAL = sm.families.Binomial()


def _site(shared_data: Path, name: str) -> tuple[pd.DataFrame, np.ndarray]:
    raw = pd.read_csv(shared_data / f"uci-heart/processed.{name}.data", header=None, dtype=str)
    raw.columns = UCI_COLUMNS
    return raw, (raw["num"].astype(int) > 0).to_numpy(np.float64)


def _risks_and_activations(uri: str, raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The registered model's risks, and what its output layer reads, computed here."""
    import keras  # lazy: TensorFlow, only when these tests run, not when they are collected

    model = hf.load_model(uri)
    p = model.predict(raw)["probability"].to_numpy()
    network, scorer = model.scorer.network, model.scorer
    x = scorer.encoder.transform(scorer.typed(raw)).astype(np.float32)
    hidden = keras.Model(network.input, network.get_layer("output").input)
    return p, np.asarray(hidden(x), dtype=np.float64)


def _fits(y: np.ndarray, p: np.ndarray, h: np.ndarray | None = None) -> dict[str, object]:
    z = np.log(p / (1 - p))
    ones = np.ones((len(y), 1))
    fits: dict[str, object] = {
        "intercept": sm.GLM(y, ones, family=BINOMIAL, offset=z).fit(),
        "logistic": sm.GLM(y, np.column_stack([ones, z]), family=BINOMIAL).fit()}
    if h is not None:
        fits["revision"] = sm.GLM(y, np.column_stack([ones, h]), family=BINOMIAL).fit()
    return fits


def _closed_test(y, p, fits, parameters) -> tuple[str, list[tuple[str, str, float, int, float]]]:
    """Vergouwe's procedure by hand: the most extensive update against none, intercept and
    logistic in turn; the first not significant at 0.05 is chosen, else the most extensive."""
    ll = {"none": float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))),
          **{m: f.llf for m, f in fits.items()}}
    top = list(fits)[-1]
    tests = []
    for smaller in [m for m in ("none", "intercept", "logistic") if m != top]:
        lr, df = 2 * (ll[top] - ll[smaller]), parameters[top] - parameters[smaller]
        tests.append((top, smaller, lr, df, chi2.sf(lr, df)))
        if chi2.sf(lr, df) >= 0.05:
            return smaller, tests
    return top, tests


def _assert_tests(result, tests) -> None:
    got = result.as_dict()["tests"]
    assert [(t["update"], t["against"], t["df"]) for t in got] == [
        (a, b, df) for a, b, _, df, _ in tests]
    for t, (_, _, lr, _, pv) in zip(got, tests, strict=True):
        assert t["statistic"] == pytest.approx(lr, rel=1e-5, abs=1e-6)
        assert t["p_value"] == pytest.approx(pv, rel=1e-4, abs=1e-300)


@pytest.mark.slow
@pytest.mark.realdata
def test_cleveland_model_updated_by_evidence_at_va(shared_data: Path, prefect_server) -> None:
    trained = hf.run(SPEC, overrides={  # a small network, so VA's 51 rows without disease
        "evaluate.cv": None, "model.hidden.0.units": 3,  # can judge a revision (4 params)
        "train.optimizer.learning_rate": 0.01, "train.epochs": 200,
        "train.early_stopping.patience": 20})
    source = f"models:/uci-cleveland/{trained.version}"
    raw, y = _site(shared_data, "va")
    p, h = _risks_and_activations(source, raw)
    assert np.linalg.matrix_rank(np.column_stack([np.ones(len(y)), h])) == 4
    assert min(y.sum(), len(y) - y.sum()) >= 10 * 4  # enough rows for every update
    fits = _fits(y, p, h)
    expected, tests = _closed_test(y, p, fits, {"none": 0, "intercept": 1, "logistic": 2,
                                                "revision": 4})

    result = update_flow(source, "uci-va", site="va")
    assert result.method == expected
    shown = repr(result)  # at a prompt: the update, why, the version; not the evidence's fields
    assert len(shown.splitlines()) <= 4 and expected in shown and "evidence=" not in shown
    _assert_tests(result, tests)
    client = MlflowClient()
    run = client.get_run(result.run_id)  # the evidence, recorded in <model>-evaluations
    assert client.get_experiment(run.info.experiment_id).name == "uci-cleveland-evaluations"
    assert run.data.metrics["lr_revision_vs_none"] == pytest.approx(tests[0][2], rel=1e-5)
    assert run.data.metrics["df_revision_vs_none"] == 4
    assert run.data.params["method"] == expected and run.data.params["requested"] == "auto"
    if expected != "none":  # before / after figures, as a recalibration records them
        assert run.data.metrics["before_mean_risk"] == pytest.approx(p.mean(), rel=1e-6)
        assert run.data.metrics["after_fitted_prevalence"] == pytest.approx(y.mean())
        assert "after_cross_fitted_calibration_slope" in run.data.metrics
    if expected != "none":
        assert result.new_version == str(int(trained.version) + 1)
        tags = client.get_model_version("uci-cleveland", result.new_version).tags
        assert tags["heartflow.update.method"] == expected
        assert tags["heartflow.update.site"] == "va"
        assert tags["heartflow.update.from"] == str(trained.version)
        assert tags["heartflow.update.data_sha256"] == result.data_sha256
        assert json.loads(tags["heartflow.update.tests"]) == result.as_dict()["tests"]
        aliases = client.get_registered_model("uci-cleveland").aliases
        assert str(aliases.get("champion")) == str(trained.version)  # registered, not promoted
    revised = result if expected == "revision" else update_flow(source, "uci-va", "revision",
                                                                "va")
    # The revised network scores VA's raw rows with the GLM's fitted risks.
    p_revised = hf.load_model(revised.new_model_uri).predict(raw)["probability"].to_numpy()
    assert p_revised == pytest.approx(fits["revision"].fittedvalues, abs=1e-5)
    assert revised.as_dict()["updates"]["revision"]["bias"] == pytest.approx(
        fits["revision"].params[0], rel=1e-4, abs=1e-4)

    forced = update_flow(source, "uci-va", "intercept", "va")  # forced: still tested vs none
    ll_none = np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
    lr = 2 * (fits["intercept"].llf - ll_none)
    _assert_tests(forced, [("intercept", "none", lr, 1, chi2.sf(lr, 1))])
    assert client.get_model_version("uci-cleveland", forced.new_version).tags[
        "heartflow.update.method"] == "intercept"
    p_forced = hf.load_model(forced.new_model_uri).predict(raw)["probability"].to_numpy()
    a = fits["intercept"].params[0]
    assert p_forced == pytest.approx(1 / (1 + np.exp(-(a + np.log(p / (1 - p))))), abs=1e-6)
    card = hf.model_card(forced.new_model_uri)
    assert f"Recalibrated from version {trained.version}: intercept update on va" in card

    # Switzerland: 8 of 123 rows without disease cannot judge even an intercept.
    swiss = update_flow(source, "uci-switzerland", site="switzerland")
    assert swiss.method == "none" and swiss.new_version is None and not swiss.evidence.tests
    assert "8 rows without the outcome" in swiss.reason and "nothing registered" in swiss.reason
    versions = client.search_model_versions("name='uci-cleveland'")
    assert len(versions) == int(forced.new_version)  # nothing registered for Switzerland


@pytest.mark.slow
@pytest.mark.realdata
def test_on_its_own_rows_a_model_is_not_revised(shared_data: Path, prefect_server) -> None:
    """The development population: the 16-unit network (early stopping) on Cleveland's rows.
    Revision (up to 17 parameters) needs 10 rows of each outcome per parameter and is
    refused; the closed test over the recalibrations finds no update or at most an
    intercept."""
    trained = hf.run(SPEC, overrides={"evaluate.cv": None})
    source = f"models:/uci-cleveland/{trained.version}"
    raw, y = _site(shared_data, "cleveland")
    p, h = _risks_and_activations(source, raw)
    rank = np.linalg.matrix_rank(np.column_stack([np.ones(len(y)), h]))
    fits = _fits(y, p)
    expected, tests = _closed_test(y, p, fits, {"none": 0, "intercept": 1, "logistic": 2})

    result = update_flow(source, "uci-cleveland", site="cleveland")
    assert result.method == expected and result.method in ("none", "intercept")
    _assert_tests(result, tests)
    revision = result.as_dict()["updates"]["revision"]
    assert revision["parameters"] == rank and y.sum() < 10 * rank  # 139 rows with disease
    assert f"need at least {10 * rank}" in revision["refused"]
    if result.method == "none":
        assert result.new_version is None and "no evidence" in result.reason
        assert len(MlflowClient().search_model_versions("name='uci-cleveland'")) == 1
