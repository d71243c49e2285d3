"""Clinical evaluation: each figure against an independent reference, and `heartflow evaluate`
of the Cleveland model on the VA site end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.evaluation.clinical import (
    at_threshold,
    calibration_intercept_slope,
    clinical_report,
    expected_calibration_error,
    net_benefit,
)
from tests.conftest import ROOT, cli


def _risks(n: int = 800, seed: int = 0, scale: float = 1.0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)  # outcomes follow logit z
    p = 1 / (1 + np.exp(-(scale * z + shift)))                 # a model's distorted risks
    return y, p


def test_calibration_slope_and_intercept_match_an_unpenalised_logistic_fit() -> None:
    from sklearn.linear_model import LogisticRegression

    y, p = _risks(scale=2.0, shift=-0.5)  # too extreme, too low
    got = calibration_intercept_slope(y, p)
    logit = np.log(p / (1 - p)).reshape(-1, 1)
    reference = LogisticRegression(penalty=None, tol=1e-10, max_iter=1000).fit(logit, y)
    assert got["slope"] == pytest.approx(reference.coef_[0][0], rel=1e-3)
    assert got["slope"] < 1 and got["slope_low"] < got["slope"] < got["slope_high"]
    # Calibration-in-the-large: the intercept with logit(p) as a fixed offset.
    import statsmodels.api as sm

    assert got["intercept"] > 0  # risks too low on average
    offset = sm.Logit(y, np.ones(len(y)), offset=logit.ravel()).fit(disp=0)
    assert got["intercept"] == pytest.approx(offset.params[0], rel=1e-4)
    ideal = calibration_intercept_slope(*_risks(n=4000, seed=1))  # calibrated by design
    assert ideal["slope"] == pytest.approx(1.0, abs=0.1)
    assert ideal["intercept"] == pytest.approx(0.0, abs=0.1)


def test_threshold_figures_net_benefit_and_ece_by_hand() -> None:
    from sklearn.metrics import confusion_matrix

    y = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0, 0], dtype=float)
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7, 0.05, 0.35])
    tn, fp, fn, tp = confusion_matrix(y, p >= 0.5).ravel()
    figures = at_threshold(y, p, 0.5)
    assert figures == {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
                       "ppv": tp / (tp + fp), "npv": tn / (tn + fn)}
    # Net benefit at 0.2: treated = p >= 0.2 -> TP 4, FP 4 of 10 rows.
    assert net_benefit(y, p, 0.2) == pytest.approx(4 / 10 - 4 / 10 * 0.2 / 0.8)
    # ECE with 2 bins of 5 sorted rows: |mean y - mean p| weighted by size.
    order = np.argsort(p)
    low, high = order[:5], order[5:]
    expected = (abs(y[low].mean() - p[low].mean()) + abs(y[high].mean() - p[high].mean())) / 2
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(expected)
    report = clinical_report(y, p, 0.5, (0.2,))
    assert report.values["treat_all@0.2"] == pytest.approx(0.4 - 0.6 * 0.25)
    assert report.rows == 10 and all(k in report.intervals for k in ("roc_auc", "brier"))


def test_calibration_bins_are_scikit_learns() -> None:
    from sklearn.calibration import calibration_curve

    from heartflow.evaluation.clinical import calibration_bins

    y, p = _risks(n=997, seed=5, scale=1.3)
    observed, predicted, counts = calibration_bins(y, p, 10)
    ref_observed, ref_predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    assert np.allclose(observed, ref_observed) and np.allclose(predicted, ref_predicted)
    assert counts.sum() == 997


def test_one_outcome_class_is_reported_as_undefined() -> None:
    report = clinical_report(np.ones(30), np.linspace(0.1, 0.9, 30))
    assert math.isnan(report.values["roc_auc"]) and math.isnan(
        report.values["calibration_slope"])
    assert report.notes and dict((a, b) for a, b, _ in report.table())["roc_auc"] == \
        "undefined"


@pytest.mark.slow
@pytest.mark.realdata
def test_cleveland_model_on_the_va_site(tmp_path: Path, shared_data: Path,
                                        prefect_server) -> None:
    trained = cli("run", "-q", str(ROOT / "specs/uci_cleveland_16.yaml"), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    out = cli("evaluate", "models:/uci-cleveland/1", "uci-va", "--site", "va", "-o",
              str(tmp_path / "va.html"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "200 rows scored" in out.stdout and "calibration_slope" in out.stdout
    # Independent counts from the raw file: prevalence of num > 0, and rows with a missing
    # feature ('?' anywhere, or chol written as 0 = not measured).
    raw = pd.read_csv(shared_data / "uci-heart/processed.va.data", header=None, dtype=str)
    features = raw.iloc[:, :13]
    missing_rows = int(((features == "?").any(axis=1) | (raw[4] == "0")).sum())
    prevalence = (raw[13].astype(int) > 0).mean()
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("uci-cleveland-evaluations")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["heartflow.evaluation.model_version"] == "1"
    assert run.data.tags["heartflow.evaluation.site"] == "va"
    assert run.data.metrics["prevalence"] == pytest.approx(prevalence)
    assert run.data.metrics["rows"] == 200
    assert run.data.metrics["rows_with_missing"] == missing_rows
    assert run.data.metrics["mean_risk"] < prevalence - 0.1  # under-predicts at VA
    # The report reads: each sentence's claim follows from the figures MLflow holds.
    m = run.data.metrics
    said = out.stdout.replace("\n", " ")
    assert "In short:" in out.stdout and "The model under-predicts risk" in said
    assert f"mean predicted risk {m['mean_risk']:.2f}" in said and "recalibrate before use" in said
    assert m["calibration_intercept_ci_low"] > 0
    thresholds = [k.removeprefix("net_benefit_at_") for k in m
                  if k.startswith("net_benefit_at_") and not k.endswith(("_low", "_high"))]
    worse = [t for t in thresholds if m[f"net_benefit_at_{t}"] < m[f"treat_all_at_{t}"]]
    if len(worse) == len(thresholds):
        assert "worse than treating everyone at these thresholds" in said
    assert f"roc_auc {m['roc_auc']:.3f} [" in said
    listed = json.loads(cli("models", "uci-cleveland", "--json", cwd=tmp_path).stdout)
    assert listed[0]["sites"]["va"].startswith("AUC ")
    report = (tmp_path / "va.html").read_text()
    assert report.count("data:image/png;base64,") == 3 and "calibration_slope" in report
    assert report.index("In short") < report.index("<h2>Figures</h2>")
    assert "under-predicts risk" in report.split("<h2>Figures</h2>")[0]
    # Scoring never refuses a file because cells are empty (this model's na_values is
    # ['?'] only); each row says how many of its values were imputed.
    from heartflow.data.sources import UCI_COLUMNS

    rows = raw.head(3).copy()
    rows.columns = UCI_COLUMNS
    rows.loc[0, "trestbps"] = ""
    rows.to_csv(tmp_path / "three.csv", index=False)
    scored = cli("predict", "models:/uci-cleveland/1", str(tmp_path / "three.csv"),
                 cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    result = pd.read_csv(__import__("io").StringIO(scored.stdout))
    expected = [int(rows.iloc[i, :13].isin(["?", ""]).sum()) + int(rows.iloc[i, 4] == "0")
                for i in range(3)]
    assert result["imputed"].tolist() == expected
    _recalibration_and_model_card(tmp_path, shared_data)


def _recalibration_and_model_card(tmp_path: Path, shared_data: Path) -> None:
    """(Same trained model.) The cost-derived threshold, subgroups, recalibration on VA
    (a new version whose pyfunc applies it), and the model cards."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.metrics import roc_auc_score

    client = MlflowClient()
    run = client.get_run(client.get_model_version("uci-cleveland", "1").run_id)
    # The spec states a false negative costs 3 false positives: threshold 1 / (1 + 3).
    assert float(run.data.tags["heartflow.threshold"]) == pytest.approx(0.25)
    assert "cost ratio" in run.data.tags["heartflow.threshold_rule"]
    assert run.data.tags["heartflow.device.used"] == "cpu"  # no GPU here; the reason says so
    assert run.data.tags["heartflow.device.reason"].startswith("auto: ")
    subgroups = pd.read_csv(mlflow.artifacts.download_artifacts(
        f"runs:/{run.info.run_id}/evaluation/subgroups.csv"))
    test_rows = int(run.data.tags["heartflow.split.test"])
    by_sex = subgroups[subgroups.subgroup.str.startswith("sex=")]
    assert by_sex.rows.sum() == test_rows  # every test row in exactly one sex subgroup
    assert (subgroups.too_small == (subgroups.rows < 30) | (subgroups.cases < 5)
            | (subgroups.rows - subgroups.cases < 5)).all()

    out = cli("recalibrate", "models:/uci-cleveland/1", "uci-va", "--site", "va", "--method",
              "intercept", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "registered models:/uci-cleveland/2" in out.stdout
    assert cli("evaluate", "models:/uci-cleveland/2", "uci-va", "--site", "va",
               cwd=tmp_path).returncode == 0
    experiment = client.get_experiment_by_name("uci-cleveland-evaluations")
    evaluations = {r.data.tags["heartflow.evaluation.model_version"]: r.data.metrics
                   for r in client.search_runs([experiment.experiment_id],
                                               "tags.`heartflow.evaluation.site` = 'va'")}
    before, after = evaluations["1"], evaluations["2"]
    assert abs(before["mean_risk"] - before["prevalence"]) > 0.2
    assert abs(after["mean_risk"] - after["prevalence"]) < 0.03
    assert after["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-9)
    # The registered pyfunc applies the rule to raw rows: logit p2 = a + logit p1.
    raw = pd.read_csv(shared_data / "uci-heart/processed.va.data", header=None, dtype=str)
    from heartflow.data.sources import UCI_COLUMNS

    raw.columns = UCI_COLUMNS
    p1 = mlflow.pyfunc.load_model("models:/uci-cleveland/1").predict(raw)["probability"]
    p2 = mlflow.pyfunc.load_model("models:/uci-cleveland/2").predict(raw)["probability"]
    intercept = float(client.get_run(client.get_model_version(
        "uci-cleveland", "2").run_id).data.params["intercept"])
    z1 = np.log(p1 / (1 - p1))
    assert p2.to_numpy() == pytest.approx(1 / (1 + np.exp(-(intercept + z1))), abs=1e-6)
    y = (raw["num"].astype(int) > 0).to_numpy()
    assert roc_auc_score(y, p2) == pytest.approx(roc_auc_score(y, p1), abs=1e-9)
    # Model cards: logged with each version, kept current, sections mapped to TRIPOD+AI.
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card.md")
    for section in ("Intended use", "Data provenance", "Population", "Missing data",
                    "Performance", "Subgroups", "External validation", "Limitations"):
        assert f"## {section}" in card
    assert "*TRIPOD+AI 23a" in card and run.data.tags["heartflow.data_sha256"] in card
    assert f"| va | 200 | {before['roc_auc']:.3f}" in card
    assert "Miscalibrated at va" in card
    recalibrated = cli("card", "models:/uci-cleveland/2", cwd=tmp_path).stdout
    assert "Recalibrated from version 1: intercept on va (200 rows)" in recalibrated
