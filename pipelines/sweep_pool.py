"""`heartflow sweep --pool NAME`: each trial a flow run for a Prefect work pool's workers.

Any number of ``prefect worker start --pool NAME`` processes, on any machines that have
heartflow installed and reach the same Prefect and MLflow servers, pick the trials up.
The trial flow is referenced by module path (no code upload); the sweep's spec travels
as a parameter, the tracking URI and data folder as job variables. Each trial writes its
outcome as JSON into the parent MLflow run (``trials/trial-NN.json``): the servers are
the only thing the sweep and its workers share. The parent waits for every flow run,
reads the outcomes back, and tags each child run with the worker that ran it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from prefect import flow

from heartflow.pipelines.deployments import job_environment, require_pool, require_server
from heartflow.pipelines.results import TrialResult
from heartflow.pipelines.trials import TrialPlan, run_trial
from heartflow.tracking import names as N
from heartflow.tracking.store import client

TRIAL_FLOW = "heartflow-sweep-trial"
ENTRYPOINT = "heartflow.pipelines.sweep_pool.sweep_trial_flow"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _artifact(number: int) -> str:
    return f"trials/trial-{number:02d}.json"


@flow(name=TRIAL_FLOW, persist_result=False, validate_parameters=False)
def sweep_trial_flow(trial: dict[str, Any]) -> None:
    """One trial of a sweep, run by a work pool's worker; the outcome goes to MLflow."""
    plan = TrialPlan(**trial)
    result = run_trial(plan)
    client().log_text(plan.parent_run_id, json.dumps(result.as_dict(), default=str),
                      _artifact(plan.number))


def ensure_deployment(pool: str) -> str:
    """Create or update the trial deployment for ``pool``; returns its name."""
    from prefect.deployments.runner import EntrypointType  # lazy: only with --pool

    require_server()
    require_pool(pool)
    deployment = sweep_trial_flow.to_deployment(
        name=pool, work_pool_name=pool, job_variables={"env": job_environment()},
        entrypoint_type=EntrypointType.MODULE_PATH, tags=["heartflow", "sweep"],
        description="One trial of a heartflow sweep (submitted by `heartflow sweep --pool`)")
    deployment.apply(work_pool_name=pool)
    return f"{TRIAL_FLOW}/{pool}"


def run_on_pool(pool: str, plans: list[TrialPlan], parent_run_id: str,
                on_result: Callable[[TrialResult], TrialResult],
                timeout: float = 6 * 3600, poll: float = 2.0) -> list[TrialResult]:
    """Submit every trial as a flow run of the pool's deployment; gather the outcomes."""
    from prefect.client.orchestration import get_client  # lazy: only with --pool
    from prefect.deployments import run_deployment

    name = ensure_deployment(pool)
    pending = {}
    for plan in plans:
        run = run_deployment(name, parameters={"trial": plan.as_dict()}, timeout=0,
                             as_subflow=False, flow_run_name=f"trial-{plan.number:02d}",
                             tags=["heartflow", "sweep"])
        pending[run.id] = plan
    results = []
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while pending and time.monotonic() < deadline:
            for run_id, plan in list(pending.items()):
                run = client.read_flow_run(run_id)
                if run.state is None or run.state.type.value not in FINAL:
                    continue
                del pending[run_id]
                worker = (run.labels or {}).get("prefect.worker.name", "")
                results.append(on_result(_gathered(plan, run, worker, parent_run_id)))
            if pending:
                time.sleep(poll)
    for plan in pending.values():  # never picked up: no worker on the pool?
        results.append(on_result(TrialResult(
            plan.number, plan.overrides, False, timeout,
            error=f"not run within {timeout:.0f} s: is a worker polling pool {pool!r}?")))
    return results


def _gathered(plan: TrialPlan, run: Any, worker: str, parent_run_id: str) -> TrialResult:
    """The trial's outcome as it wrote it to MLflow, tagged with the worker that ran it."""
    import mlflow.artifacts  # lazy: MLflow

    try:
        result = TrialResult.from_dict(json.loads(mlflow.artifacts.load_text(
            f"runs:/{parent_run_id}/{_artifact(plan.number)}")))
    except Exception:
        return TrialResult(plan.number, plan.overrides, False, 0.0, worker=worker,
                           error=f"flow run {run.id} ended {run.state.name} without an "
                                 "outcome")
    result.worker = worker
    child = result.outcome.run_id if result.outcome else result.run_id
    if child and worker:
        client().set_tag(child, N.WORKER, worker)
    return result
