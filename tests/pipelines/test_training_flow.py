"""`heartflow run` end to end: real Prefect flow, real Keras training, real MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, heart_csv, heart_spec

pytestmark = pytest.mark.slow

SCORE_IN_FRESH_PROCESS = """
import sys, json, pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.read_csv(sys.argv[2]).drop(columns=["target"]).head(5)
frame.loc[0, "chol"] = None
frame.loc[1, "thal"] = "never-seen"
print(json.dumps(model.predict(frame)["probability"].tolist()))
"""


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def test_cli_run_trains_tracks_registers_and_scores(tmp_path: Path, prefect_server) -> None:
    heart_csv(tmp_path / "heart.csv", rows=300)
    spec = heart_spec(tmp_path / "spec.yaml", epochs=12)
    out = cli("run", str(spec), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    outcome = json.loads(out.stdout)
    assert outcome["input_width"] == 26 and outcome["parameters"] == 26 * 8 + 8 + 8 + 1
    assert outcome["version"] == "1" and outcome["promoted"] is True
    assert "epoch" in out.stderr  # per-epoch progress

    client = _client()
    run = client.get_run(outcome["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden.0.units"] == "8"
    assert run.data.params["train.optimizer.name"] == "adam"
    assert 0.5 <= run.data.metrics["test_roc_auc"] <= 1.0
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == outcome["epochs_run"]
    tags = run.data.tags
    assert len(tags["heartflow.data_sha256"]) == 64
    assert tags["heartflow.split.test"] == str(outcome["split"]["test"])
    assert sum(outcome["split"].values()) == 300
    assert tags["heartflow.version.tensorflow"] and tags["heartflow.seed"] == "42"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec", "plots", "preprocessing"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc_curve.png", "plots/pr_curve.png", "plots/confusion_matrix.png",
            "plots/learning_curves.png"} <= plots
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "heart_test"

    fresh = subprocess.run([sys.executable, "-c", SCORE_IN_FRESH_PROCESS,
                            "models:/heart-test/1", str(tmp_path / "heart.csv")],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env=os.environ.copy())
    assert fresh.returncode == 0, fresh.stderr
    probabilities = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert len(probabilities) == 5 and all(0 <= p <= 1 for p in probabilities)


def test_same_spec_and_seed_give_the_same_metrics(tmp_path: Path, prefect_server) -> None:
    import heartflow as hf

    heart_csv(tmp_path / "heart.csv", rows=200)
    spec = str(heart_spec(tmp_path / "spec.yaml", epochs=8))
    first = hf.run(spec).as_dict()
    second = hf.run(spec).as_dict()
    assert first["metrics"] == second["metrics"]
    assert first["run_id"] != second["run_id"]


def test_run_without_prefect_api_url_leaves_nothing_running(tmp_path: Path) -> None:
    heart_csv(tmp_path / "heart.csv", rows=120)
    spec = heart_spec(tmp_path / "spec.yaml", epochs=2)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    before = _prefect_servers()
    out = subprocess.run([sys.executable, "-m", "heartflow", "run", "-q", str(spec)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "heartflow run: heart_test" in out.stdout
    assert _prefect_servers() == before


def _prefect_servers() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"prefect.server.api.server:create_app" in cmd:
                pids.add(int(entry.name))
    return pids


@pytest.mark.realdata
def test_heart_16_on_the_real_file(shared_data: Path, tmp_path: Path, prefect_server) -> None:
    out = cli("run", "-q", str(ROOT / "specs/heart_16.yaml"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "│ inputs                │ 29" in out.stdout
    assert "│ parameters            │ 497" in out.stdout
    assert "heart-disease v1 (champion)" in out.stdout
    show = cli("show", str(ROOT / "specs/heart_16.yaml"), cwd=tmp_path)
    assert "29 inputs, 497 parameters" in show.stdout
    # Before training, Riley's minimum against the development rows (train + validation)
    # of this very split, read from the run just made.
    from mlflow import MlflowClient

    from heartflow.evaluation.sample_size import minimum_sample_size

    run = MlflowClient().search_runs([MlflowClient().get_experiment_by_name(
        "heart_16").experiment_id])[0]
    rows, events = (int(run.data.metrics[k]) for k in ("development_rows",
                                                        "development_events"))
    weights = minimum_sample_size(497, events / rows, c_statistic=0.8)
    assert f"{weights.rows} counting the 497 weights" in show.stdout
    assert f"{rows} development rows ({events} events): SHORT" in show.stdout


@pytest.mark.realdata
def test_uci_cleveland_on_the_real_file(shared_data: Path, tmp_path: Path,
                                        prefect_server) -> None:
    import heartflow as hf

    outcome = hf.run(str(ROOT / "specs/uci_cleveland_16.yaml")).as_dict()
    split = outcome["split"]
    assert sum(split.values()) == 303  # every row in one part, each part binomial around
    for part, share in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):  # its share
        assert abs(split[part] - share * 303) <= 4 * (303 * share * (1 - share)) ** 0.5
    assert outcome["metrics"]["roc_auc"] > 0.8
    assert outcome["version"] == "1"


def test_flow_logs_and_task_states_reach_an_external_prefect_server(
        tmp_path: Path, prefect_server) -> None:
    """With PREFECT_API_URL set, the run's task states and logs are recorded on that server."""
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        LogFilter,
        LogFilterFlowRunId,
    )

    heart_csv(tmp_path / "heart.csv", rows=120)
    spec = heart_spec(tmp_path / "spec.yaml", epochs=2)
    out = cli("run", "-q", str(spec), cwd=tmp_path, env={"PREFECT_LOGGING_LEVEL": "INFO"})
    assert out.returncode == 0, out.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(
            any_=["heartflow-run"])), limit=50)
        ours = [r for r in runs if r.parameters.get("spec_path") == str(spec)]
        assert len(ours) == 1 and ours[0].state.is_completed()
        wanted = {"preprocess", "train", "log-training", "evaluate", "register"}
        deadline = time.monotonic() + 30
        while True:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id={"any_": [ours[0].id]}))
            states = {t.name.rsplit("-", 1)[0]: t.state.type.value if t.state else None
                      for t in tasks}
            logs = [entry.message for entry in client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[ours[0].id])))]
            # The flow's last log line is written as the flow ends, just before exit.
            finished = any(m.startswith("Finished in state Completed") for m in logs)
            if finished and wanted <= states.keys() and all(
                    states[n] == "COMPLETED" for n in wanted):
                break
            assert time.monotonic() < deadline, (states, logs)
            time.sleep(0.5)


def test_threshold_chosen_on_validation_rows_for_least_cost(tmp_path: Path,
                                                            prefect_server) -> None:
    import numpy as np
    from sklearn.metrics import confusion_matrix

    import heartflow as hf

    heart_csv(tmp_path / "heart.csv", rows=300)
    spec = heart_spec(tmp_path / "s.yaml", epochs=5)
    spec.write_text(spec.read_text() + "evaluate:\n  threshold: {false_negative_cost: 4, "
                    "method: validation}\n")
    outcome = hf.run(str(spec))
    y = np.asarray(outcome.validation_labels)
    p = np.asarray(outcome.validation_output)
    assert len(y) == outcome.split["validation"]

    def cost(t: float) -> float:  # per validation row, FN cost 4, FP cost 1
        _tn, fp, fn, _tp = confusion_matrix(y, p >= t, labels=[0, 1]).ravel()
        return (4 * fn + fp) / len(y)

    # Every way of splitting the rows: treat those with risk >= each distinct risk, or nobody.
    best = min(cost(t) for t in [*np.unique(p), 1.01])
    assert cost(outcome.threshold) == pytest.approx(best)
    assert "validation rows" in outcome.threshold_rule
    run = _client().get_run(outcome.run_id)
    assert float(run.data.tags["heartflow.threshold"]) == pytest.approx(outcome.threshold)
    assert "test_expected_cost" in run.data.metrics
    # The registered model decides with that threshold.
    frame = __import__("pandas").read_csv(tmp_path / "heart.csv").drop(columns=["target"])
    scored = hf.load_model(outcome.model_uri).predict(frame.head(50))
    assert ((scored["probability"] >= outcome.threshold).astype(int)
            == scored["prediction"]).all()
