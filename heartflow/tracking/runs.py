"""MLflow tracking: one experiment per spec, one run per training, explicit run ids.

Everything goes through ``MlflowClient`` with an explicit run id, so tracking
works the same whether Prefect runs a task in this thread or another. A run
that raises ends FAILED; one interrupted (Ctrl-C, SIGTERM) ends KILLED.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from heartflow.errors import TrackingError

MAX_PARAM_LENGTH = 6000


class Interrupted(BaseException):
    """Raised in the main thread when SIGTERM arrives (Ctrl-C raises KeyboardInterrupt)."""

    exit_code = 143


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
    import mlflow

    return mlflow.get_tracking_uri()


def preload() -> None:
    """Import the store implementation the configured URI needs (opens nothing)."""
    if tracking_uri().startswith("sqlite:"):
        import mlflow.store.model_registry.sqlalchemy_store
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Dotted-path parameters from nested dicts/lists (``model.hidden.0.units``)."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        text = json.dumps(data) if isinstance(data, (list, dict)) else str(data)
        out[prefix.rstrip(".")] = text[:MAX_PARAM_LENGTH]
    return out


def _retrying(fn, *args, attempts: int = 8, **kwargs):
    """Call an MLflow client function, retrying briefly on a busy (locked) sqlite store."""
    from heartflow.tracking.transient import is_database_busy

    delay = 0.1
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MLflow wraps sqlite errors in MlflowException
            if attempt == attempts - 1 or not is_database_busy(exc):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    return None


_READY_STORES: set[str] = set()


def client():
    """An MlflowClient for the configured store (created safely on first use)."""
    from mlflow import MlflowClient

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
    from mlflow import MlflowClient

    if not uri.startswith("sqlite:///"):
        return
    from filelock import FileLock

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
    import requests

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
    found = _retrying(c.get_experiment_by_name, name)
    if found is not None:
        if found.tags.get("mlflow.experimentKind") is None:  # made by an older heartflow
            for key, value in EXPERIMENT_KIND.items():
                _retrying(c.set_experiment_tag, found.experiment_id, key, value)
        return found.experiment_id
    try:
        return _retrying(c.create_experiment, name, artifact_location=_artifact_root(name),
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
    from pathlib import Path

    folder = Path(os.path.abspath(uri.removeprefix("sqlite:///"))).parent
    return (folder / "mlruns" / name).as_uri()


VIEW_KEY = "heartflow"  # the runs page opened with ?viewStateShareKey=heartflow


def set_default_view(experiment: str, metric: str) -> None:
    """A saved view of the experiment's runs page that shows the work: the dataset, source
    and model columns, the validation, CV and test figures of ``metric``, ranked by the
    validation figure (runs are chosen on development rows). Stored the way MLflow's own
    "share view" stores one (an experiment tag read by ``?viewStateShareKey=``)."""
    import json

    columns = [f"metrics.`validation_{metric}`", f"metrics.`cv_{metric}_mean`",
               f"metrics.`test_{metric}`", f"metrics.`test_{metric}_ci_low`",
               f"metrics.`test_{metric}_ci_high`", "attributes.`Dataset`",
               "attributes.`Source`", "attributes.`Models`"]
    state = {"selectedColumns": columns, "columnOrder": columns,
             "orderByKey": f"metrics.`validation_{metric}`", "orderByAsc": False,
             "searchFilter": "", "runsExpanded": {}}
    _retrying(client().set_experiment_tag, experiment, f"mlflow.sharedViewState.{VIEW_KEY}",
              json.dumps(state))


def runs_page(base_url: str, experiment: str) -> str:
    """The experiment's runs page in that view."""
    return f"{base_url}/#/experiments/{experiment}/runs?viewStateShareKey={VIEW_KEY}"


class Recorder:
    """Logs to one MLflow run."""

    def __init__(self, run_id: str, experiment: str) -> None:
        self.run_id, self.experiment_id = run_id, experiment
        self.client = client()

    def params(self, params: dict[str, str]) -> None:
        """Log parameters in batches of 100."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            _retrying(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def tags(self, tags: dict[str, Any]) -> None:
        """Set tags (values as text)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            _retrying(self.client.log_batch, self.run_id, tags=items[i:i + 100])

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        """Log metrics at one step."""
        self.history({k: [v] for k, v in values.items()}, first_step=step)

    def history(self, series: dict[str, list[float]], first_step: int = 1) -> None:
        """Log per-epoch series as metric histories (step = epoch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, first_step + i)
                 for key, values in series.items() for i, value in enumerate(values)
                 if value == value]  # skip NaN
        for i in range(0, len(items), 1000):
            _retrying(self.client.log_batch, self.run_id, metrics=items[i:i + 1000])

    def dataset(self, name: str, digest: str, source: str, schema: dict[str, Any],
                rows: int, context: str = "training") -> None:
        """Record the run's data as an MLflow dataset input (the UI's Dataset column)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        source_type = "http" if source.startswith(("http://", "https://")) else "local"
        dataset = Dataset(name=name, digest=digest[:36], source_type=source_type,
                          source=json.dumps({"uri": source}), schema=json.dumps(schema),
                          profile=json.dumps({"num_rows": rows}))
        _retrying(self.client.log_inputs, self.run_id, datasets=[DatasetInput(
            dataset, tags=[InputTag(key="mlflow.data.context", value=context)])])

    def text(self, text: str, artifact_file: str) -> None:
        """Store a text artifact."""
        _retrying(self.client.log_text, self.run_id, text, artifact_file)

    def directory(self, path: str, artifact_path: str | None = None) -> None:
        """Store a folder of files as artifacts."""
        _retrying(self.client.log_artifacts, self.run_id, path, artifact_path)


@contextlib.contextmanager
def tracked_run(experiment: str, run_name: str, tags: dict[str, str] | None = None,
                parent_run_id: str | None = None) -> Iterator[Recorder]:
    """Create a run; end it FINISHED, FAILED (error) or KILLED (interrupted)."""
    exp = experiment_id(experiment)
    all_tags = {"mlflow.runName": run_name, **owner_tags(), **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    c = client()
    run = _retrying(c.create_run, exp, run_name=run_name, tags=all_tags)
    recorder = Recorder(run.info.run_id, exp)
    try:
        yield recorder
    except BaseException as exc:
        with contextlib.suppress(Exception):
            exc.heartflow_run_id = recorder.run_id  # type: ignore[attr-defined]
        if is_interrupt(exc):
            _end(recorder, "KILLED", f"interrupted ({type(exc).__name__})")
            raise
        _end(recorder, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    else:
        _end(recorder, "FINISHED", None)


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, SIGTERM (ours, or Prefect's TerminationSignal), or interpreter exit."""
    return isinstance(exc, (KeyboardInterrupt, Interrupted, SystemExit)) or \
        type(exc).__name__ == "TerminationSignal"


def _terminate(recorder: Recorder, status: str) -> None:
    """End the run. With a tracking server MLflow prints "View run ... at: URL" on
    stdout here; it goes to stderr, so stdout stays the command's own (e.g. --json)."""
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        _retrying(recorder.client.set_terminated, recorder.run_id, status)


def _end(recorder: Recorder, status: str, reason: str | None) -> None:
    with contextlib.suppress(Exception):
        if reason:
            recorder.tags({"heartflow.status_reason": reason[:5000]})
    if status == "FINISHED":
        _terminate(recorder, status)
        return
    try:  # the original error matters more than a failure to record it
        _terminate(recorder, status)
    except Exception as exc:
        import sys

        sys.stderr.write(f"heartflow: could not mark run {recorder.run_id} {status} "
                         f"({type(exc).__name__}); `heartflow stale-runs --mark-failed` "
                         "will once the store is back\n")


def environment_tags() -> dict[str, str]:
    """Versions and git commit, for reproducibility."""
    import importlib.metadata as md
    import subprocess

    tags = {}
    for dist in ("heartflow", "tensorflow", "keras", "mlflow", "prefect"):
        with contextlib.suppress(md.PackageNotFoundError):
            tags[f"heartflow.version.{dist}"] = md.version(dist)
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=os.getcwd())
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    return tags


def _process_start(pid: int) -> str:
    """The start time of a process (guards against reused pids), or '' if it is gone."""
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return ""


def owner_tags() -> dict[str, str]:
    """Which process owns a run, so runs left RUNNING by dead processes can be found."""
    import socket

    pid = os.getpid()
    return {"heartflow.host": socket.gethostname(), "heartflow.pid": str(pid),
            "heartflow.pid_start": _process_start(pid)}


def stale_runs() -> list[dict[str, str]]:
    """RUNNING runs whose owning process on this host no longer exists (psutil)."""
    import socket

    c = client()
    host = socket.gethostname()
    experiments = [e.experiment_id for e in c.search_experiments()]
    out = []
    if not experiments:
        return out
    for run in c.search_runs(experiments, filter_string="attributes.status = 'RUNNING'",
                             max_results=5000):
        tags = run.data.tags
        if tags.get("heartflow.host") != host or not tags.get("heartflow.pid"):
            continue
        pid = int(tags["heartflow.pid"])
        started = _process_start(pid)
        if not started or started != tags.get("heartflow.pid_start", ""):
            out.append({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                        "run_name": run.info.run_name or "", "pid": str(pid)})
    return out


def mark_failed(run_id: str, reason: str) -> None:
    """End a stale run as FAILED with a reason tag."""
    c = client()
    c.set_tag(run_id, "heartflow.status_reason", reason)
    c.set_terminated(run_id, "FAILED")
