"""The MLflow store: where it is, a client for it, experiments, and the runs page's view.

Everything goes through ``MlflowClient``: the local default is ``sqlite:///<cwd>/mlflow.db``
with artifacts in ``mlruns/`` beside it; a team sets ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock

from heartflow.errors import TrackingError
from heartflow.tracking.retries import retrying


def redact(uri: str) -> str:
    """A URI with any user:password removed, safe to print."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return uri


def tracking_uri() -> str:
    """The tracking URI MLflow will use (MLFLOW_TRACKING_URI or MLflow's default)."""
    import mlflow  # lazy: MLflow costs 1.3 s to import

    return mlflow.get_tracking_uri()


def preload() -> None:
    """Import the store implementation the configured URI needs (opens nothing)."""
    if tracking_uri().startswith("sqlite:"):
        import mlflow.store.model_registry.sqlalchemy_store  # lazy: heavy, sqlite only
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


_READY_STORES: set[str] = set()


def client():
    """An MlflowClient for the configured store (created safely on first use)."""
    from mlflow import MlflowClient  # lazy: MLflow costs 1.3 s to import

    uri = tracking_uri()
    if uri not in _READY_STORES:
        _prepare_store(uri)
        _READY_STORES.add(uri)
    return MlflowClient()


def _prepare_store(uri: str) -> None:
    """Create/migrate a local sqlite store under a file lock.

    Several processes opening a brand-new ``mlflow.db`` at once would race in
    MLflow's schema migrations; the first one creates it while the others wait.
    """
    from mlflow import MlflowClient  # lazy: MLflow costs 1.3 s to import

    if not uri.startswith("sqlite:///"):
        return
    db_path = uri.removeprefix("sqlite:///")
    folder = os.path.dirname(os.path.abspath(db_path)) or "."
    ready = os.path.join(folder, f".{os.path.basename(db_path)}.heartflow-ready")
    if os.path.isfile(db_path) and os.path.isfile(ready):
        return  # created and migrated by an earlier heartflow process
    os.makedirs(folder, exist_ok=True)
    with FileLock(os.path.join(folder, f".{os.path.basename(db_path)}.heartflow-lock")):
        c = MlflowClient()
        c.search_experiments(max_results=1)
        c.search_registered_models(max_results=1)
        with open(ready, "w") as marker:
            marker.write("schema ready\n")


def check_reachable() -> None:
    """Fail fast (before any training) when the tracking store cannot be reached."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    import requests  # lazy: only for a tracking server

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5)
    except requests.RequestException as exc:
        raise TrackingError(f"the MLflow tracking server at {redact(uri)} cannot be reached "
                            f"({type(exc).__name__}). Start it (mlflow server ...) or unset "
                            "MLFLOW_TRACKING_URI to use the local store") from None


# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, token
# usage); heartflow's experiments are model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(name: str) -> str:
    """Id of the experiment called ``name``, created if needed (safe under races), tagged
    as model training for MLflow's UI."""
    c = client()
    found = retrying(c.get_experiment_by_name, name)
    if found is not None:
        if found.tags.get("mlflow.experimentKind") is None:  # made by an older heartflow
            for key, value in EXPERIMENT_KIND.items():
                retrying(c.set_experiment_tag, found.experiment_id, key, value)
        return found.experiment_id
    try:
        return retrying(c.create_experiment, name, artifact_location=_artifact_root(name),
                         tags=EXPERIMENT_KIND)
    except Exception:
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _artifact_root(name: str) -> str | None:
    """For a local sqlite store: ``mlruns/`` beside ``mlflow.db``, whatever the cwd.

    MLflow's default (``./mlruns`` of the current folder) breaks for Prefect workers,
    which run each flow in a temporary folder.
    """
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    folder = Path(os.path.abspath(uri.removeprefix("sqlite:///"))).parent
    return (folder / "mlruns" / name).as_uri()


VIEW_KEY = "heartflow"  # the runs page opened with ?viewStateShareKey=heartflow


def set_default_view(experiment: str, metric: str) -> None:
    """A saved view of the experiment's runs page that shows the work: the dataset, source
    and model columns, the validation, CV and test figures of ``metric``, ranked by the
    validation figure (runs are chosen on development rows). Stored the way MLflow's own
    "share view" stores one (an experiment tag read by ``?viewStateShareKey=``)."""
    columns = [f"metrics.`validation_{metric}`", f"metrics.`cv_{metric}_mean`",
               f"metrics.`test_{metric}`", f"metrics.`test_{metric}_ci_low`",
               f"metrics.`test_{metric}_ci_high`", "attributes.`Dataset`",
               "attributes.`Source`", "attributes.`Models`"]
    state = {"selectedColumns": columns, "columnOrder": columns,
             "orderByKey": f"metrics.`validation_{metric}`", "orderByAsc": False,
             "searchFilter": "", "runsExpanded": {}}
    retrying(client().set_experiment_tag, experiment, f"mlflow.sharedViewState.{VIEW_KEY}",
              json.dumps(state))


def runs_page(base_url: str, experiment: str) -> str:
    """The experiment's runs page in that view."""
    return f"{base_url}/#/experiments/{experiment}/runs?viewStateShareKey={VIEW_KEY}"


