"""Scheduled retraining by evidence: re-read the data and skip when nothing changed; else
monitor the champion on the new rows, record why this retraining runs (drift, new rows, no
champion yet, forced), train, and let the gate decide.

Deployed with `heartflow deploy` (or `prefect deploy` with prefect.yaml) and run by a
Prefect worker. The spec travels as a flow parameter; the tracking URI and data folder
reach the worker as the deployment's environment (job variables).
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, task
from prefect.runtime import deployment, flow_run

from heartflow.data.sources import file_sha256, resolve_source
from heartflow.errors import HeartflowError
from heartflow.pipelines.monitoring import monitoring_flow
from heartflow.pipelines.specs import runnable_spec
from heartflow.pipelines.task_options import RETRYING
from heartflow.pipelines.training import execute
from heartflow.spec.loading import LoadedSpec
from heartflow.tracking import names as N
from heartflow.tracking import registry
from heartflow.tracking.run_record import spec_hash


@task(name="fingerprint-data", **RETRYING)
def fingerprint_task(loaded: LoadedSpec) -> str:
    """Resolve (download if needed) the data source and hash its bytes."""
    resolved = resolve_source(loaded.spec.data.source, loaded.base_dir, loaded.spec.data.sha256)
    return file_sha256(resolved.path)


@task(name="check-cache", **RETRYING)
def cached_champion(model_name: str, data_sha: str, resolved_hash: str) -> str | None:
    """The champion version if it was trained on these exact data and spec, else None."""
    version = registry.alias_version(model_name, N.CHAMPION)
    if version is None:
        return None
    tags = registry.version_tags(model_name, version)
    same = (tags.get(N.DATA_SHA256) == data_sha and tags.get(N.SPEC_HASH) == resolved_hash)
    return version if same else None


@flow(name="heartflow-retrain", persist_result=False, validate_parameters=False)
def retrain_flow(spec_text: str | None = None, spec_path: str = "deployed-spec.yaml",
                 force: bool = False, plugins: list[str] | None = None) -> dict[str, Any]:
    """Retrain on the newest data and promote only a better model.

    ``plugins`` are modules the worker imports first (custom activations); they must be
    importable there.
    """
    loaded = runnable_spec(spec_text, spec_path, plugins=plugins)
    data_sha = fingerprint_task(loaded)
    resolved_hash = spec_hash(loaded)
    if not force and loaded.spec.register.enabled:
        version = cached_champion(loaded.spec.model_name, data_sha, resolved_hash)
        if version is not None:
            message = (f"data (sha256 {data_sha[:12]}) and spec unchanged since champion "
                       f"{loaded.spec.model_name} v{version} was trained: training skipped")
            sys.stderr.write(f"heartflow: {message}\n")
            return {"skipped": True, "reason": message, "version": version,
                    "data_sha256": data_sha}
    reason = "forced" if force else why_retrain(loaded)
    sys.stderr.write(f"heartflow: retraining {loaded.spec.name}: {reason}\n")
    outcome = execute(loaded, verbose=False, extra_tags={
        **_deployment_tags(resolved_hash), N.RETRAIN_REASON: reason})
    return {"skipped": False, "retrain_reason": reason, **outcome.as_dict()}


def why_retrain(loaded: LoadedSpec) -> str:
    """Why this retraining runs, from the evidence: the champion monitored on the new data
    (drift, naming what moved), or new rows without drift, or no champion yet. The
    monitoring is its own (sub)flow run and MLflow run, so the evidence is kept."""
    name = loaded.spec.model_name
    champion = registry.alias_version(name, N.CHAMPION)
    if champion is None:
        return "no champion yet"
    resolved = resolve_source(loaded.spec.data.source, loaded.base_dir,
                              loaded.spec.data.sha256)
    try:
        report = monitoring_flow(f"models:/{name}/{champion}", str(resolved.path),
                                 site="retraining")
    except HeartflowError as exc:  # e.g. a champion trained before monitoring references
        return f"new rows (the champion could not be monitored: {exc})"
    if report.drift:
        return f"drift: {report.summary()}"
    return f"new rows, no drift ({report.summary()})"


def _deployment_tags(resolved_hash: str) -> dict[str, str]:
    """The spec hash (the next retraining's cache key) and, on a worker, the deployment
    and flow run that trained this version."""
    tags = {N.SPEC_HASH: resolved_hash}
    if deployment.name:
        tags[N.DEPLOYMENT] = str(deployment.name)
    if flow_run.id:
        tags[N.PREFECT_FLOW_RUN] = str(flow_run.id)
    return tags
