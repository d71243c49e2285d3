"""Scheduled retraining on real Prefect parts: `prefect server start`, a process work pool,
`prefect worker start`, `heartflow deploy`, and the promotion gate across two runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.tracking import registry
from tests.conftest import (
    cli,
    free_port,
    heart_csv,
    heart_spec,
    stop_process_group,
    wait_until_answering,
)

pytestmark = pytest.mark.slow
PREFECT = [sys.executable, "-m", "prefect"]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def prefect_stack(tmp_path: Path):
    """A real Prefect server and a process worker on pool 'gpu', stopped by PID at the end."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_API_URL": api,
           "PREFECT_HOME": tempfile.mkdtemp(prefix="heartflow-prefect-"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "5", "PREFECT_LOGGING_LEVEL": "WARNING"}
    server = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    worker = None
    try:
        wait_until_answering(api + "/health", server)
        created = subprocess.run([*PREFECT, "work-pool", "create", "gpu", "--type", "process"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert created.returncode == 0, created.stderr
        worker = subprocess.Popen([*PREFECT, "worker", "start", "--pool", "gpu"], env=env,
                                  cwd=tmp_path, stdout=open(tmp_path / "worker.log", "w"),
                                  stderr=subprocess.STDOUT,
                                  start_new_session=True)
        yield api, env
    finally:
        if worker is not None:
            stop_process_group(worker)
        stop_process_group(server)


def _run_and_wait(api: str, env: dict, deployment: str, timeout: float = 300) -> dict:
    out = subprocess.run([*PREFECT, "deployment", "run", deployment], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _get(f"{api}/flow_runs/{run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not finish: {run['state']}")


def test_deploy_schedule_worker_run_and_gate(tmp_path: Path, prefect_stack) -> None:
    api, env = prefect_stack
    heart_csv(tmp_path / "heart.csv", rows=300)
    spec = heart_spec(tmp_path / "spec.yaml", epochs=15)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**env, "MLFLOW_TRACKING_URI": store}

    deployed = cli("deploy", str(spec), "--cron", "0 3 * * 1", "--pool", "gpu", "--name",
                   "nightly", "--timezone", "Europe/Berlin", env=env, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    again = cli("deploy", str(spec), "--cron", "0 3 * * 1", "--pool", "gpu", "--name",
                "nightly", "--timezone", "Europe/Berlin", env=env, cwd=tmp_path)
    assert again.returncode == 0  # idempotent update
    dep = _get(f"{api}/deployments/name/heartflow-retrain/nightly")
    assert dep["work_pool_name"] == "gpu"
    assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["0 3 * * 1"]
    assert dep["schedules"][0]["schedule"]["timezone"] == "Europe/Berlin"
    assert dep["job_variables"]["env"]["MLFLOW_TRACKING_URI"] == store
    assert dep["entrypoint"] == "heartflow.pipelines.retraining.retrain_flow"

    first = _run_and_wait(api, env, "heartflow-retrain/nightly")
    assert first["state"]["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    os.environ["MLFLOW_TRACKING_URI"] = store
    assert registry.alias_version("heart-test", "champion") == "1"

    # Unchanged data and spec: the retraining run skips training; the champion stays.
    second = _run_and_wait(api, env, "heartflow-retrain/nightly")
    assert second["state"]["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient()
    assert len(client.search_model_versions("name='heart-test'")) == 1
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].data.tags["heartflow.deployment"] == "nightly"

    # New rows change the data hash: a real retrain, gated against the champion.
    first = pd.read_csv(tmp_path / "heart.csv", dtype=str, keep_default_na=False)
    heart_csv(tmp_path / "heart.csv", rows=320, seed=5)
    third = _run_and_wait(api, env, "heartflow-retrain/nightly")
    assert third["state"]["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    versions = client.search_model_versions("name='heart-test'")
    assert len(versions) == 2
    v2 = client.get_model_version("heart-test", "2")
    assert v2.tags["heartflow.promotion.reason"]  # the decision is recorded either way
    # Why each retraining ran, from the evidence: no champion, then the champion monitored
    # on the new rows (its monitoring run recorded in heart-test-monitoring).
    v1_run = client.get_run(client.get_model_version("heart-test", "1").run_id)
    assert v1_run.data.tags["heartflow.retrain.reason"] == "no champion yet"
    reason = client.get_run(v2.run_id).data.tags["heartflow.retrain.reason"]
    assert reason.startswith(("new rows, no drift", "drift:")), reason
    monitored = client.get_experiment_by_name("heart-test-monitoring")
    assert monitored is not None and client.search_runs([monitored.experiment_id])
    # The expected champion, computed here: both versions scored with scikit-learn's
    # ROC AUC on the gate's rows (margin 0 and rule point in this spec): the new run's test
    # rows, read from its own split manifest (one line per row of the file, in file order),
    # less the rows version 1 trained or validated on (its manifest, against the first file,
    # compared by content).
    from mlflow.artifacts import download_artifacts
    from sklearn.metrics import roc_auc_score

    import heartflow as hf
    from heartflow.data.split import row_keys, split_rows

    def manifest(version: str) -> pd.DataFrame:
        run_id = client.get_model_version("heart-test", version).run_id
        return pd.read_csv(download_artifacts(run_id=run_id,
                                              artifact_path="split/manifest.csv"), dtype=str)

    rows = pd.read_csv(tmp_path / "heart.csv")
    text = pd.read_csv(tmp_path / "heart.csv", dtype=str, keep_default_na=False)
    new, old = manifest("2"), manifest("1")
    assert len(new) == len(rows) and len(old) == len(first)
    test = np.flatnonzero(new["part"].to_numpy() == "test")
    # The same rows by the split's own rule, on the same typed-cell keys the run uses.
    keyed = split_rows(rows["target"].to_numpy(), hf.load_spec(spec).spec.data.split, True,
                       keys=row_keys(text)).test
    assert sorted(keyed) == sorted(test)
    seen = first[(old["part"] != "test").to_numpy()]
    seen_before = text.iloc[test].merge(seen.drop_duplicates(), how="left", indicator=True)
    fair = test[(seen_before["_merge"] == "left_only").to_numpy()]
    assert int(v2.tags["heartflow.promotion.gate_rows"]) == len(fair)
    assert int(v2.tags["heartflow.promotion.excluded_rows"]) == len(test) - len(fair)
    auc = {v: roc_auc_score(rows["target"].iloc[fair], hf.load_model(
        f"models:/heart-test/{v}").predict(rows.iloc[fair])["probability"]) for v in "12"}
    expected = "2" if auc["2"] > auc["1"] else "1"
    assert registry.alias_version("heart-test", "champion") == expected
    assert (v2.tags["heartflow.promotion.promoted"] == "True") == (expected == "2")

    listed = cli("deployments", "--json", env=env, cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert rows[0]["name"] == "heartflow-retrain/nightly" and rows[0]["pool"] == "gpu"
    assert rows[0]["last_run"] == "Completed" and "heart-test v2" in rows[0]["champion"]
    # The shipped prefect.yaml deploys the same flow with Prefect's own CLI.
    from tests.conftest import ROOT

    yaml_env = {**env, "HEARTFLOW_PROJECT_DIR": str(ROOT), "HEARTFLOW_DATA_DIR": str(tmp_path)}
    shipped = subprocess.run([*PREFECT, "--no-prompt", "deploy", "--all"], cwd=ROOT,
                             env=yaml_env, capture_output=True, text=True, timeout=180)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    weekly = _get(f"{api}/deployments/name/heartflow-retrain/heart_16-weekly")
    assert weekly["schedules"][0]["schedule"]["cron"] == "0 3 * * 1"
    assert weekly["work_pool_name"] == "gpu"
    assert weekly["parameters"] == {"spec_path": "specs/heart_16.yaml"}
    subprocess.run([*PREFECT, "--no-prompt", "deployment", "delete",
                    "heartflow-retrain/heart_16-weekly"], env=env, capture_output=True,
                   timeout=60)

    removed = cli("undeploy", "nightly", env=env, cwd=tmp_path)
    assert removed.returncode == 0
    assert json.loads(cli("deployments", "--json", env=env, cwd=tmp_path).stdout) == []


def test_deploy_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    heart_csv(tmp_path / "heart.csv", rows=50)
    spec = heart_spec(tmp_path / "spec.yaml")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run([sys.executable, "-m", "heartflow", "deploy", str(spec), "--cron",
                          "0 3 * * *"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "prefect server start" in out.stderr and "PREFECT_API_URL" in out.stderr


def test_tracking_server_stopped_mid_flow_retries_then_fails_clearly(tmp_path: Path,
                                                                     prefect_server) -> None:
    """A real `mlflow server` (sqlite backend) is stopped while the network trains."""
    port = free_port()
    db = tmp_path / "server.db"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--default-artifact-root", str(tmp_path / "server-artifacts")],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/health", server)
        heart_csv(tmp_path / "heart.csv", rows=3000)
        spec = heart_spec(tmp_path / "spec.yaml", epochs=300, hidden=[32])
        run = subprocess.Popen([sys.executable, "-m", "heartflow", "run", str(spec)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI":
                                                  f"http://127.0.0.1:{port}",
                                                  # heartflow's retries are under test,
                                                  # not MLflow's own HTTP retries
                                                  "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                                                  # a server store: the team's row-key secret
                                                  "HEARTFLOW_ROW_KEY_SECRET": "test-" + "0" * 32})
        while True:
            line = run.stderr.readline()
            assert line or run.poll() is None, "run ended before training"
            if line.startswith("epoch"):
                break
        stop_process_group(server)  # the tracking server goes away mid-training
        _out, err = run.communicate(timeout=300)
    finally:
        stop_process_group(server)
    assert run.returncode == 4, err
    assert "transient failure" in err and "retrying" in err
    assert "stopped answering after retries" in err and "nothing was registered" in err
    assert "Traceback" not in err
    from mlflow import MlflowClient

    store = MlflowClient(tracking_uri=f"sqlite:///{db}")
    assert store.search_registered_models() == []
    runs = store.search_runs([e.experiment_id for e in store.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # could not be told otherwise
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    fixed = cli("stale-runs", "--mark-failed", cwd=tmp_path)
    assert runs[0].info.run_id in fixed.stdout


def test_deploy_keeps_the_spec_text_and_a_quoted_relative_source_resolves(
        tmp_path: Path, prefect_server, monkeypatch) -> None:
    """The deployed spec is the file's text unchanged (quotes, comments); the data is found
    from the spec's absolute path, whatever folder the worker runs in."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from heartflow.data.sources import check_spec_source, resolve_source
    from heartflow.spec.loading import load_spec_text

    project = tmp_path / "project"
    project.mkdir()
    heart_csv(project / "heart.csv", rows=60)
    spec = heart_spec(project / "spec.yaml")
    text = spec.read_text().replace("  source: heart.csv",
                                    '  source: "heart.csv"   # quoted, with a comment')
    spec.write_text(text)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="quoted-pool", type="process"))
    out = cli("deploy", str(spec), "--cron", "0 4 * * *", "--pool", "quoted-pool", "--name",
              "quoted", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("heartflow-retrain/quoted")
    params = deployment.parameters
    assert params["spec_text"] == text  # byte for byte: no text replacement
    worker_dir = tmp_path / "elsewhere"
    worker_dir.mkdir()
    monkeypatch.chdir(worker_dir)
    loaded = load_spec_text(params["spec_text"], params["spec_path"])
    check_spec_source(loaded)
    assert resolve_source(loaded.spec.data.source, loaded.base_dir).path == \
        (project / "heart.csv").resolve()
