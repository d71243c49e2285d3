"""The MLflow store: where it is, a client for it, experiments, and the runs page's view.

Everything goes through ``MlflowClient``: the local default is
``sqlite:///<project root>/mlflow.db`` with artifacts in ``mlruns/`` beside it (the project
root: :func:`heartflow.data.sources.project_root`, so a notebook in ``examples/`` and
``heartflow ui`` at the repository root share one store); a team sets
``MLFLOW_TRACKING_URI``.

A team's server authenticates (MLflow's ``basic-auth`` app): heartflow reads credentials
only from MLflow's standard variables (``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``), never prints or records them,
and says before training when they are missing or wrong (:func:`check_reachable`) or lack
a permission the run needs (:func:`check_write_access`); a refusal met later names the
permission (:func:`permission_needed`).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock

from heartflow.data.sources import project_root
from heartflow.errors import HeartflowError, RegistryError, TrackingError
from heartflow.spec.vocabulary import HIGHER_IS_BETTER
from heartflow.tracking import names as N
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


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def default_store_uri() -> str:
    """The local store when nothing names one: ``mlflow.db`` at the project root."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    """The tracking URI MLflow will use: ``MLFLOW_TRACKING_URI``, a URI set with
    ``mlflow.set_tracking_uri``, else :func:`default_store_uri`.

    The default is settled on first use and put in ``MLFLOW_TRACKING_URI``, so MLflow's
    own calls in this process and the worker processes it starts use the same store
    (MLflow's default would be ``mlflow.db`` in the working folder, which for a notebook
    is the notebook's folder).
    """
    import mlflow  # lazy: MLflow costs 1.3 s to import

    if not os.environ.get(TRACKING_URI_ENV) and not mlflow.is_tracking_uri_set():
        os.environ[TRACKING_URI_ENV] = default_store_uri()
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


USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                         "MLFLOW_TRACKING_TOKEN")
WRITE_PERMISSIONS = ("EDIT", "MANAGE")  # MLflow's permissions that may create and change
_SET_CREDENTIALS = (f"set {USERNAME_ENV} and {PASSWORD_ENV} (a user your MLflow admin "
                    "created; see docs/team.md)")


def _server_get(uri: str, path: str, params: dict[str, object]):
    """GET a tracking server's REST endpoint with the standard credentials (never logged)."""
    import requests  # lazy: only for a tracking server

    user, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    token = os.environ.get(TOKEN_ENV)
    auth = (user, password) if user and password else None
    headers = {"Authorization": f"Bearer {token}"} if token and not auth else {}
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or (
        os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true")
    return requests.get(uri.rstrip("/") + path, params=params, auth=auth, headers=headers,
                        timeout=10, verify=verify)


def mlflow_user() -> str | None:
    """The MLflow user the standard variables name (None: no user configured)."""
    return os.environ.get(USERNAME_ENV) or None


def current_user() -> str:
    """Who is acting, for the record: the MLflow user, else the operating-system user."""
    with contextlib.suppress(Exception):
        return mlflow_user() or getpass.getuser()
    return "unknown"


def check_reachable() -> None:
    """Fail fast (before any training) when the tracking store cannot be reached, or a
    tracking server refuses this process's credentials (missing or wrong)."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    import requests  # lazy: only for a tracking server

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5)
        answer = _server_get(uri, "/api/2.0/mlflow/experiments/search", {"max_results": 1})
    except requests.RequestException as exc:
        raise TrackingError(f"the MLflow tracking server at {redact(uri)} cannot be reached "
                            f"({type(exc).__name__}). Start it (mlflow server ...) or unset "
                            "MLFLOW_TRACKING_URI to use the local store") from None
    if answer.status_code == 401:
        given = "refused the credentials given" if mlflow_user() or os.environ.get(
            TOKEN_ENV) else "asks for credentials and none are set"
        raise TrackingError(f"the MLflow tracking server at {redact(uri)} {given}: "
                            f"credentials missing or wrong: {_SET_CREDENTIALS}")
    if answer.status_code == 403:
        raise TrackingError(f"MLflow user {mlflow_user()!r} may not read experiments on "
                            f"{redact(uri)}: it needs READ permission; ask your MLflow admin")


def check_write_access(experiment: str, model: str | None) -> None:
    """Before training, on a server with authentication: may this user create runs in
    ``experiment`` (EDIT) and versions of ``model`` (EDIT)? A clear error naming the
    permission it lacks, or nothing when it may (or the server cannot say: no
    authentication, an MLflow without the permission API, a resource not created yet,
    which any authenticated user may create)."""
    uri = tracking_uri()
    user = mlflow_user()
    if not uri.startswith(("http://", "https://")) or not user:
        return
    import requests  # lazy: only for a tracking server

    try:
        found = _server_get(uri, "/api/2.0/mlflow/experiments/get-by-name",
                            {"experiment_name": experiment})
        if found.status_code == 403:
            raise permission_error("read experiment " + repr(experiment), "READ",
                                   TrackingError)
        if found.status_code == 200:
            exp_id = found.json()["experiment"]["experiment_id"]
            if _permission(uri, user, "experiment", exp_id) not in (None, *WRITE_PERMISSIONS):
                raise permission_error(f"create runs in experiment {experiment!r}", "EDIT",
                                       TrackingError)
        if model:
            found = _server_get(uri, "/api/2.0/mlflow/registered-models/get", {"name": model})
            if found.status_code == 403 or (found.status_code == 200 and _permission(
                    uri, user, "registered_model", model) not in (None, *WRITE_PERMISSIONS)):
                raise permission_error(f"register versions of model {model!r}", "EDIT",
                                       RegistryError)
    except requests.RequestException:
        return  # reachability was checked; a later refusal still names the permission


def _permission(uri: str, user: str, resource_type: str, resource_id: str) -> str | None:
    """The user's effective permission on a resource (MLflow's auth API), or None when the
    server does not say (no such API)."""
    answer = _server_get(uri, "/api/3.0/mlflow/users/permissions/get", {
        "username": user, "resource_type": resource_type, "resource_id": resource_id})
    if answer.status_code != 200:
        return None
    with contextlib.suppress(ValueError, AttributeError):
        return str(answer.json().get("permission") or "") or None
    return None


def permission_error(action: str, needs: str, error: type[HeartflowError]) -> HeartflowError:
    """The error for an action the server refused (HTTP 403)."""
    who = mlflow_user()
    return error(f"MLflow user {who!r} may not {action}: it needs {needs} permission there, "
                 "which it lacks. Ask your MLflow admin to grant it (docs/team.md), or use "
                 "a user who has it" if who else
                 f"the MLflow tracking server refused to {action} ({needs} permission "
                 f"needed): {_SET_CREDENTIALS}")


def is_permission_denied(exc: BaseException) -> bool:
    """An MLflow refusal for lack of permission (HTTP 403, PERMISSION_DENIED)."""
    return getattr(exc, "error_code", None) == "PERMISSION_DENIED" or getattr(
        getattr(exc, "response", None), "status_code", None) == 403


@contextlib.contextmanager
def permission_needed(action: str, needs: str,
                      error: type[HeartflowError] = TrackingError) -> Iterator[None]:
    """Turn the server's refusal of ``action`` into ``error`` naming the permission."""
    try:
        yield
    except Exception as exc:
        if is_permission_denied(exc):
            raise permission_error(action, needs, error) from None
        raise


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
    and model columns, the ranking, validation, CV and test figures of ``metric``, sorted
    by ``rank_<metric>``, the figure ``heartflow compare`` ranks by (optimism-corrected,
    else CV mean, else validation: development rows). Stored the way MLflow's own
    "share view" stores one (an experiment tag read by ``?viewStateShareKey=``)."""
    rank = f"metrics.`{N.rank_metric(metric)}`"
    columns = [rank, f"metrics.`validation_{metric}`", f"metrics.`cv_{metric}_mean`",
               f"metrics.`test_{metric}`", "attributes.`Dataset`", "attributes.`Source`",
               f"metrics.`test_{metric}_ci_low`", f"metrics.`test_{metric}_ci_high`",
               "attributes.`Models`"]  # (the page draws the first ones: source before bounds)
    state = {"selectedColumns": columns, "columnOrder": columns,
             "orderByKey": rank, "orderByAsc": metric not in HIGHER_IS_BETTER,
             "searchFilter": "", "runsExpanded": {}}
    retrying(client().set_experiment_tag, experiment, f"mlflow.sharedViewState.{VIEW_KEY}",
              json.dumps(state))


def runs_page(base_url: str, experiment: str) -> str:
    """The experiment's runs page in that view."""
    return f"{base_url}/#/experiments/{experiment}/runs?viewStateShareKey={VIEW_KEY}"


