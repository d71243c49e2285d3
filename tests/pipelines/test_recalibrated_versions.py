"""Recalibrated versions say what they are: the card of a recalibrated version shows its own
figures (its recalibration's, labelled cross-fitted and fitted), an evaluation on the very
rows a recalibration was fitted on is labelled apparent (result, report, card), and a model
whose risks are reversed at a site is refused a logistic recalibration. Real flows, real
MLflow store; references computed here (hashlib, scikit-learn, statsmodels)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.errors import DataError
from tests.conftest import heart_csv, heart_spec

pytestmark = pytest.mark.slow
MODEL = "heart-test"


def _train(tmp_path: Path, epochs: int = 15) -> None:
    import heartflow as hf

    heart_csv(tmp_path / "heart.csv", rows=300)
    assert hf.run(str(heart_spec(tmp_path / "spec.yaml", epochs=epochs))).version == "1"


def _probability(uri: str, rows: pd.DataFrame) -> np.ndarray:
    import heartflow as hf

    return hf.load_model(uri).predict(rows)["probability"].to_numpy()


def test_a_recalibrated_version_shows_its_own_figures_and_apparent_evaluations(
        tmp_path: Path, prefect_server) -> None:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.metrics import roc_auc_score

    import heartflow as hf

    _train(tmp_path)
    site = pd.read_csv(heart_csv(tmp_path / "site.csv", rows=250, seed=9))
    site.loc[site.index[::3], "target"] = 1  # a site with more disease: miscalibrated
    site.to_csv(tmp_path / "site.csv", index=False)
    heart_csv(tmp_path / "other.csv", rows=250, seed=10)
    sha = hashlib.sha256((tmp_path / "site.csv").read_bytes()).hexdigest()

    recal = hf.recalibrate(f"models:/{MODEL}/1", str(tmp_path / "site.csv"),
                           method="intercept", site="north")
    assert recal.new_version == "2" and recal.rule["data_sha256"] == sha
    on_fit_rows = hf.evaluate(f"models:/{MODEL}/2", str(tmp_path / "site.csv"), site="north",
                              report=str(tmp_path / "north.html"))
    elsewhere = hf.evaluate(f"models:/{MODEL}/2", str(tmp_path / "other.csv"), site="south")
    source = hf.evaluate(f"models:/{MODEL}/1", str(tmp_path / "site.csv"), site="north")
    label = "apparent (the rows the recalibration was fitted on), not external validation"
    assert on_fit_rows.data_sha256 == sha and label in on_fit_rows.apparent
    assert on_fit_rows.report.notes[0].startswith(label)  # printed first by the CLI
    assert on_fit_rows.summary().endswith(label)
    shown = repr(elsewhere)  # at a prompt: a few lines, not the report's every figure
    assert len(shown.splitlines()) <= 4 and elsewhere.summary() in shown and "report=" not in shown
    assert label in (tmp_path / "north.html").read_text()
    assert not elsewhere.apparent and not source.apparent  # other rows; no recalibration
    client = MlflowClient()
    runs = {r.info.run_id: r for r in client.search_runs(
        [client.get_experiment_by_name(f"{MODEL}-evaluations").experiment_id])}
    assert runs[on_fit_rows.run_id].data.metrics["apparent"] == 1.0
    assert runs[elsewhere.run_id].data.metrics["apparent"] == 0.0

    # The card of version 2 (rewritten by each evaluation): its own figures, labelled.
    run_id = client.get_model_version(MODEL, "2").run_id
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/model_card.md")
    y = site["target"].to_numpy()
    before = _probability(f"models:/{MODEL}/1", site)
    after = _probability(f"models:/{MODEL}/2", site)
    performance = card[card.index("## Performance"):card.index("## Subgroups")]
    assert "This version's own figures, from its recalibration (intercept on north" \
        in performance
    auc_row = next(line for line in performance.splitlines()
                   if line.startswith("| roc_auc | ") and line.count("|") == 5)
    _cross, fitted, old = (cell.strip() for cell in auc_row.split("|")[2:5])
    assert fitted.startswith(f"{roc_auc_score(y, after):.3f}")
    assert old.startswith(f"{roc_auc_score(y, before):.3f}")
    risk_row = next(line for line in performance.splitlines()
                    if line.startswith("| mean_risk | ") and line.count("|") == 5)
    assert risk_row.split("|")[3].strip().startswith(f"{after.mean():.3f}")
    assert risk_row.split("|")[4].strip().startswith(f"{before.mean():.3f}")
    assert "after, cross-fitted" in performance and "apparent: the rows it was fitted on" \
        in performance
    assert "Version 1's network before recalibration, on its test rows" in performance
    sites = card[card.index("## External"):card.index("## Model updating")]
    assert f"| north: {label} |" in sites and "| south |" in sites


def test_reversed_risks_at_a_site_refuse_a_logistic_recalibration(tmp_path: Path,
                                                                  prefect_server) -> None:
    import statsmodels.api as sm
    from mlflow import MlflowClient

    import heartflow as hf

    _train(tmp_path)
    site = pd.read_csv(tmp_path / "heart.csv")
    site["target"] = 1 - site["target"]  # the outcomes the model ranks highest do not occur
    site.to_csv(tmp_path / "reversed.csv", index=False)
    p = _probability(f"models:/{MODEL}/1", site)
    z = np.log(p / (1 - p))
    reference = sm.GLM(site["target"].to_numpy(), sm.add_constant(z),
                       family=sm.families.Binomial()).fit()
    assert reference.params[1] < 0  # the reference: a negative calibration slope here
    with pytest.raises(DataError) as refused:
        hf.recalibrate(f"models:/{MODEL}/1", str(tmp_path / "reversed.csv"),
                       method="logistic", site="backwards")
    message = str(refused.value)
    assert f"slope of {reference.params[1]:.3f}" in message
    assert "reverse the model's ranking" in message
    assert [str(v.version) for v in MlflowClient().search_model_versions(f"name='{MODEL}'")] \
        == ["1"]  # nothing registered
    rule = hf.recalibrate(f"models:/{MODEL}/1", str(tmp_path / "reversed.csv"),
                          method="intercept", site="backwards")  # the refusal's advice
    assert rule.new_version == "2"
