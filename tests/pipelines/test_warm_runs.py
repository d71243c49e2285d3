"""Re-runs in one process (a notebook's loop): the run's network trained in the same program
as its cross-validation folds' networks, recorded as a Keras fit records it; each fold's
figures in one table; parameters, tags and metrics sent in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.tracking import names as N
from tests.conftest import heart_csv, heart_spec

pytestmark = pytest.mark.slow


def _cv_spec(path: Path, folds: int = 3, repeats: int = 2, units: int = 8) -> str:
    spec = heart_spec(path, hidden=[units], epochs=25)
    text = spec.read_text().replace(
        "  epochs:", "  early_stopping: {monitor: val_loss, patience: 4, restore_best: true}\n"
                     "  epochs:")
    spec.write_text(text + f"evaluate:\n  cv: {{folds: {folds}, repeats: {repeats}}}\n")
    return str(spec)


def test_a_rerun_records_its_network_as_a_keras_fit_and_its_folds_in_one_table(
        tmp_path: Path, prefect_server) -> None:
    from mlflow import MlflowClient
    from sklearn.metrics import log_loss, roc_auc_score

    import heartflow as hf

    heart_csv(tmp_path / "heart.csv", rows=240)
    spec = _cv_spec(tmp_path / "spec.yaml")
    hf.run(spec)  # the first run of the process
    outcome = hf.run(spec, overrides={"model.hidden.0.units": 4})  # a re-run, another net
    client = MlflowClient()
    run = client.get_run(outcome.run_id)
    assert run.data.tags[N.TRAINED_WITH_FOLDS] == "6"
    assert run.info.status == "FINISHED"

    # Keras' per-epoch history: training loss and accuracy, validation loss, AUC, accuracy.
    history = {key: [m.value for m in sorted(client.get_metric_history(outcome.run_id, key),
                                             key=lambda m: m.step)]
               for key in ("loss", "accuracy", "val_loss", "val_auc", "val_accuracy")}
    assert {len(v) for v in history.values()} == {outcome.epochs_run}
    assert all(0.0 <= v <= 1.0 for v in history["accuracy"] + history["val_accuracy"])

    # The kept network is the one of the best epoch, and its figures there are what
    # scikit-learn computes from the network's own validation outputs.
    best = outcome.best_epoch
    assert best is not None and 1 <= best <= outcome.epochs_run
    assert best == int(np.argmin(history["val_loss"])) + 1
    labels = np.asarray(outcome.validation_labels, dtype=float)
    output = np.asarray(outcome.validation_output, dtype=float).reshape(-1)
    assert history["val_loss"][best - 1] == pytest.approx(log_loss(labels, output), abs=1e-4)
    assert history["val_auc"][best - 1] == pytest.approx(roc_auc_score(labels, output),
                                                         abs=1e-9)
    threshold = 0.5
    assert history["val_accuracy"][best - 1] == pytest.approx(
        float(np.mean((output >= threshold) == (labels > 0.5))), abs=1e-9)

    # What the run returns is what MLflow holds.
    logged = run.data.metrics
    for name, value in outcome.metrics.items():
        if value == value and f"test_{name}" in logged:
            assert logged[f"test_{name}"] == pytest.approx(value)
    assert logged["epochs_run"] == outcome.epochs_run
    assert logged["cv_roc_auc_mean"] == pytest.approx(outcome.cv["roc_auc"][0])

    # Each fold's figures: one table; their mean and spread: metrics.
    table = pd.read_csv(client.download_artifacts(outcome.run_id, N.CV_FOLDS_ARTIFACT,
                                                  str(tmp_path)))
    assert list(table["repeat"]) == [1, 1, 1, 2, 2, 2]
    assert list(table["fold"]) == [1, 2, 3, 1, 2, 3]
    tags = run.data.tags
    development = int(tags[N.split_size("train")]) + int(tags[N.split_size("validation")])
    assert table.groupby("repeat")["rows"].sum().tolist() == [development] * 2  # each once
    assert table["rows"].max() - table["rows"].min() <= 1  # stratified folds: even shares
    for metric in ("roc_auc", "log_loss", "brier", "accuracy"):
        values = table[metric].to_numpy(dtype=float)
        assert values.tolist() == pytest.approx(outcome.cv_scores[metric])
        assert logged[f"cv_{metric}_mean"] == pytest.approx(np.nanmean(values))
        assert logged[f"cv_{metric}_std"] == pytest.approx(np.nanstd(values, ddof=1))
    assert logged["cv_folds"] == 6


def test_a_batched_recording_sends_everything_once_the_block_ends(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from heartflow.tracking.recorder import tracked_run

    client = MlflowClient()
    with tracked_run("batched", "one") as recorder:
        with recorder.batched():
            recorder.params({f"p{i}": str(i) for i in range(150)})  # more than one call holds
            recorder.tags({"t": "first"})
            recorder.tags({"t": "second"})  # the latest value wins, as one by one
            recorder.history({"loss": [float(i) for i in range(1200)]})
            recorder.metrics({"m": 1.5})
            held = client.get_run(recorder.run_id).data
            assert "p0" not in held.params and "m" not in held.metrics
        data = client.get_run(recorder.run_id).data
        assert len([k for k in data.params if k.startswith("p")]) == 150
        assert data.tags["t"] == "second" and data.metrics["m"] == 1.5
        steps = [m.step for m in client.get_metric_history(recorder.run_id, "loss")]
        assert sorted(steps) == list(range(1, 1201))
        with pytest.raises(MlflowException), recorder.batched():  # as when logged at once
            recorder.params({"p0": "changed"})
        with recorder.batched(), pytest.raises(MlflowException):  # held, then changed: at once
            recorder.params({"q": "1"})
            recorder.params({"q": "2"})
    assert client.get_run(recorder.run_id).data.params["q"] == "1"
