"""Scheduled retraining on real Prefect parts: `prefect server start`, a process work pool,
`prefect worker start`, `heartflow deploy`, and the promotion gate across two runs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from heartflow import registry
from tests.conftest import cli, heart_csv, heart_spec

pytestmark = pytest.mark.slow
PREFECT = [sys.executable, "-m", "prefect"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} never became healthy")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def prefect_stack(tmp_path: Path):
    """A real Prefect server and a process worker on pool 'gpu', stopped by PID at the end."""
    port = _port()
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
        _wait_healthy(api, server)
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
            _stop(worker)
        _stop(server)


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
    heart_csv(tmp_path / "heart.csv", rows=320, seed=5)
    third = _run_and_wait(api, env, "heartflow-retrain/nightly")
    assert third["state"]["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    versions = client.search_model_versions("name='heart-test'")
    assert len(versions) == 2
    v2 = client.get_model_version("heart-test", "2")
    assert v2.tags["heartflow.promotion.reason"]  # the decision is recorded either way
    expected = "2" if v2.tags["heartflow.promotion.promoted"] == "True" else "1"
    assert registry.alias_version("heart-test", "champion") == expected

    listed = cli("deployments", "--json", env=env, cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert rows[0]["name"] == "heartflow-retrain/nightly" and rows[0]["pool"] == "gpu"
    assert rows[0]["last_run"] == "Completed" and "heart-test v2" in rows[0]["champion"]
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
