"""Recording one run: a :class:`Recorder` that logs to it, and :func:`tracked_run`, which
ends it FINISHED, FAILED (an error) or KILLED (an interrupt).

Every call names its run id explicitly, so recording works the same whether Prefect runs a
task in this thread or another.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil

from heartflow.errors import Interrupted
from heartflow.tracking import names as N
from heartflow.tracking.retries import retrying
from heartflow.tracking.store import client, experiment_id, permission_needed

MAX_PARAM_LENGTH = 6000


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


class Recorder:
    """Logs to one MLflow run: parameters, tags and metrics go in ``log_batch`` calls of
    MLflow's largest size; inside :meth:`batched` they are held and sent together when the
    block ends (a run's whole recording in a few calls instead of one per step)."""

    def __init__(self, run_id: str, experiment: str) -> None:
        self.run_id, self.experiment_id = run_id, experiment
        self.client = client()
        self._held: dict[str, dict[Any, Any]] = {"params": {}, "tags": {}, "metrics": {}}
        self._depth = 0

    @contextlib.contextmanager
    def batched(self) -> Iterator[Recorder]:
        """Hold parameters, tags and metrics logged in the block; send them when it ends
        (also when it ends by an error: what was recorded stays recorded). Read the run
        back from MLflow only after the block."""
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if not self._depth:
                with contextlib.suppress(Exception):  # the error matters more
                    self.flush()
            raise
        self._depth -= 1
        if not self._depth:
            self.flush()

    def flush(self) -> None:
        """Send what :meth:`batched` holds: up to 100 parameters, 100 tags and 1000 values
        in all per ``log_batch`` call (MLflow's limits)."""
        params, tags, metrics = (list(self._held[k].values())
                                 for k in ("params", "tags", "metrics"))
        for held in self._held.values():
            held.clear()
        while params or tags or metrics:
            p, params = params[:100], params[100:]
            t, tags = tags[:100], tags[100:]
            room = 1000 - len(p) - len(t)
            m, metrics = metrics[:room], metrics[room:]
            retrying(self.client.log_batch, self.run_id, metrics=m, params=p, tags=t)

    def _log(self, kind: str, items: list, key) -> None:
        held = self._held[kind]
        changed = kind == "params" and any(p.key in held and held[p.key].value != p.value
                                           for p in items)
        if changed:  # MLflow refuses a changed parameter: now, as when logged at once
            self.flush()
        elif self._depth:  # the latest value of a key wins, as when logged one by one
            held.update((key(item), item) for item in items)
            return
        size = 1000 if kind == "metrics" else 100
        for i in range(0, len(items), size):
            retrying(self.client.log_batch, self.run_id, **{kind: items[i:i + size]})

    def params(self, params: dict[str, str]) -> None:
        """Log parameters."""
        from mlflow.entities import Param  # lazy: MLflow costs 1.3 s to import

        self._log("params", [Param(k, v) for k, v in params.items()], lambda p: p.key)

    def tags(self, tags: dict[str, Any]) -> None:
        """Set tags (values as text)."""
        from mlflow.entities import RunTag  # lazy: MLflow

        self._log("tags", [RunTag(k, str(v)) for k, v in tags.items()], lambda t: t.key)

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        """Log metrics at one step."""
        self.history({k: [v] for k, v in values.items()}, first_step=step)

    def history(self, series: dict[str, list[float]], first_step: int = 1) -> None:
        """Log per-epoch series as metric histories (step = epoch)."""
        from mlflow.entities import Metric  # lazy: MLflow

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, first_step + i)
                 for key, values in series.items() for i, value in enumerate(values)
                 if value == value]  # skip NaN
        self._log("metrics", items, lambda m: (m.key, m.step))

    def dataset(self, name: str, digest: str, source: str, schema: dict[str, Any],
                rows: int, context: str = "training") -> None:
        """Record the run's data as an MLflow dataset input (the UI's Dataset column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag  # lazy: MLflow

        source_type = "http" if source.startswith(("http://", "https://")) else "local"
        dataset = Dataset(name=name, digest=digest[:36], source_type=source_type,
                          source=json.dumps({"uri": source}), schema=json.dumps(schema),
                          profile=json.dumps({"num_rows": rows}))
        retrying(self.client.log_inputs, self.run_id, datasets=[DatasetInput(
            dataset, tags=[InputTag(key="mlflow.data.context", value=context)])])

    def text(self, text: str, artifact_file: str) -> None:
        """Store a text artifact."""
        retrying(self.client.log_text, self.run_id, text, artifact_file)

    def directory(self, path: str, artifact_path: str | None = None) -> None:
        """Store a folder of files as artifacts; a plots folder's PNGs are also logged as
        MLflow images (:meth:`images`), which the run page shows without a click."""
        retrying(self.client.log_artifacts, self.run_id, path, artifact_path)
        if artifact_path == N.PLOTS_FOLDER:
            self.images(path)

    def images(self, path: str) -> None:
        """Each PNG in ``path`` as an MLflow image keyed ``plots/<name>``: the run page's
        charts show them as image charts in their own "plots" section (``plots/*.png``
        stay where readers find them)."""
        from PIL import Image  # lazy: Pillow, only when plots are logged

        for name in sorted(os.listdir(path)):
            if name.endswith(".png"):
                with Image.open(os.path.join(path, name)) as image:
                    image.load()
                    retrying(self.client.log_image, self.run_id, image.convert("RGB"),
                             key=f"{N.PLOTS_FOLDER}/{name.removesuffix('.png')}", step=0)


@contextlib.contextmanager
def tracked_run(experiment: str, run_name: str, tags: dict[str, str] | None = None,
                parent_run_id: str | None = None) -> Iterator[Recorder]:
    """Create a run; end it FINISHED, FAILED (error) or KILLED (interrupted)."""
    with permission_needed(f"create runs in experiment {experiment!r}", "EDIT"):
        exp = experiment_id(experiment)
        all_tags = {"mlflow.runName": run_name, **owner_tags(), **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        c = client()
        run = retrying(c.create_run, exp, run_name=run_name, tags=all_tags)
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
    with contextlib.redirect_stdout(sys.stderr):
        retrying(recorder.client.set_terminated, recorder.run_id, status)


def _end(recorder: Recorder, status: str, reason: str | None) -> None:
    with contextlib.suppress(Exception):
        if reason:
            recorder.tags({N.STATUS_REASON: reason[:5000]})
    if status == "FINISHED":
        recorder.flush()
        _terminate(recorder, status)
        return
    try:  # the original error matters more than a failure to record it
        with contextlib.suppress(Exception):
            recorder.flush()
        _terminate(recorder, status)
    except Exception as exc:
        sys.stderr.write(f"heartflow: could not mark run {recorder.run_id} {status} "
                         f"({type(exc).__name__}); `heartflow stale-runs --mark-failed` "
                         "will once the store is back\n")


def environment_tags() -> dict[str, str]:
    """Versions and git commit, for reproducibility."""
    tags = {}
    for dist in ("heartflow", "tensorflow", "keras", "mlflow", "prefect"):
        with contextlib.suppress(md.PackageNotFoundError):
            tags[N.library_version(dist)] = md.version(dist)
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=os.getcwd())
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    return tags


def process_start(pid: int) -> str:
    """The start time of a process (guards against reused pids), or '' if it is gone."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return ""


def owner_tags() -> dict[str, str]:
    """Which process owns a run, so runs left RUNNING by dead processes can be found."""
    pid = os.getpid()
    return {N.HOST: socket.gethostname(), N.PID: str(pid), N.PID_START: process_start(pid)}


