"""The Python API, for notebooks and scripts; the `heartflow` command is a thin layer over it.

    import heartflow as hf
    spec = hf.load_spec("specs/heart_16.yaml", overrides={"model.hidden.0.units": 8})
    result = hf.run(spec)                       # or hf.run(spec, data=frame)
    result.metrics, result.model_uri            # shown as a table in Jupyter
    model = hf.load_model("models:/heart-disease@champion")
    model.predict(patients)                     # raw records in, probabilities out

Runs go through the same Prefect flow and MLflow store as the CLI. Importing this
module imports no TensorFlow, MLflow or Prefect; the first run does.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from heartflow.model.scorer import Scorer
    from heartflow.pipelines.results import RunOutcome, TrialResult
    from heartflow.spec.loading import LoadedSpec
    from heartflow.spec.sweep import Sweep

SpecLike = "str | os.PathLike[str] | Mapping[str, Any] | LoadedSpec"


def load_spec(spec: str | os.PathLike[str] | Mapping[str, Any] | LoadedSpec,
              overrides: Mapping[str, Any] | None = None, *,
              plugins: list[str] | None = None) -> LoadedSpec:
    """A validated spec from a YAML file or a dict, with dotted-path overrides applied.

    Errors (:class:`heartflow.errors.SpecError`) name the file, line, column and field;
    the data source must exist. ``plugins`` are modules to import first (activations).
    """
    import yaml

    from heartflow.model.plugins import load_plugins
    from heartflow.pipelines.specs import runnable_spec
    from heartflow.spec.loading import LoadedSpec

    if isinstance(spec, LoadedSpec) and not overrides:
        load_plugins(plugins)
        return spec  # already validated and checked
    if isinstance(spec, LoadedSpec):
        return runnable_spec(spec.text, spec.path, plugins=plugins,
                             overrides={**(spec.overrides or {}), **(overrides or {})})
    if isinstance(spec, Mapping):
        return runnable_spec(yaml.safe_dump(dict(spec), sort_keys=False), "<dict>",
                             overrides=overrides, plugins=plugins)
    return runnable_spec(path=os.fspath(spec), overrides=overrides, plugins=plugins)


def run(spec: str | os.PathLike[str] | Mapping[str, Any] | LoadedSpec,
        data: pd.DataFrame | str | os.PathLike[str] | None = None, *,
        overrides: Mapping[str, Any] | None = None, plugins: list[str] | None = None,
        verbose: bool = False) -> RunOutcome:
    """Validate, then preprocess -> train -> evaluate -> register as a Prefect flow.

    ``data`` replaces the spec's source: a DataFrame of raw rows (the file's own columns)
    or a path. Returns the outcome (metrics, MLflow run, registered version, promotion).
    """
    from heartflow.data.prepare import FrameSource

    frame = None
    extra = dict(overrides or {})
    if data is not None and not isinstance(data, (str, os.PathLike)):
        frame = FrameSource(data)
    elif data is not None:
        extra["data.source"] = os.path.abspath(os.fspath(data))
    loaded = load_spec(spec, extra or None, plugins=plugins)

    with _flow_engine():
        from heartflow.pipelines.training import train_flow

        return train_flow(loaded, frame, verbose=verbose, spec_path=loaded.path)


def load_sweep(path: str | os.PathLike[str], *, plugins: list[str] | None = None) -> Sweep:
    """A validated sweep file: its base spec and every trial (data sources checked)."""
    from heartflow.data.sources import check_spec_source
    from heartflow.model.plugins import load_plugins
    from heartflow.spec.sweep import load_sweep as load

    load_plugins(plugins)
    loaded = load(os.fspath(path))
    checked: set[str] = set()
    for trial in [loaded.base, *(t.loaded for t in loaded.trials)]:
        if trial.spec.data.source not in checked:
            check_spec_source(trial)
            checked.add(trial.spec.data.source)
    return loaded


@dataclass
class SweepResult:
    """A finished sweep: its parent run, the ranked table and the trials' outcomes."""

    parent_run_id: str
    experiment_id: str
    metric: str
    rows: list[dict[str, Any]]
    varied: list[str]
    trials: list[TrialResult]
    wall_seconds: float
    workers: int
    choice: dict[str, Any]  # how the best run was chosen, and leader vs runner-up

    def table(self, fmt: str = "table") -> str:
        """The ranked table as text, CSV or JSON."""
        from heartflow.tracking.compare import render

        return render(self.rows, self.metric, self.varied, fmt)

    def _repr_html_(self) -> str:
        return (_rows_html(self.rows, f"sweep {self.parent_run_id[:8]}, ranked by "
                           f"{self.metric} on development rows")
                + f"<p>{html.escape(str(self.choice.get('summary', '')))}</p>")


def sweep(path: str | os.PathLike[str], *, workers: int | None = None,
          plugins: list[str] | None = None, progress: bool = False,
          pool: str | None = None) -> SweepResult:
    """Run every trial of a sweep file, each an MLflow child run: in worker processes of
    this machine, or (``pool``) as flow runs for a Prefect work pool's workers."""
    sweep_spec = load_sweep(path, plugins=plugins)

    with _flow_engine(tensorflow=False):
        from heartflow.pipelines.sweep import sweep_flow

        result = sweep_flow(sweep_spec.path, workers=workers, progress=progress,
                            plugins=list(plugins or []), pool=pool)
    from heartflow.tracking.compare import rows_for

    rows, metric, varied = rows_for(result.parent_run_id)
    return SweepResult(parent_run_id=result.parent_run_id, experiment_id=result.experiment_id,
                       metric=metric, rows=rows, varied=varied, trials=result.trials,
                       wall_seconds=result.wall_seconds, workers=result.workers,
                       choice=result.choice)


@dataclass
class Comparison:
    """Runs of an experiment or a sweep, ranked."""

    rows: list[dict[str, Any]]
    metric: str
    varied: list[str]

    def table(self, fmt: str = "table") -> str:
        """The ranked table as text, CSV or JSON."""
        from heartflow.tracking.compare import render

        return render(self.rows, self.metric, self.varied, fmt)

    def _repr_html_(self) -> str:
        return _rows_html(self.rows, f"ranked by {self.metric}")


def compare(target: str, metric: str | None = None) -> Comparison:
    """Rank the runs of an experiment (by name) or a sweep (its parent run id)."""
    from heartflow.runtime.quiet_import import apply_quiet_defaults
    from heartflow.tracking.compare import rows_for

    apply_quiet_defaults()
    return Comparison(*rows_for(target, metric))


def evaluate(model_uri: str, data: str, *, site: str | None = None,
             decision_thresholds: tuple[float, ...] | None = None,
             report: str | None = None, plugins: list[str] | None = None):
    """Judge a binary risk model on another site's rows: discrimination, calibration (slope,
    intercept, reliability), threshold figures and net benefit, each with a 95% interval.

    ``data`` is a named data set (``uci-va``, ``uci-switzerland``, ...) or a CSV path; the
    model's own preprocessing, missing codes and outcome rule are applied. Recorded as an
    MLflow run and a tag on the model version; ``report`` writes an HTML report.
    """
    from heartflow.model.plugins import load_plugins

    load_plugins(plugins)
    with _flow_engine():
        from heartflow.pipelines.site_evaluation import site_evaluation_flow

        return site_evaluation_flow(model_uri, data, site, tuple(decision_thresholds)
                                    if decision_thresholds else None, report)


class Model:
    """A registered or logged heartflow model: raw records in, predictions out."""

    def __init__(self, uri: str, scorer: Scorer) -> None:
        self.uri, self.scorer = uri, scorer

    @property
    def task(self) -> str:
        """binary, multiclass or regression."""
        return self.scorer.task

    @property
    def columns(self) -> list[str]:
        """The raw feature columns the model reads."""
        return self.scorer.meta.columns

    def predict(self, records: pd.DataFrame | Mapping[str, Any]) -> pd.DataFrame:
        """Probability and prediction columns (value for regression) for raw records.

        Missing cells follow the training rule (median / mode); categories never seen in
        training encode as all zeros.
        """
        import pandas as pd

        if isinstance(records, Mapping):
            records = pd.DataFrame([dict(records)])
        return self.scorer.predict(records)

    def __repr__(self) -> str:
        return f"heartflow.Model({self.uri!r}, {self.task}, {len(self.columns)} columns)"


def recalibrate(model_uri: str, data: str, *, method: str = "logistic",
                site: str | None = None, plugins: list[str] | None = None):
    """Refit a binary model's calibration on a site's rows (``intercept``, ``logistic`` or
    ``isotonic``) and register it as a new version whose pyfunc applies it. Returns the
    before / after figures (after: on the fitting rows, and cross-fitted)."""
    from heartflow.model.plugins import load_plugins

    load_plugins(plugins)
    with _flow_engine():
        from heartflow.pipelines.recalibration import recalibration_flow

        return recalibration_flow(model_uri, data, method, site)


def model_card(model_uri: str) -> str:
    """The model card (markdown) of a registered version, from what the registry holds now:
    its run, its data, and every site evaluated so far."""
    with _flow_engine(tensorflow=False):
        from heartflow.pipelines.model_card import card_flow

        return card_flow(model_uri)


def load_model(uri: str, *, plugins: list[str] | None = None) -> Model:
    """Load ``models:/name@champion``, ``models:/name/3`` or ``runs:/<id>/model``."""
    from heartflow.model.plugins import load_plugins
    from heartflow.runtime.gc_pause import imports_without_gc
    from heartflow.runtime.quiet_import import apply_quiet_defaults, import_tensorflow

    apply_quiet_defaults()
    load_plugins(plugins)
    with imports_without_gc():  # loading the model imports MLflow and TensorFlow
        import_tensorflow()
        from heartflow.tracking.logged_model import load_scorer

        scorer = load_scorer(uri)
    return Model(uri, scorer)


class _HideExplainedErrors(logging.Filter):
    """Drop Prefect's traceback logs for errors heartflow reports itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        from heartflow.errors import HeartflowError, Interrupted
        from heartflow.tracking.retries import is_transient

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (HeartflowError, Interrupted, KeyboardInterrupt)):
            return False
        if isinstance(exc, Exception) and is_transient(exc):
            return False
        return "Finished in state Failed" not in record.getMessage()


def _quiet_loggers() -> None:
    import mlflow  # noqa: F401  (configures its loggers on import; adjust after)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry chatter; we report
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideExplainedErrors) for f in logger.filters):
            logger.addFilter(_HideExplainedErrors())


@contextlib.contextmanager
def _flow_engine(*, tensorflow: bool = True) -> Iterator[None]:
    """Prepare this process to run heartflow's flows, then hold Prefect's API for the block."""
    from heartflow.runtime.gc_pause import imports_without_gc
    from heartflow.runtime.prefect_server import start_local_server, using
    from heartflow.runtime.quiet_import import apply_quiet_defaults

    apply_quiet_defaults()
    server = start_local_server()
    with imports_without_gc():
        if tensorflow:
            from heartflow.runtime.quiet_import import import_tensorflow

            import_tensorflow()
        import heartflow.pipelines.training  # noqa: F401
        from heartflow.tracking.store import preload

        preload()
        _quiet_loggers()
    with using(server):
        yield


def _rows_html(rows: list[dict[str, Any]], caption: str) -> str:
    if not rows:
        return f"<p>{html.escape(caption)}: no runs</p>"
    columns = [c for c in rows[0] if c not in ("run_id",)]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)
