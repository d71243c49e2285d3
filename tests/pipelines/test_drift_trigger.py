"""A deployed model kept honest, end to end on real parts: a Cleveland champion, `heartflow
deploy SPEC --on-drift` on the session's Prefect server, a real process worker, `heartflow
monitor` on the VA file (a drifted batch) emitting `heartflow.model.drift`, the deployment
trigger starting the update flow, and a new version the promotion gate judged, left
challenger under `require_approval` until `heartflow approve`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, cli, heart_csv, stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
MODEL = "uci-cleveland"
POOL = "drift-pool"
DEPLOYMENT = f"heartflow-update-on-drift/{MODEL}-update-on-drift"
TRAIN = {"evaluate.cv": None, "evaluate.subgroups": [], "train.epochs": 40,
         "train.optimizer.learning_rate": 0.01}
# The deployed spec: the team judges updates by log loss and reviews each before it serves.
GATED = ("promote: {metric: log_loss, rule: superior, margin: 0.0, require_approval: true}")


def _flow_runs(deployment_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id])))


def _wait_for_run(deployment_id, timeout: float = 240):
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline:
        runs = _flow_runs(deployment_id)
        if runs and runs[0].state is not None and runs[0].state.is_final():
            return runs
        time.sleep(1)
    raise AssertionError(f"no triggered flow run finished in {timeout:.0f} s: "
                         f"{[(r.name, r.state_name) for r in runs]}")


def test_a_drifted_batch_starts_a_gated_update_on_a_worker(tmp_path: Path, shared_data,
                                                            prefect_server) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from sklearn.metrics import log_loss

    import heartflow as hf
    from heartflow.tracking import registry

    shipped = (ROOT / "specs/uci_cleveland_16.yaml").read_text()
    assert "promote: {metric: roc_auc, rule: superior, margin: 0.0}" in shipped
    assert hf.run(str(ROOT / "specs/uci_cleveland_16.yaml"), overrides=TRAIN).version == "1"
    spec = tmp_path / "cleveland_gated.yaml"
    spec.write_text(shipped.replace("promote: {metric: roc_auc, rule: superior, margin: 0.0}",
                                    GATED))

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    deployed = cli("deploy", str(spec), "--on-drift", "--pool", POOL, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    mine_trigger = "on heartflow.model.drift of uci-cleveland"
    assert mine_trigger in deployed.stdout
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
    assert deployment.entrypoint == "heartflow.pipelines.updating.drift_update_flow"
    assert deployment.parameters["spec_text"] == spec.read_text()
    again = hf.deploy(spec, on_drift=True, pool=POOL)  # the same name: updated, not doubled
    assert again.id == str(deployment.id) and again.trigger == mine_trigger
    with get_client(sync_client=True) as client:
        owned = client.read_resource_related_automations(f"prefect.deployment.{deployment.id}")
    assert [sorted(a.trigger.expect) for a in owned] == [["heartflow.model.drift"]]

    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type",
         "process"], cwd=tmp_path, env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1",
                                        "PREFECT_WORKER_PREFETCH_SECONDS": "5"},
        stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        monitored = cli("monitor", f"models:/{MODEL}@champion", "uci-va", "--site", "va",
                        "--json", cwd=tmp_path)
        assert monitored.returncode == 6, monitored.stderr  # drift found
        report = json.loads(monitored.stdout)
        assert report["drift"] and report["event_id"]
        runs = _wait_for_run(deployment.id)
        after = json.loads(cli("deployments", "--json", cwd=tmp_path).stdout)
    finally:
        stop_process_group(worker)
        # The session's server is shared: the trigger goes with the deployment.
        hf.undeploy(f"{MODEL}-update-on-drift")
        with get_client(sync_client=True) as client:
            client.delete_work_pool(POOL)
            left = client.read_resource_related_automations(
                f"prefect.deployment.{deployment.id}")
    assert left == []
    log = (tmp_path / "worker.log").read_text()[-4000:]

    # One run, started by the trigger for this event, with the event's model and batch.
    assert len(runs) == 1, [(r.name, r.state_name) for r in runs]
    run = runs[0]
    assert run.state.is_completed(), f"{run.state_name}: {run.state.message}\n{log}"
    va = shared_data / "uci-heart" / "processed.va.data"
    assert run.created_by is not None and run.created_by.type == "AUTOMATION"
    assert run.parameters["event_id"] == report["event_id"]
    assert run.parameters["model_uri"] == f"models:/{MODEL}@champion"
    assert run.parameters["version"] == "1"
    assert Path(run.parameters["batch"]).resolve() == va.resolve()
    assert run.parameters["batch_sha256"] == hashlib.sha256(va.read_bytes()).hexdigest()
    assert run.parameters["site"] == "va"

    # A new version, updated from v1 on the VA rows, judged by the gate and kept challenger.
    tags = MlflowClient().get_model_version(MODEL, "2").tags
    assert tags["heartflow.update.from"] == "1" and tags["heartflow.update.site"] == "va"
    assert tags["heartflow.update.method"] in ("intercept", "logistic", "revision")
    assert tags["heartflow.promotion.reason"], "the gate's decision is recorded"
    # the reason says which rows and how the update's risks on them were made
    assert "rows of the drifted batch the champion neither trained nor validated on" in \
        tags["heartflow.promotion.reason"] and "cross-fitted" in tags["heartflow.promotion.reason"]
    print(f"v2: {tags['heartflow.update.method']}; gate: {tags['heartflow.promotion.reason']}")
    assert tags["heartflow.gate.rule"] == "superior"
    assert registry.alias_version(MODEL, "champion") == "1"
    assert registry.alias_version(MODEL, "challenger") == "2"
    # The gate's rows: every VA row with an outcome (Cleveland's model never saw one), and
    # the champion's figure on them is scikit-learn's log loss of v1's risks there.
    names = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
             "oldpeak", "slope", "ca", "thal", "num"]
    rows = pd.read_csv(va, header=None, names=names, dtype=str, keep_default_na=False)
    rows = rows[rows["num"] != "?"].reset_index(drop=True)  # rows with an outcome
    assert int(tags["heartflow.promotion.gate_rows"]) == len(rows)
    assert int(tags["heartflow.promotion.excluded_rows"]) == 0
    risks = hf.load_model(f"models:/{MODEL}/1").predict(rows)["probability"]
    expected = log_loss((rows["num"].astype(int) > 0).astype(int), risks, labels=[0, 1])
    assert float(tags["heartflow.promotion.champion_score"]) == pytest.approx(expected,
                                                                              rel=1e-6)
    # Cleveland's model on VA is miscalibrated (VA's disease rate is far higher): the update
    # passes the gate by log loss, and waits for a person.
    assert tags["heartflow.promotion.awaiting_approval"] == "True", tags
    mine = [d for d in after if d["name"] == DEPLOYMENT]
    assert mine and mine[0]["schedules"] == ["on heartflow.model.drift of uci-cleveland"]
    assert mine[0]["pool"] == POOL and mine[0]["last_run"] == "Completed"
    assert mine[0]["champion"] == f"{MODEL} v2 (awaiting approval)"
    assert tags["heartflow.update.drift_event"] == report["event_id"]
    assert tags["heartflow.prefect_flow_run"] == str(run.id)
    approved = cli("approve", MODEL, "2", "--reason", "reviewed the VA update", cwd=tmp_path)
    assert approved.returncode == 0, approved.stderr
    assert registry.alias_version(MODEL, "champion") == "2"


def test_on_drift_refuses_a_changed_batch(tmp_path: Path, shared_data) -> None:
    """The triggered update checks the batch against the event's sha256 before reading it;
    a copy of a named data set's pinned bytes is read as that data set (its columns)."""
    from heartflow.errors import DataError
    from heartflow.pipelines.updating import check_batch

    batch = heart_csv(tmp_path / "batch.csv", rows=40)
    sha = hashlib.sha256(batch.read_bytes()).hexdigest()
    assert check_batch(str(batch), sha) == str(batch)
    batch.write_bytes(batch.read_bytes() + batch.read_bytes().splitlines(True)[1])
    with pytest.raises(DataError, match="changed since the drift event") as error:
        check_batch(str(batch), sha)
    assert "heartflow monitor" in str(error.value)
    va = tmp_path / "va-copy.data"
    va.write_bytes((shared_data / "uci-heart" / "processed.va.data").read_bytes())
    assert check_batch(str(va), hashlib.sha256(va.read_bytes()).hexdigest()) == "uci-va"


def test_deploy_needs_exactly_one_of_cron_and_on_drift(tmp_path: Path) -> None:
    both = cli("deploy", str(ROOT / "specs/heart_16.yaml"), "--cron", "0 3 * * 1",
               "--on-drift", cwd=tmp_path)
    neither = cli("deploy", str(ROOT / "specs/heart_16.yaml"), cwd=tmp_path)
    assert both.returncode == 1 and "two different deployments" in both.stderr
    assert neither.returncode == 1 and "needs --cron" in neither.stderr
    assert "Traceback" not in both.stderr + neither.stderr
