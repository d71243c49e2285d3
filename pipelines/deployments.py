"""Prefect deployments of the retraining flow: create/update, list, remove.

Deployments live on the Prefect server named by ``PREFECT_API_URL``; process
workers on a work pool (``prefect worker start --pool gpu``) run them. The flow is
referenced by module path (``heartflow.pipelines.retraining:retrain_flow``), so a
worker only needs heartflow installed; the spec travels as a parameter and the
tracking URI and data folder as job variables (environment).
"""

from __future__ import annotations

import os
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL

from heartflow.errors import HeartflowError
from heartflow.pipelines.retraining import retrain_flow
from heartflow.pipelines.specs import runnable_spec
from heartflow.pipelines.updating import drift_update_flow
from heartflow.tracking import names as N
from heartflow.tracking.registry import version_tags
from heartflow.tracking.store import client, tracking_uri

FLOW_NAME = "heartflow-retrain"
ENTRYPOINT = "heartflow.pipelines.retraining.retrain_flow"
DRIFT_FLOW_NAME = "heartflow-update-on-drift"
FLOW_NAMES = (FLOW_NAME, DRIFT_FLOW_NAME)
# The drift event's fields a triggered run receives (Jinja over the event; a single
# expression keeps its JSON type, so a missing site arrives as None).
DRIFT_PARAMETERS = {
    "model_uri": "{{ event.payload.model_uri }}",
    "version": "{{ event.resource['heartflow.model.version'] }}",
    "batch": "{{ event.payload.batch.location }}",
    "batch_sha256": "{{ event.payload.batch.sha256 }}",
    "site": "{{ event.payload.batch.site }}",
    "event_id": "{{ event.id | string }}",
}


def require_server() -> str:
    """The Prefect API URL, or a clear error saying how to get one."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        url = PREFECT_API_URL.value()
    if not url:
        raise HeartflowError(
            "no Prefect server configured: deployments live on a server. Start one with "
            "`prefect server start` (then `export PREFECT_API_URL=http://127.0.0.1:4200/api`) "
            "or set PREFECT_API_URL to your team's server")
    return url


def require_pool(pool: str) -> None:
    """A clear error unless the work pool exists on the Prefect server."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except Exception:
            raise HeartflowError(f"work pool {pool!r} does not exist on the Prefect server; "
                                 f"create it with `prefect work-pool create {pool} --type "
                                 f"process` and start workers with `prefect worker start "
                                 f"--pool {pool}`") from None


def job_environment() -> dict[str, str]:
    """Environment the worker's flow runs need: tracking URI and data folder."""
    env = {}
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + os.path.abspath(uri.removeprefix("sqlite:///"))
    env["MLFLOW_TRACKING_URI"] = uri
    for key in ("HEARTFLOW_DATA_DIR", "HEARTFLOW_CACHE_DIR"):
        if os.environ.get(key):
            env[key] = os.path.abspath(os.environ[key])
    return env


def deploy(spec_path: str, cron: str, pool: str = "default", name: str | None = None,
           timezone: str | None = None, env: dict[str, str] | None = None,
           plugins: list[str] | None = None) -> dict[str, Any]:
    """Create or update (same name: idempotent) the retraining deployment for a spec."""
    loaded = runnable_spec(path=spec_path, plugins=plugins)
    require_server()
    name = name or loaded.spec.name
    require_pool(pool)
    deployment = retrain_flow.to_deployment(
        name=name, schedules=[Cron(cron, timezone=timezone or "UTC")],
        # The spec travels as its text, unchanged; its absolute path beside it is where a
        # relative data.source is resolved from (the worker runs in another folder).
        parameters={"spec_text": loaded.text, "spec_path": os.path.abspath(spec_path),
                    "plugins": list(plugins or [])},
        work_pool_name=pool, job_variables={"env": {**job_environment(), **(env or {})}},
        entrypoint_type=EntrypointType.MODULE_PATH, tags=["heartflow", loaded.spec.name],
        description=f"Scheduled retraining of {loaded.spec.name} ({loaded.spec.model_name})")
    deployment_id = deployment.apply(work_pool_name=pool)
    return {"id": str(deployment_id), "name": f"{FLOW_NAME}/{name}", "cron": cron,
            "timezone": timezone or "UTC", "pool": pool, "model": loaded.spec.model_name}


def drift_trigger(model_name: str) -> DeploymentEventTrigger:
    """Runs the deployment on each ``heartflow.model.drift`` event about a version of
    ``model_name`` (the event's resource label ``heartflow.model.name``), one run per event."""
    return DeploymentEventTrigger(
        name=f"{model_name} drift", description=f"update {model_name} when a batch drifts",
        expect={N.DRIFT_EVENT}, match={"heartflow.model.name": model_name},
        threshold=1, within=0, parameters=dict(DRIFT_PARAMETERS))


def deploy_on_drift(spec_path: str, pool: str = "default", name: str | None = None,
                    env: dict[str, str] | None = None,
                    plugins: list[str] | None = None) -> dict[str, Any]:
    """Create or update (same name: idempotent) the deployment that updates the spec's
    model on a drifted batch, triggered by its ``heartflow.model.drift`` events."""
    loaded = runnable_spec(path=spec_path, plugins=plugins)
    model = loaded.spec.model_name
    if not loaded.spec.register.enabled or not model:
        raise HeartflowError(f"{spec_path}: register is off, so no model version drifts; "
                             "an update on drift needs register.model_name")
    require_server()
    name = name or f"{model}-update-on-drift"
    require_pool(pool)
    deployment = drift_update_flow.to_deployment(
        name=name, triggers=[drift_trigger(model)],
        parameters={"spec_text": loaded.text, "spec_path": os.path.abspath(spec_path),
                    "plugins": list(plugins or [])},
        work_pool_name=pool, job_variables={"env": {**job_environment(), **(env or {})}},
        entrypoint_type=EntrypointType.MODULE_PATH, tags=["heartflow", loaded.spec.name],
        description=f"Update {model} on each drifted batch (heartflow.model.drift): "
                    "closed testing, then the promotion gate")
    deployment_id = deployment.apply(work_pool_name=pool)
    return {"id": str(deployment_id), "name": f"{DRIFT_FLOW_NAME}/{name}", "pool": pool,
            "model": model, "trigger": trigger_text(N.DRIFT_EVENT, model)}


def trigger_text(event: str, model: str) -> str:
    """How ``heartflow deployments`` shows a drift trigger."""
    return f"on {event} of {model}"


def _triggers(client: Any, deployment_id: Any) -> list[str]:
    """The deployment's event triggers (the automations it owns), as text."""
    try:
        automations = client.read_resource_related_automations(
            f"prefect.deployment.{deployment_id}")
    except Exception:
        return []
    out = []
    for automation in automations:
        trigger = automation.trigger
        events = sorted(getattr(trigger, "expect", None) or [])
        match = getattr(trigger, "match", None)
        label = match.root.get("heartflow.model.name") if match is not None else None
        if events:
            out.append(trigger_text(", ".join(events), str(label)) if label
                       else f"on {', '.join(events)}")
    return out


def list_deployments() -> list[dict[str, Any]]:
    """heartflow deployments with schedule, pool, last run state and its champion."""
    require_server()
    rows = []
    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOW_NAMES))))
        flows = {f.id: f.name for f in client.read_flows(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOW_NAMES))))}
        for dep in deployments:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=20)
            started = [r for r in runs if r.start_time is not None]
            last = max(started, key=lambda r: r.start_time) if started else None
            schedules = [getattr(s.schedule, "cron", None) or str(s.schedule)
                         for s in dep.schedules or []]
            flow = flows.get(dep.flow_id, FLOW_NAME)
            if flow == DRIFT_FLOW_NAME:  # no schedule: its trigger says when it runs
                schedules = _triggers(client, dep.id) or ["(no trigger)"]
            rows.append({"name": f"{flow}/{dep.name}", "schedules": schedules,
                         "pool": dep.work_pool_name or "",
                         "last_run": last.state_name if last else "",
                         "last_run_at": str(last.start_time or "") if last else "",
                         "champion": _champion_from(dep.name)})
    return rows


def _champion_from(deployment_name: str) -> str:
    """The latest registered version produced by this deployment, and its verdict."""
    try:
        c = client()
        experiments = [e.experiment_id for e in c.search_experiments()]
        if not experiments:
            return ""
        runs = c.search_runs(experiments,
                             filter_string=f"tags.`{N.DEPLOYMENT}` = '{deployment_name}'",
                             order_by=["attribute.start_time DESC"], max_results=1)
        if not runs:
            return ""
        tags = runs[0].data.tags
        model, version = tags.get(N.REGISTERED_MODEL, ""), tags.get(N.REGISTERED_VERSION, "")
        # The version's own tags are the decision as it stands (an approval is recorded there)
        now = {**tags, **version_tags(model, version)} if model and version else tags
        verdict = ("champion" if now.get(N.PROMOTED) == "True" else "awaiting approval"
                   if now.get(N.promotion("awaiting_approval")) == "True" else "not promoted")
        return f"{model} v{version} ({verdict})"
    except Exception:
        return ""


def remove(name: str) -> None:
    """Delete a deployment (``NAME``, ``heartflow-retrain/NAME`` or
    ``heartflow-update-on-drift/NAME``) and the drift trigger it owns."""
    require_server()
    candidates = [name] if "/" in name else [f"{flow}/{name}" for flow in FLOW_NAMES]
    with get_client(sync_client=True) as client:
        for full in candidates:
            try:
                dep = client.read_deployment_by_name(full)
            except Exception:
                continue
            client.delete_resource_owned_automations(f"prefect.deployment.{dep.id}")
            client.delete_deployment(dep.id)
            return
    raise HeartflowError(f"no deployment named {' or '.join(map(repr, candidates))}; "
                         "heartflow deployments lists them")
