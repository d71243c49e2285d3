"""Scheduled retraining: re-read the data, skip if nothing changed, else train and gate.

Deployed with `heartflow deploy` (or `prefect deploy` with prefect.yaml) and run by a
Prefect worker. The spec travels as a flow parameter; the tracking URI and data folder
reach the worker as the deployment's environment (job variables).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from heartflow.pipelines.task_options import RETRYING


@task(name="fingerprint-data", **RETRYING)
def fingerprint_task(loaded) -> str:
    """Resolve (download if needed) the data source and hash its bytes."""
    from heartflow.data.sources import file_sha256, resolve_source

    resolved = resolve_source(loaded.spec.data.source, loaded.base_dir, loaded.spec.data.sha256)
    return file_sha256(resolved.path)


@task(name="check-cache", **RETRYING)
def cached_champion(model_name: str, data_sha: str, resolved_hash: str) -> str | None:
    """The champion version if it was trained on these exact data and spec, else None."""
    from heartflow.tracking import registry
    from heartflow.tracking.runs import client

    version = registry.alias_version(model_name, registry.CHAMPION)
    if version is None:
        return None
    tags = client().get_model_version(model_name, version).tags
    same = (tags.get("heartflow.data_sha256") == data_sha
            and tags.get("heartflow.spec_hash") == resolved_hash)
    return version if same else None


@flow(name="heartflow-retrain", persist_result=False, validate_parameters=False)
def retrain_flow(spec_text: str | None = None, spec_path: str = "deployed-spec.yaml",
                 force: bool = False, plugins: list[str] | None = None) -> dict[str, Any]:
    """Retrain on the newest data and promote only a better model.

    ``plugins`` are modules the worker imports first (custom activations); they must be
    importable there.
    """
    import sys

    from heartflow.data.sources import check_spec_source
    from heartflow.model.plugins import load_plugins
    from heartflow.pipelines.training import execute
    from heartflow.spec.loading import load_spec, load_spec_text
    from heartflow.tracking.run_record import spec_hash

    load_plugins(plugins)
    loaded = load_spec_text(spec_text, spec_path) if spec_text else load_spec(spec_path)
    check_spec_source(loaded)
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
    outcome = execute(loaded, verbose=False, extra_tags=_deployment_tags(resolved_hash))
    return {"skipped": False, **outcome.as_dict()}


def _deployment_tags(resolved_hash: str) -> dict[str, str]:
    tags = {"heartflow.spec_hash": resolved_hash}
    try:
        from prefect.runtime import deployment, flow_run

        if deployment.name:
            tags["heartflow.deployment"] = str(deployment.name)
        if flow_run.id:
            tags["heartflow.prefect_flow_run"] = str(flow_run.id)
    except Exception:
        pass
    return tags
