"""The Python API, for notebooks and scripts; the `heartflow` command is a thin layer over it.

```python
import heartflow as hf

spec = hf.load_spec("specs/heart_16.yaml", overrides={"model.hidden.0.units": 8})
result = hf.run(spec)                       # or hf.run(spec, data=frame)
result.metrics, result.model_uri            # shown as a table in Jupyter
model = hf.load_model("models:/heart-disease@champion")
model.predict(patients)                     # raw records in, probabilities out
hf.versions("heart-disease")                # the registry: versions, aliases, figures
```

Runs go through the same Prefect flows and MLflow store as the CLI. Importing this module
imports no TensorFlow, MLflow or Prefect: every function imports what it needs when it is
called, and each such import says why it waits until then.
"""

from __future__ import annotations

import contextlib
import difflib
import html
import importlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from heartflow.errors import DataError, HeartflowError, Interrupted, RegistryError
from heartflow.runtime.gc_pause import imports_without_gc
from heartflow.runtime.quiet_import import apply_quiet_defaults
from heartflow.tracking.retries import is_transient

if TYPE_CHECKING:
    import pandas as pd

    from heartflow.evaluation.drift import MonitorReport
    from heartflow.evaluation.site import SiteEvaluation
    from heartflow.model.scorer import Scorer
    from heartflow.pipelines.recalibration import Recalibration
    from heartflow.pipelines.results import Figures, RunOutcome, TrialResult
    from heartflow.pipelines.updating import UpdateResult
    from heartflow.spec.loading import LoadedSpec
    from heartflow.spec.sweep import Sweep

SpecLike = "str | os.PathLike[str] | Mapping[str, Any] | LoadedSpec"

# Where a frame read by read_records came from, so errors name the file and its lines.
_SOURCE, _FIRST_LINE = "heartflow.source", "heartflow.first_line"


# -- specs and runs ------------------------------------------------------------------------


def load_spec(spec: str | os.PathLike[str] | Mapping[str, Any] | LoadedSpec,
              overrides: Mapping[str, Any] | None = None, *,
              plugins: list[str] | None = None) -> LoadedSpec:
    """Loads and validates a spec, with dotted-path overrides applied.

    The data source must exist (a named data set, a file or a URL); nothing is read yet.

    Args:
        spec: A YAML file's path, a dict of the same content, or a spec loaded before.
        overrides: Values to set by dotted path, e.g. ``{"model.hidden.0.units": 8}``
            (``0`` units removes a hidden layer).
        plugins: Modules to import first (your own activations).

    Returns:
        The validated spec (``.spec`` holds its fields, ``.path`` its file).

    Raises:
        SpecError: The spec is not valid; the message names file:line:column and the field.

    Example:

    ```python
    spec = hf.load_spec("specs/heart_16.yaml", overrides={"train.epochs": 20})
    spec.spec.model.hidden[0].units  # 16
    ```
    """
    import yaml  # lazy: PyYAML is only needed to write a dict spec as YAML

    from heartflow.model.plugins import load_plugins  # lazy: heartflow's spec loading
    from heartflow.pipelines.specs import runnable_spec  # (pydantic schema) on first use
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
    """Trains a spec: validate, then preprocess -> train -> evaluate -> register.

    The steps run as a Prefect flow and are recorded as an MLflow run; the model is
    registered under ``register.model_name`` and promoted to ``champion`` only when it
    passes the promotion gate.

    Args:
        spec: A spec file's path, a dict, or a loaded spec (see :func:`load_spec`).
        data: Rows that replace the spec's data source: a DataFrame of raw rows (the
            file's own columns) or a CSV path.
        overrides: Values to set by dotted path before validation.
        plugins: Modules to import first (your own activations).
        verbose: Print a line per epoch.

    Returns:
        The run's outcome: ``metrics`` (test rows, with ``intervals``), ``validation``,
        ``run_id``, ``model_uri``, ``version``, ``promoted`` and ``decision``.

    Example:

    ```python
    result = hf.run("specs/heart_16.yaml", overrides={"model.hidden.0.units": 8})
    result.metrics["roc_auc"], result.model_uri, result.promoted
    ```
    """
    from heartflow.data.prepare import FrameSource  # lazy: pandas and NumPy

    frame = None
    extra = dict(overrides or {})
    if data is not None and not isinstance(data, (str, os.PathLike)):
        frame = FrameSource(data)
    elif data is not None:
        extra["data.source"] = os.path.abspath(os.fspath(data))
    loaded = load_spec(spec, extra or None, plugins=plugins)

    with _flow_engine("heartflow.pipelines.training"):
        from heartflow.pipelines.training import train_flow  # lazy: Prefect, TensorFlow

        return train_flow(loaded, frame, verbose=verbose, spec_path=loaded.path)


@dataclass(frozen=True)
class Layer:
    """One layer of :class:`Architecture`."""

    name: str
    units: int
    activation: str
    initializer: str
    parameters: int


@dataclass(frozen=True)
class Architecture:
    """A spec's network: input width, layers and parameter counts (:func:`show`)."""

    spec_name: str
    input_width: int
    parameters: int
    layers: list[Layer]
    numeric: int  # standardised inputs
    categorical: dict[str, int]  # one-hot inputs of each categorical column
    sample_size: str = ""  # Riley's minimum sample size against the development rows

    def table(self) -> str:
        """The layers as text: name, units, activation, initializer, parameters."""
        lines = [f"{'layer':<10} {'units':>5}  {'activation':<12} {'initializer':<14} params"]
        lines += [f"{x.name:<10} {x.units:>5}  {x.activation:<12} {x.initializer:<14} "
                  f"{x.parameters}" for x in self.layers]
        return "\n".join(lines)

    def __repr__(self) -> str:
        onehot = sum(self.categorical.values())
        return (f"network of {self.spec_name}: {self.input_width} inputs ({self.numeric} "
                f"standardised, {onehot} one-hot) -> "
                + " -> ".join(f"{x.units} {x.activation}" for x in self.layers
                              if x.activation)
                + f"; {self.parameters} parameters"
                + (f"\n  {self.sample_size}" if self.sample_size else "")
                + "\n  more: .table() the layers, .layers, .categorical")

    def _repr_html_(self) -> str:
        head = html.escape(repr(self).split("\n  more:")[0]).replace("\n", "<br>")
        return f"<p>{head}</p><pre>{html.escape(self.table())}</pre>"


def show(spec: str | os.PathLike[str] | Mapping[str, Any] | LoadedSpec, *,
         plugins: list[str] | None = None) -> Architecture:
    """Describes a spec's network: input width, layers and their parameter counts.

    The input width depends on the categories in the data, so the data is read (and
    checked) as for a run; nothing is trained and TensorFlow is not imported.

    Args:
        spec: A spec file's path, a dict, or a loaded spec.
        plugins: Modules to import first (your own activations).

    Returns:
        An :class:`Architecture`: ``input_width``, ``parameters``, ``layers`` (name, units,
        activation, initializer, parameters), the inputs of each feature column and, for a
        binary model, Riley's minimum sample size against the development rows.

    Example:

    ```python
    arch = hf.show("specs/heart_16.yaml")
    arch.input_width, arch.parameters  # (29, 497)
    ```
    """
    from heartflow.data.prepare import prepare  # lazy: pandas and NumPy

    # lazy: SciPy, only for the sample-size line
    from heartflow.evaluation.sample_size import check_for
    from heartflow.model.builder import count_parameters, layer_table  # (no TensorFlow)

    loaded = load_spec(spec, plugins=plugins)
    prepared = prepare(loaded)
    width = prepared.width
    enc = prepared.encoder
    layers = [Layer(str(row["layer"]), int(row["units"]), str(row["activation"]),
                    str(row["initializer"]), int(row["params"]))
              for row in layer_table(loaded.spec, width)]
    check = check_for(loaded.spec, prepared)
    size = "" if check is None else (
        f"sample size (Riley, {check.anticipated}): {check.by_inputs.rows} rows counting the "
        f"{check.by_inputs.parameters} inputs, {check.by_weights.rows} counting the "
        f"{check.by_weights.parameters} weights; the spec has {check.rows} development rows "
        f"({check.events} events)" + (": SHORT, expect overfitting" if check.warning()
                                      else ": met"))
    return Architecture(loaded.spec.name, width, count_parameters(loaded.spec, width), layers,
                        len(enc.numeric), {c: len(enc.levels[c]) for c in enc.categorical},
                        size)


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of the spec, for editors (completion and checks as you type).

    Returns:
        The schema as a dict (``json.dumps`` it to a file).

    Example:

    ```python
    import json
    json.dump(hf.spec_schema(), open("heartflow.schema.json", "w"), indent=2)
    ```
    """
    from heartflow.spec.schema import Spec  # lazy: pydantic

    return Spec.model_json_schema(by_alias=True)


# -- sweeps and comparisons ----------------------------------------------------------------


def load_sweep(path: str | os.PathLike[str], *, plugins: list[str] | None = None) -> Sweep:
    """Loads and validates a sweep file: its base spec and every trial.

    Args:
        path: The sweep file (``sweep: {base, axes, seeds, ...}``).
        plugins: Modules to import first (your own activations).

    Returns:
        The sweep: ``base`` (a loaded spec), ``trials``, ``metric`` and ``workers``.

    Raises:
        SpecError: The sweep or one of its trials is not valid (file:line:column).

    Example:

    ```python
    sweep = hf.load_sweep("specs/heart_sweep.yaml")
    len(sweep.trials)
    ```
    """
    from heartflow.data.sources import check_spec_source  # lazy: heartflow's spec and
    from heartflow.model.plugins import load_plugins  # data modules load on first use
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
        """The ranked trials as text (``table``), ``csv`` or ``json``."""
        from heartflow.evaluation.tables import render_ranked  # lazy: rich

        return render_ranked(self.rows, self.metric, self.varied, fmt)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready with ``default=str``), the trials as dicts."""
        return {"parent_run_id": self.parent_run_id, "experiment_id": self.experiment_id,
                "metric": self.metric, "wall_seconds": self.wall_seconds,
                "workers": self.workers, "choice": self.choice,
                "trials": [t.as_dict() for t in self.trials]}

    def figures(self) -> Figures:
        """The parent run's plots: the development-row metric against each swept value."""
        from heartflow.pipelines.results import run_figures  # lazy: MLflow

        return run_figures(self.parent_run_id, f"sweep {self.parent_run_id[:8]}")

    def __repr__(self) -> str:
        failed = sum(not t.ok for t in self.trials)
        return (f"sweep {self.parent_run_id[:8]}: {len(self.trials)} trials ({failed} failed) "
                f"in {self.wall_seconds:.0f} s on {self.workers} worker(s)\n"
                + _leader_line(self.rows, self.metric, self.varied)
                + f"\n  {self.choice.get('summary', '')}\n"
                "  more: .table() the ranked trials, .figures() the metric against each "
                "swept value, .trials")

    def _repr_html_(self) -> str:
        return (_rows_html(self.rows, f"sweep {self.parent_run_id[:8]}, ranked by "
                           f"{self.metric} on development rows")
                + f"<p>{html.escape(str(self.choice.get('summary', '')))}</p>"
                + _figures_html(self.figures))


def sweep(path: str | os.PathLike[str], *, workers: int | None = None,
          plugins: list[str] | None = None, progress: bool = False,
          pool: str | None = None) -> SweepResult:
    """Runs every trial of a sweep file, each an MLflow child run of one parent run.

    Trials run in worker processes of this machine, or as flow runs for a Prefect work
    pool's workers (``pool``). They are ranked on development rows (CV or validation).

    Args:
        path: The sweep file.
        workers: Worker processes (default: the sweep's, else the CPU count).
        plugins: Modules to import first (your own activations).
        progress: Print a line as each trial ends.
        pool: A Prefect work pool whose workers run the trials instead.

    Returns:
        A :class:`SweepResult`: the parent run, ranked rows (``.table()``), the trials
        and how the best was chosen.

    Example:

    ```python
    result = hf.sweep("specs/heart_sweep.yaml", workers=2)
    print(result.table())
    ```
    """
    sweep_spec = load_sweep(path, plugins=plugins)

    with _flow_engine("heartflow.pipelines.sweep", tensorflow=False):
        from heartflow.pipelines.sweep import sweep_flow  # lazy: Prefect

        result = sweep_flow(sweep_spec.path, workers=workers, progress=progress,
                            plugins=list(plugins or []), pool=pool)
    from heartflow.tracking.compare import rows_for  # lazy: MLflow

    rows, metric, varied = rows_for(result.parent_run_id)
    return SweepResult(parent_run_id=result.parent_run_id, experiment_id=result.experiment_id,
                       metric=metric, rows=rows, varied=varied, trials=result.trials,
                       wall_seconds=result.wall_seconds, workers=result.workers,
                       choice=result.choice)


@dataclass
class Comparison:
    """Runs of an experiment or a sweep, ranked on development rows."""

    rows: list[dict[str, Any]]
    metric: str
    varied: list[str]

    def table(self, fmt: str = "table") -> str:
        """The ranked runs as text (``table``), ``csv`` or ``json``."""
        from heartflow.evaluation.tables import render_ranked  # lazy: rich

        return render_ranked(self.rows, self.metric, self.varied, fmt)

    def figures(self) -> Figures:
        """The ranking figure (CV mean with its 95% interval, else validation) against
        each varied parameter, drawn from the ranked runs (baselines left out)."""
        from heartflow.evaluation.plots import sweep_plots  # lazy: matplotlib
        from heartflow.pipelines.results import Figures, folder_figures  # lazy: MLflow

        axes = [k for k in self.varied
                if len({str(r.get(k)) for r in self.rows if r.get("kind") == "network"}) > 1]
        trials = [_RankedRun.of(r, self.metric, axes) for r in self.rows
                  if r.get("kind") == "network"]
        if not axes or not trials:
            return Figures({}, f"ranked by {self.metric}",
                           "no parameter varies between the runs compared")
        with tempfile.TemporaryDirectory(prefix="heartflow-compare-") as folder:
            sweep_plots(trials, self.metric, {k: [] for k in axes[:4]}, folder)
            return folder_figures(folder, f"{self.metric} against what varies")

    def __repr__(self) -> str:
        return (f"comparison of {len(self.rows)} runs, ranked by {self.metric} on "
                "development rows (test figures reported, not used to rank)\n"
                + _leader_line(self.rows, self.metric, self.varied)
                + "\n  more: .table() the ranked runs (or .table('csv'/'json')), .figures() "
                "the metric against what varies, .rows")

    def _repr_html_(self) -> str:
        return (_rows_html(self.rows, f"ranked by {self.metric}")
                + _figures_html(self.figures))


@dataclass(frozen=True)
class _RankedRun:
    """A ranked run in the shape :func:`heartflow.evaluation.plots.sweep_plots` reads."""

    overrides: dict[str, Any]
    outcome: Any

    @classmethod
    def of(cls, row: dict[str, Any], metric: str, axes: list[str]) -> _RankedRun:
        cv, ci = row.get(f"cv_{metric}"), row.get(f"cv_{metric}_ci95")
        outcome = types.SimpleNamespace(
            cv={metric: [cv, ci or 0.0]} if cv is not None else {},
            validation={metric: row.get(f"validation_{metric}", float("nan"))})
        return cls({k: row.get(k) for k in axes}, outcome)


def _leader_line(rows: list[dict[str, Any]], metric: str, varied: list[str]) -> str:
    """The best run in one line: its name, what varies, its ranking and test figures."""
    from heartflow.evaluation.tables import figure  # lazy: rich, only to print

    if not rows:
        return "  no finished run"
    best = rows[0]
    source = f"cv_{metric}" if best.get(f"cv_{metric}") is not None else f"validation_{metric}"
    low, high = best.get(f"test_{metric}_ci") or (None, None)
    what = ", ".join(f"{k}={best.get(k)}" for k in varied[:3])
    return (f"  best: {best.get('run')}{f' ({what})' if what else ''}: "
            f"{source.replace('_', ' ', 1)} {figure(best.get(source))}, test "
            f"{figure(best.get(f'test_{metric}'), low, high)} (n={best.get('test_rows')})")


def _figures_html(figures: Any) -> str:
    """A result's figures as HTML, or one line saying why they are not shown."""
    try:
        return figures()._repr_html_()
    except Exception as exc:  # the table stands without its plots
        return (f"<p>figures not shown: {html.escape(type(exc).__name__)}: "
                f"{html.escape(str(exc)[:300])}</p>")


def compare(target: str, metric: str | None = None) -> Comparison:
    """Ranks the runs of an experiment or of a sweep.

    Runs are ranked by the CV mean when they were cross-validated, else by the validation
    figure; test figures are reported with their intervals, never used to rank.

    Args:
        target: An experiment name, or a sweep's parent run id.
        metric: Rank by this metric (default: the sweep's, else ``roc_auc``).

    Returns:
        A :class:`Comparison`: ``rows`` (best first), ``metric``, ``varied`` parameters;
        ``.table(fmt)`` writes it as text, CSV or JSON.

    Example:

    ```python
    print(hf.compare("heart_16").table())
    ```
    """
    from heartflow.tracking.compare import rows_for  # lazy: MLflow

    apply_quiet_defaults()
    return Comparison(*rows_for(target, metric))


# -- registered models: scoring, other sites, cards ----------------------------------------


@dataclass(frozen=True)
class InputCheck:
    """What scoring records will do besides scoring them (:meth:`Model.check`)."""

    rows: int
    extra_columns: tuple[str, ...]  # present, not read by the model
    unseen_levels: dict[str, list[str]]  # categories training never saw (encoded as zeros)
    imputed_cells: int  # missing feature values the training rule will fill in

    def notes(self) -> list[str]:
        """The checks in words (empty when there is nothing to say)."""
        out = []
        if self.extra_columns:
            out.append("ignoring column(s) the model does not use: "
                       + ", ".join(self.extra_columns))
        if self.unseen_levels:
            out.append("categories not seen in training (encoded as all zeros): "
                       + "; ".join(f"{c}: {', '.join(v)}" for c, v in self.unseen_levels.items()))
        if self.imputed_cells:
            out.append(f"{self.imputed_cells} missing value(s) filled by the training rule "
                       "(numeric median, categorical mode); column 'imputed' counts them "
                       "per row")
        return out


class Model:
    """A registered or logged heartflow model: raw records in, predictions out.

    Get one with :func:`load_model`.
    """

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

    @property
    def runtime_note(self) -> str:
        """Why this model is scored through Keras and TensorFlow rather than onnxruntime
        (empty when its ONNX graph scores it)."""
        return self.scorer.runtime_note

    def check(self, records: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]]
              ) -> InputCheck:
        """Checks records before scoring them, and says what scoring will do.

        Args:
            records: Raw records: a DataFrame (e.g. from :func:`read_records`), one record
                as a mapping, or a list of them.

        Returns:
            An :class:`InputCheck`: columns the model ignores, categories training never
            saw (encoded as all zeros), missing values the training rule fills in;
            ``.notes()`` says them in words.

        Raises:
            DataError: A column the model reads is missing (the message names near
                matches and the columns present), or a cell cannot be read (column, row).

        Example:

        ```python
        check = model.check(hf.read_records("patients.csv"))
        for note in check.notes():
            print(note)
        ```
        """
        frame = self._records(records)
        typed = self._typed(frame)
        needed = set(self.columns)
        return InputCheck(
            rows=len(frame),
            extra_columns=tuple(str(c) for c in frame.columns if c not in needed),
            unseen_levels=self.scorer.encoder.unseen_levels(typed),
            imputed_cells=int(typed[self.columns].isna().sum().sum()))

    def predict(self, records: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]]
                ) -> pd.DataFrame:
        """Scores raw records.

        Missing cells follow the training rule (numeric median, categorical mode), and
        so do values a record given as a mapping leaves out (an absent key is an empty
        cell); a DataFrame must hold every column the model reads. Categories never seen
        in training encode as all zeros. Columns the model does not read are ignored.

        Args:
            records: Raw records: a DataFrame (e.g. from :func:`read_records`), one record
                as a mapping, or a list of them.

        Returns:
            A DataFrame with a row per record: ``probability`` and ``prediction`` (binary),
            ``probability_<class>`` and ``prediction`` (multiclass) or ``prediction``
            (regression), and ``imputed``, how many of the row's values were filled in.

        Raises:
            DataError: A DataFrame lacks a column the model reads, a mapping holds none of
                them or misspells one (``thalch``), or a cell cannot be read.

        Example:

        ```python
        model = hf.load_model("models:/heart-disease@champion")
        model.predict({"age": 61, "sex": 1, "cp": 4, "trestbps": 140, "chol": 207,
                       "fbs": 0, "restecg": 2, "thalach": 138, "exang": 1,
                       "oldpeak": 1.9, "slope": 1, "ca": 1, "thal": "reversible"})
        ```
        """
        return self.scorer.predict(self._typed(self._records(records)))

    def _records(self, records: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]]
                 ) -> pd.DataFrame:
        """Records as a frame. A record given as a mapping may leave out values that were
        not measured: an absent key is an empty cell, filled by the training rule like any
        other, unless a key the model does not read looks like a misspelling of it (then
        a DataError names both). A table (DataFrame) must hold every column: a missing
        column there is a mistake in the file, not a missing value."""
        frame = _frame(records)
        if isinstance(records, _pandas().DataFrame):
            return frame
        present = [str(c) for c in frame.columns]
        absent = [c for c in self.columns if c not in present]
        unknown = [c for c in present if c not in self.columns]
        if absent and len(absent) == len(self.columns):
            _require_columns("records", present, self.columns)  # nothing the model reads
        misspelt = {key: close[0] for key in unknown
                    if (close := difflib.get_close_matches(key, absent, n=1))}
        if misspelt:
            raise DataError(
                "records: the model does not read "
                + ", ".join(f"{k!r} (did you mean {v!r}?)" for k, v in misspelt.items())
                + f"; it reads {', '.join(self.columns)}. Rename the key, or leave it out "
                "to have the training rule fill the value in (an absent value is imputed "
                "like an empty cell)")
        for column in absent:
            frame[column] = ""  # an empty cell: missing everywhere, whatever na_values says
        return frame

    def predict_file(self, path: str | os.PathLike[str], out: Any,
                     chunk_rows: int = 100_000) -> InputCheck:
        """Scores a CSV file of raw records a chunk of 100,000 rows at a time, so a large
        file is never held whole: each record is written to ``out`` (a text stream) as CSV,
        its cells as read, followed by the prediction columns of :meth:`predict`.

        Returns:
            What :meth:`check` says of all the rows (columns ignored, unseen categories,
            imputed cells).

        Raises:
            DataError: A column the model reads is missing, a row has more or fewer
                fields than the header, or a cell cannot be read (column, row, line).
        """
        import csv  # lazy: only when a file is scored in chunks

        import pandas as pd  # lazy: pandas costs 0.3 s to import

        from heartflow.data.batches import typed_chunks  # lazy: pandas, pyarrow
        from heartflow.data.table import level_sort_key  # lazy: pandas

        name = os.fspath(path)
        with open(name, encoding="utf-8-sig", newline="") as fh:
            header = [c.strip() for c in next(csv.reader(fh), [])]
        _require_columns(name, header, self.columns)
        meta, encoder = self.scorer.meta, self.scorer.encoder
        rows = imputed = 0
        unseen: dict[str, set[str]] = {}
        for table, typed in typed_chunks(name, list(meta.numeric), list(meta.categorical),
                                         list(meta.na_values), meta.missing_codes, label=name,
                                         chunk_rows=chunk_rows):
            levels = pd.DataFrame({c: pd.Series(pd.unique(typed[c]), dtype=object)
                                   for c in meta.categorical})  # each level once
            for column, new in encoder.unseen_levels(levels).items():
                unseen.setdefault(column, set()).update(new)
            scored = written_scores(self.scorer.predict_typed(typed))
            frame = table.frame
            for column in scored.columns:
                frame[column] = scored[column].to_numpy()
            frame.to_csv(out, index=False, header=rows == 0)
            rows += len(frame)
            imputed += int(scored["imputed"].sum())
        needed = set(self.columns)
        return InputCheck(rows, tuple(c for c in header if c not in needed),
                          {c: sorted(v, key=level_sort_key) for c, v in unseen.items()},
                          imputed)

    def _typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's feature columns typed by its training rules; errors name the file and
        line when the frame came from :func:`read_records`."""
        from heartflow.data.dataset import prepare_features  # lazy: pandas

        source = frame.attrs.get(_SOURCE)
        first_line = frame.attrs.get(_FIRST_LINE)
        _require_columns(source or "records", list(frame.columns), self.columns)
        meta = self.scorer.meta

        def where(i: int) -> str:
            return f"row {i + 1} (line {i + first_line})" if first_line else f"row {i + 1}"

        return prepare_features(frame.reset_index(drop=True), list(meta.numeric),
                                list(meta.categorical), list(meta.na_values), where,
                                source or "", meta.missing_codes)

    def __repr__(self) -> str:
        return f"heartflow.Model({self.uri!r}, {self.task}, {len(self.columns)} columns)"


def is_large_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file large enough (over 8 MB) that scoring reads it in chunks
    (:meth:`Model.predict_file`) rather than whole (:func:`read_records`)."""
    from heartflow.data.batches import is_large_file as large  # lazy: pandas

    return os.path.isfile(path) and large(os.fspath(path))


def read_records(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Reads a CSV file of raw records the way heartflow reads training data.

    Every cell is kept as text (the model's own rules type it when scoring), so errors in
    :meth:`Model.check` and :meth:`Model.predict` name the file and the line.

    Args:
        path: A CSV file with a header line.

    Returns:
        A DataFrame of text cells, one row per record.

    Raises:
        DataError: The file does not exist, cannot be read, is not UTF-8, or its rows do
            not match its header.

    Example:

    ```python
    records = hf.read_records("patients.csv")
    hf.load_model("models:/heart-disease@champion").predict(records)
    ```
    """
    from heartflow.data.table import read_csv  # lazy: pandas

    name = os.fspath(path)
    if os.path.isdir(name):
        raise DataError(f"{name}: is a folder, not a CSV file")
    if not os.path.isfile(name):
        raise DataError(f"{name}: no such file (in {os.getcwd()})"
                        if not os.path.isabs(name) else f"{name}: no such file")
    try:
        table = read_csv(name)
    except OSError as exc:
        raise DataError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    frame = table.frame
    frame.attrs[_SOURCE], frame.attrs[_FIRST_LINE] = name, table.first_line
    return frame


def load_model(uri: str, *, plugins: list[str] | None = None) -> Model:
    """Loads a registered or logged heartflow model.

    Loading reads the network in Keras' safe mode and the encoder as JSON; nothing is
    unpickled.

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``, or
            a local model folder (``mlflow artifacts download -u models:/NAME@ALIAS -d
            FOLDER``), which loads without the registry and without importing MLflow.
        plugins: Modules to import first (activations the model uses; a model trained with
            a plugin carries its file, so this is rarely needed).

    Returns:
        A :class:`Model` (``.predict(records)``, ``.check(records)``, ``.columns``).

    Raises:
        RegistryError: The registry has no such model, version or alias; the message lists
            the model's aliases and versions.

    Example:

    ```python
    model = hf.load_model("models:/heart-disease@champion")
    model.columns
    ```
    """
    from heartflow.model.plugins import load_plugins  # lazy: heartflow's model layer

    apply_quiet_defaults()
    if os.path.isdir(uri):  # a model folder: no registry, and no MLflow import
        load_plugins(plugins)
        with imports_without_gc():
            from heartflow.tracking.logged_model import load_scorer_folder  # lazy: onnxruntime

            return Model(uri, load_scorer_folder(uri))
    _require_model(uri)  # before loading: a mistyped alias answers at once
    load_plugins(plugins)
    with imports_without_gc():  # loading imports MLflow, onnxruntime (TensorFlow without ONNX)
        from heartflow.tracking.logged_model import load_scorer  # lazy: MLflow

        scorer = _loading(uri, load_scorer)
    return Model(uri, scorer)


def evaluate(model_uri: str, data: str, *, site: str | None = None,
             decision_thresholds: tuple[float, ...] | None = None,
             report: str | None = None, plugins: list[str] | None = None) -> SiteEvaluation:
    """Judges a binary risk model on another site's rows.

    The model's own preprocessing, missing codes and outcome rule are applied. Every
    figure has a 95% interval: discrimination (ROC AUC), calibration (intercept, slope,
    ECE, reliability), sensitivity / specificity / PPV / NPV at the model's threshold, net
    benefit; also per subgroup. Recorded as an MLflow run in ``<model>-evaluations`` and a
    tag on the model version; the version's model card is rewritten.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.
        data: A named data set (``uci-va``, ``uci-switzerland``, ...) or a CSV path.
        site: The site's name for the record (default: the data set's or file's name).
        decision_thresholds: Thresholds for net benefit (default: the model's plan).
        report: Write a self-contained HTML report here.
        plugins: Modules to import first (your own activations).

    Returns:
        The evaluation: ``report`` (``values``, ``intervals``, ``notes``), ``subgroups``,
        ``site``, ``run_id``.

    Raises:
        RegistryError: No such model, version or alias (the message lists them).
        DataError: The data lacks a column the model reads (naming near matches), or a
            cell cannot be read.

    Example:

    ```python
    result = hf.evaluate("models:/uci-cleveland/1", "uci-va", site="va")
    result.report.values["calibration_slope"]
    ```
    """
    from heartflow.model.plugins import load_plugins  # lazy: heartflow's model layer

    load_plugins(plugins)
    _start_flow_server()  # boots on the other core during the registry check
    _require_model(model_uri)
    _require_site_columns(model_uri, data)
    # tensorflow=False: the model's ONNX graph scores (Keras, imported then, if it has none)
    with _flow_engine("heartflow.pipelines.site_evaluation", tensorflow=False):
        from heartflow.pipelines.site_evaluation import site_evaluation_flow  # lazy: Prefect

        return site_evaluation_flow(model_uri, data, site, tuple(decision_thresholds)
                                    if decision_thresholds else None, report)


def recalibrate(model_uri: str, data: str, *, method: str = "logistic",
                site: str | None = None, plugins: list[str] | None = None) -> Recalibration:
    """Refits a binary model's calibration on a site's rows; registers it as a new version.

    The new version's pyfunc applies the rule after the network (it serves like any
    version) and is not promoted.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.
        data: The site's rows: a named data set or a CSV path.
        method: ``intercept`` (calibration-in-the-large), ``logistic`` (intercept and
            slope) or ``isotonic``.
        site: The site's name for the record.
        plugins: Modules to import first (your own activations).

    Returns:
        The recalibration: ``before``, ``after_fitted`` (optimistic) and
        ``after_cross_fitted`` reports, the ``rule``, ``new_version`` and
        ``new_model_uri``.

    Raises:
        RegistryError: No such model, version or alias (the message lists them).
        DataError: The data lacks a column the model reads, or a cell cannot be read.

    Example:

    ```python
    result = hf.recalibrate("models:/uci-cleveland/1", "uci-va", method="logistic")
    result.new_model_uri
    ```
    """
    from heartflow.model.plugins import load_plugins  # lazy: heartflow's model layer

    load_plugins(plugins)
    _start_flow_server()  # boots on the other core during the registry check
    _require_model(model_uri)
    _require_site_columns(model_uri, data)
    with _flow_engine("heartflow.pipelines.recalibration"):
        from heartflow.pipelines.recalibration import recalibration_flow  # lazy: Prefect

        return recalibration_flow(model_uri, data, method, site)


def model_card(model_uri: str) -> str:
    """The model card of a registered version, as it stands now.

    Rebuilt from what the registry holds (its run, its data, every site evaluated so far,
    any recalibration), headed by the TRIPOD+AI items each section answers.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.

    Returns:
        The card as markdown.

    Raises:
        RegistryError: No such model, version or alias (the message lists them).

    Example:

    ```python
    print(hf.model_card("models:/heart-disease@champion"))
    ```
    """
    _start_flow_server()  # boots on the other core during the registry check
    _require_model(model_uri)
    with _flow_engine("heartflow.pipelines.model_card", tensorflow=False):
        from heartflow.pipelines.model_card import card_flow  # lazy: Prefect

        return card_flow(model_uri)


def monitor(model_uri: str, data: str, *, site: str | None = None, as_of: str | None = None,
            report: str | None = None, plugins: list[str] | None = None) -> MonitorReport:
    """Checks a batch of new rows against what a deployed model was developed on.

    For each raw variable the model reads: PSI and a two-sample test (KS or chi-square),
    missing share and out-of-range share; the risks' distribution; with outcomes, ROC AUC,
    calibration intercept and slope, Brier and net benefit (each with its 95% interval)
    beside the development figures. A check drifts when its effect passes its threshold
    (the spec's ``monitor:`` section) and its p-value is small: never by p-value alone.
    Recorded as an MLflow run in ``<model>-monitoring``; a drift emits the Prefect event
    ``heartflow.model.drift``.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.
        data: The batch: a named data set or a CSV path (the outcome column is optional).
        site: The site's name for the record.
        as_of: The batch's date (ISO, ``YYYY-MM-DD``; default today).
        report: Write the HTML report (each check across the batches so far) here.
        plugins: Modules to import first (your own activations).

    Returns:
        The report: ``drift``, ``checks`` (name, kind, statistic, value, threshold, drift,
        p-value, reason), ``drifted_variables``, ``to_json()``.

    Raises:
        RegistryError: No such model, version or alias (the message lists them).
        DataError: The batch lacks a column the model reads, or ``as_of`` is not a date.

    Example:

    ```python
    report = hf.monitor("models:/uci-cleveland@champion", "uci-va", site="va")
    report.drift, report.drifted_variables
    ```
    """
    from heartflow.model.plugins import load_plugins  # lazy: heartflow's model layer

    load_plugins(plugins)
    _start_flow_server()  # boots on the other core during the registry check
    _require_model(model_uri)
    _require_site_columns(model_uri, data)
    # tensorflow=False: the model's ONNX graph scores (Keras if it has none)
    with _flow_engine("heartflow.pipelines.monitoring", tensorflow=False):
        from heartflow.pipelines.monitoring import monitoring_flow  # lazy: Prefect

        return monitoring_flow(model_uri, data, site, as_of, report)


def update(model_uri: str, data: str, *, method: str = "auto", site: str | None = None,
           plugins: list[str] | None = None) -> UpdateResult:
    """Updates a binary model on a site's rows by evidence (Vergouwe et al. 2017).

    ``auto`` runs the closed testing procedure at alpha 0.05 over no update, intercept
    update, logistic recalibration and revision (the output layer re-estimated on the
    frozen hidden layers), each tested by likelihood ratio, and keeps the least extensive
    update the rows support. The chosen update is registered as a new version (not
    promoted); with ``none`` nothing is registered.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.
        data: The site's rows: a named data set or a CSV path.
        method: ``auto``, or force one of ``none``, ``intercept``, ``logistic``,
            ``revision``.
        site: The site's name for the record.
        plugins: Modules to import first (your own activations).

    Returns:
        The result: ``method``, ``reason``, the likelihood-ratio ``evidence``,
        ``new_version`` and ``new_model_uri``; ``as_dict()`` for JSON.

    Raises:
        RegistryError: No such model, version or alias (the message lists them).
        DataError: The data lacks a column the model reads, or too few rows for the
            forced method.

    Example:

    ```python
    result = hf.update("models:/uci-cleveland/1", "uci-va", site="va")
    result.method, result.new_model_uri
    ```
    """
    from heartflow.model.plugins import load_plugins  # lazy: heartflow's model layer

    if method not in UPDATE_METHODS:
        raise DataError(f"update method {method!r} is not one of {', '.join(UPDATE_METHODS)}")
    load_plugins(plugins)
    _start_flow_server()  # boots on the other core during the registry check
    _require_model(model_uri)
    _require_site_columns(model_uri, data)
    with _flow_engine("heartflow.pipelines.updating"):
        from heartflow.pipelines.updating import update_flow  # lazy: Prefect

        return update_flow(model_uri, data, method, site)


UPDATE_METHODS = ("auto", "none", "intercept", "logistic", "revision")


# -- the registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version (:func:`versions`)."""

    name: str
    version: str
    aliases: tuple[str, ...]
    spec: str
    run_id: str | None
    metrics: dict[str, float]  # test rows: figure, figure_ci_low, figure_ci_high
    sites: dict[str, str]  # other sites' one-line summaries
    decision: str  # why the version is (or is not) champion
    recalibration: str  # "v1 recalibrated: ..." for a recalibrated version
    created: int  # milliseconds since the epoch
    # the promotion gate's evidence (version tags heartflow.gate.*): metric, rule,
    # difference, ci_low, ci_high, rows; undecided ("True") and reason when it refused
    gate: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain data, JSON-ready (the gate's figures as numbers)."""
        gate: dict[str, Any] = dict(self.gate)
        for key in ("difference", "ci_low", "ci_high", "rows"):
            with contextlib.suppress(KeyError, ValueError):
                gate[key] = (int if key == "rows" else float)(gate[key])
        return {**asdict(self), "aliases": list(self.aliases), "gate": gate}


def versions(name: str | None = None) -> list[VersionInfo]:
    """Lists registered model versions, newest first.

    Args:
        name: One registered model (default: every model in the registry).

    Returns:
        A :class:`VersionInfo` per version: aliases, spec, test figures with intervals,
        other sites, the registry's decision, run and creation time.

    Raises:
        RegistryError: No registered model has this name.

    Example:

    ```python
    [(v.version, v.aliases) for v in hf.versions("heart-disease")]
    ```
    """
    from heartflow.tracking import names as N  # lazy: the tracking layer
    from heartflow.tracking import registry  # lazy: MLflow

    def gate(name: str, version: str) -> tuple[tuple[str, str], ...]:
        tags = registry.version_tags(name, version)
        found = {k.removeprefix(N.gate("")): v for k, v in tags.items()
                 if k.startswith(N.gate("")) and v != ""}
        if found or N.promotion("undecided") in tags:
            found.update(metric=tags.get(N.promotion("metric"), ""),
                         undecided=tags.get(N.promotion("undecided"), ""),
                         reason=tags.get(N.PROMOTION_REASON, ""))
        return tuple(found.items())

    return [VersionInfo(name=str(r["name"]), version=str(r["version"]),
                        aliases=tuple(r["aliases"]), spec=str(r["spec"] or ""),
                        run_id=r["run_id"] or None, metrics=dict(r["metrics"] or {}),
                        sites=dict(r["sites"] or {}), decision=str(r["decision"] or ""),
                        recalibration=str(r["recalibration"] or ""),
                        created=int(r["created"] or 0),
                        gate=gate(str(r["name"]), str(r["version"])))
            for r in registry.list_versions(name)]


@dataclass(frozen=True)
class Promotion:
    """A champion moved by hand (:func:`promote`, :func:`rollback`)."""

    name: str
    version: str  # the champion now
    previous: str | None  # the champion before, if there was one


def promote(name: str, version: str | int, *, reason: str = "manual promotion") -> Promotion:
    """Makes a version the champion by hand (recorded on the version).

    Args:
        name: The registered model.
        version: The version to promote.
        reason: Recorded as the version's promotion reason.

    Returns:
        A :class:`Promotion`: the new champion and the one it replaced (``rollback``
        moves back to it).

    Raises:
        RegistryError: The model has no such version.

    Example:

    ```python
    hf.promote("heart-disease", 3, reason="approved by the review board")
    ```
    """
    from heartflow.tracking import registry  # lazy: MLflow

    _require_model(f"models:/{name}/{version}")
    previous = registry.promote(name, str(version), reason)
    return Promotion(name, str(version), previous)


def approve(name: str, version: str | int, *, reason: str = "") -> Promotion:
    """Approves a version the promotion gate passed under ``require_approval``: it becomes
    the champion, recorded with who approved it, when and why.

    Args:
        name: The registered model.
        version: The version awaiting approval.
        reason: Why (recorded on the version).

    Returns:
        A :class:`Promotion`: the new champion and the one it replaced.

    Raises:
        RegistryError: No such version, or the gate did not pass it (promote it by hand
            with :func:`promote` instead, which records that it skipped the gate).

    Example:

    ```python
    hf.approve("uci-cleveland", 4, reason="reviewed the VA update")
    ```
    """
    from heartflow.tracking import registry  # lazy: MLflow

    _require_model(f"models:/{name}/{version}")
    previous = registry.approve(name, str(version), reason)
    return Promotion(name, str(version), previous)


def rollback(name: str) -> Promotion:
    """Moves the champion back to the champion it replaced (recorded on both versions).

    Args:
        name: The registered model.

    Returns:
        A :class:`Promotion`: ``version`` is the restored champion, ``previous`` the one
        it replaces.

    Raises:
        RegistryError: The model has no champion, or its champion replaced none.

    Example:

    ```python
    hf.rollback("heart-disease").version
    ```
    """
    from heartflow.tracking import registry  # lazy: MLflow

    current, previous = registry.rollback(name)
    return Promotion(name, previous, current)


# -- runs left behind ----------------------------------------------------------------------


@dataclass(frozen=True)
class StaleRun:
    """A run left RUNNING by a heartflow process that died (:func:`stale_runs`)."""

    run_id: str
    experiment_id: str
    run_name: str
    pid: str  # the process that owned it, gone now
    marked_failed: bool


def stale_runs(*, mark_failed: bool = False) -> list[StaleRun]:
    """Finds MLflow runs left RUNNING by heartflow processes that died (SIGKILL, crash).

    Runs carry their host, process id and process start time; a run is stale when that
    process no longer exists on this host.

    Args:
        mark_failed: End each stale run as FAILED, with the reason as a tag.

    Returns:
        A :class:`StaleRun` per run found.

    Example:

    ```python
    for run in hf.stale_runs(mark_failed=True):
        print(run.run_id, run.pid)
    ```
    """
    from heartflow.tracking import stale  # lazy: MLflow

    out = []
    for found in stale.stale_runs():
        if mark_failed:
            stale.mark_failed(found["run_id"], f"owning process {found['pid']} died; marked "
                                               "FAILED by heartflow stale-runs")
        out.append(StaleRun(found["run_id"], found["experiment_id"], found["run_name"],
                            found["pid"], mark_failed))
    return out


# -- scheduled retraining ------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """A scheduled retraining deployment as created (:func:`deploy`)."""

    id: str
    name: str  # heartflow-retrain/NAME (heartflow-update-on-drift/NAME with on_drift)
    cron: str  # "" for an update on drift
    timezone: str
    pool: str
    model: str  # the registered model it retrains (or updates)
    trigger: str = ""  # what starts it, for an update on drift


@dataclass(frozen=True)
class DeploymentState:
    """A deployment on the Prefect server and what it last did (:func:`deployments`)."""

    name: str
    schedules: list[str]
    pool: str
    last_run: str  # the last flow run's state, "" when it never ran
    last_run_at: str
    champion: str  # the latest version it registered, and whether it was promoted


def deploy(spec: str | os.PathLike[str], cron: str | None = None, *, pool: str = "default",
           name: str | None = None, timezone: str | None = None,
           plugins: list[str] | None = None, on_drift: bool = False) -> Deployment:
    """Creates or updates the scheduled retraining deployment of a spec, or (``on_drift``)
    the deployment that updates its model on each drifted batch.

    The deployment lives on the Prefect server in ``PREFECT_API_URL``; a process worker on
    the pool (``prefect worker start --pool NAME``) runs it. Each scheduled run retrains
    when the data or the spec changed, then runs the promotion gate. With ``on_drift``, each
    ``heartflow.model.drift`` event about a version of the spec's model (``heartflow
    monitor``) starts a run that checks the batch's sha256, updates that version on the
    batch as ``heartflow update --method auto`` does, and puts the new version through the
    promotion gate (judged by cross-fitted risks on the batch; under ``require_approval``
    it stays challenger until :func:`approve`). Deploying again with the same name updates
    it.

    Args:
        spec: The spec file (its text travels with the deployment).
        cron: The schedule, e.g. ``"0 3 * * 1"`` (not with ``on_drift``).
        pool: The Prefect work pool (process type).
        name: The deployment's name (default: the spec's name; with ``on_drift``
            ``MODEL-update-on-drift``).
        timezone: The cron's IANA time zone (default UTC).
        plugins: Modules the workers import first (your own activations).
        on_drift: Deploy the update on drift instead of a schedule.

    Returns:
        A :class:`Deployment`.

    Raises:
        HeartflowError: No Prefect server is configured, the pool does not exist, or not
            exactly one of ``cron`` and ``on_drift`` is given.

    Example:

    ```python
    hf.deploy("specs/heart_16.yaml", "0 3 * * 1", pool="gpu", name="weekly")
    hf.deploy("specs/uci_cleveland_16.yaml", on_drift=True, pool="gpu")
    ```
    """
    apply_quiet_defaults()
    if cron and on_drift:
        raise HeartflowError("--cron and --on-drift make two different deployments: give one "
                             "per heartflow deploy (run it twice for both)")
    if not cron and not on_drift:
        raise HeartflowError("heartflow deploy needs --cron \"0 3 * * 1\" (scheduled "
                             "retraining) or --on-drift (an update on each drifted batch)")
    if on_drift:
        if timezone:
            raise HeartflowError("--timezone goes with --cron; an update on drift runs when "
                                 "the drift event arrives")
        from heartflow.pipelines.deployments import deploy_on_drift  # lazy: Prefect

        info = deploy_on_drift(os.fspath(spec), pool, name, plugins=plugins)
        return Deployment(str(info["id"]), info["name"], "", "", info["pool"],
                          info["model"], info["trigger"])
    from heartflow.pipelines.deployments import deploy as create  # lazy: Prefect

    info = create(os.fspath(spec), str(cron), pool, name, timezone, plugins=plugins)
    return Deployment(str(info["id"]), info["name"], info["cron"], info["timezone"],
                      info["pool"], info["model"])


def deployments() -> list[DeploymentState]:
    """Lists heartflow's deployments on the Prefect server: scheduled retraining and updates
    on drift.

    Returns:
        A :class:`DeploymentState` per deployment: schedules, pool, the last run's state
        and the version it registered.

    Raises:
        HeartflowError: No Prefect server is configured.

    Example:

    ```python
    [(d.name, d.last_run) for d in hf.deployments()]
    ```
    """
    apply_quiet_defaults()
    from heartflow.pipelines.deployments import list_deployments  # lazy: Prefect

    return [DeploymentState(d["name"], list(d["schedules"]), d["pool"], d["last_run"],
                            d["last_run_at"], d["champion"]) for d in list_deployments()]


def undeploy(name: str) -> None:
    """Removes a deployment (scheduled retraining or update on drift, with its trigger) from
    the Prefect server.

    Args:
        name: ``NAME``, ``heartflow-retrain/NAME`` or ``heartflow-update-on-drift/NAME``.

    Raises:
        HeartflowError: No deployment has this name, or no Prefect server is configured.

    Example:

    ```python
    hf.undeploy("weekly")
    ```
    """
    apply_quiet_defaults()
    from heartflow.pipelines.deployments import remove  # lazy: Prefect

    remove(name)


# -- the tracking store and its UI ---------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Where heartflow keeps runs and finds data (:func:`configure`)."""

    project_root: str  # relative settings resolve here; the default store lives here
    tracking_uri: str  # credentials removed
    data_dir: str  # in words: what HEARTFLOW_DATA_DIR held and where it resolved

    def __repr__(self) -> str:
        return (f"heartflow settings\n  project root  {self.project_root}\n"
                f"  tracking      {self.tracking_uri}\n  data          {self.data_dir}")


def configure(*, tracking_uri: str | None = None,
              data_dir: str | os.PathLike[str] | None = None,
              project_dir: str | os.PathLike[str] | None = None) -> Settings:
    """Sets (or, with no argument, shows) where runs are recorded and data is found.

    Without it: the store is ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` (artifacts in
    ``mlruns/``) at the project root, the nearest folder from the working folder upward
    holding a ``pyproject.toml`` (else the working folder); a relative
    ``HEARTFLOW_DATA_DIR`` is resolved against the same root. So a notebook whose kernel
    runs in ``examples/`` records where ``heartflow ui`` at the repository root looks.
    Settings go into the environment, so worker processes started later inherit them.

    Args:
        tracking_uri: An MLflow tracking URI (``sqlite:///path/mlflow.db``, a server URL);
            sets ``MLFLOW_TRACKING_URI``.
        data_dir: The folder with the named data sets (``heart.csv``,
            ``uci-heart/...``), relative to the working folder as Python reads paths;
            sets ``HEARTFLOW_DATA_DIR`` to it as an absolute path.
        project_dir: The project root (sets ``HEARTFLOW_PROJECT_DIR``), for a notebook
            outside any folder with a ``pyproject.toml``.

    Returns:
        The :class:`Settings` now in force.

    Example:

    ```python
    hf.configure()                                  # where things go now
    hf.configure(data_dir="../../shared/data")      # from a notebook in examples/
    ```
    """
    from heartflow.data.sources import (  # lazy: heartflow's data layer
        DATA_DIR_ENV,
        PROJECT_DIR_ENV,
        describe_setting,
        project_root,
    )

    if project_dir is not None:
        os.environ[PROJECT_DIR_ENV] = os.path.abspath(os.fspath(project_dir))
    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if tracking_uri is not None:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        if "mlflow" in sys.modules:  # a URI set in-process earlier would otherwise win
            sys.modules["mlflow"].set_tracking_uri(tracking_uri)
    return Settings(str(project_root()), tracking_store(), describe_setting(DATA_DIR_ENV))


def figures(target: Any, only: str | Sequence[str] | None = None) -> Figures:
    """The plots of a run, an evaluation, a monitoring batch, a sweep or a comparison,
    shown inline in Jupyter (``.save(folder)`` writes the PNG files).

    Args:
        target: A result of :func:`run`, :func:`evaluate`, :func:`monitor`,
            :func:`sweep` or :func:`compare`, or an MLflow run id; or a mapping of labels
            to such results, to show one plot of each side by side (``only`` names it).
        only: Keep these plots (e.g. ``"confusion_matrix"``, ``"learning_curves"``).

    Returns:
        :class:`~heartflow.pipelines.results.Figures`: PNGs by name (learning curves,
        ROC, reliability, decision curve, ... as the run logged them).

    Example:

    ```python
    hf.figures(hf.evaluate("models:/uci-cleveland/1", "uci-va", site="va"))
    hf.figures({"t=0.5": plain, "cost 3:1": costly}, only="confusion_matrix")
    ```
    """
    from heartflow.pipelines.results import Figures, run_figures  # lazy: MLflow

    names = [only] if isinstance(only, str) else list(only or [])
    if isinstance(target, Mapping):
        images = {}
        for label, each in target.items():
            for name, png in figures(each, names).images.items():
                images[f"{label}: {name}" if len(names) != 1 else str(label)] = png
        return Figures(images, ", ".join(names), "" if images else "none of them drew "
                       + (", ".join(names) or "a plot"))
    if names:
        return figures(target).only(*names)
    if hasattr(target, "figures"):
        return target.figures()
    run_id = target if isinstance(target, str) else getattr(target, "run_id", "")
    if not run_id:
        raise HeartflowError(f"no MLflow run to draw figures from: {type(target).__name__} "
                             "has no run_id; give a run, an evaluation, a monitoring report "
                             "or a run id")
    title = f"{getattr(target, 'model_uri', '')} on {getattr(target, 'site', '')}" \
        if hasattr(target, "site") else f"run {run_id[:8]}"
    return run_figures(run_id, title)


def tracking_store() -> str:
    """The MLflow tracking store heartflow uses, safe to print (credentials removed).

    Returns:
        ``MLFLOW_TRACKING_URI``, else ``sqlite:///<project root>/mlflow.db`` (see
        :func:`configure`).

    Example:

    ```python
    hf.tracking_store()
    ```
    """
    from heartflow.tracking.store import redact, tracking_uri  # lazy: MLflow

    return redact(tracking_uri())


def runs_page(experiment_id: str, base_url: str = "http://127.0.0.1:5000") -> str:
    """The address of an experiment's runs page in the MLflow UI, in heartflow's view
    (the dataset, the spec and the validation, CV and test figures, ranked).

    Args:
        experiment_id: The MLflow experiment.
        base_url: Where the UI answers (``heartflow ui`` binds 127.0.0.1:5000).

    Returns:
        The page's URL.

    Example:

    ```python
    hf.runs_page(hf.run("specs/heart_16.yaml").experiment_id)
    ```
    """
    from heartflow.tracking.store import runs_page as page  # lazy: the tracking layer

    return page(base_url.rstrip("/"), experiment_id)


def is_store_failure(error: BaseException) -> bool:
    """Whether an error is the tracking store failing to answer (refused or dropped
    connections, timeouts, HTTP 5xx, a locked sqlite database), not a refusal. heartflow
    retries these with backoff; one that still fails means the store is down.

    Args:
        error: The exception.

    Returns:
        True for a store that did not answer.

    Example:

    ```python
    try:
        hf.versions()
    except Exception as error:
        if hf.api.is_store_failure(error):
            print("the tracking server is down")
    ```
    """
    return isinstance(error, Exception) and is_transient(error)


@dataclass
class UIServer:
    """A running MLflow UI (:func:`start_ui`): its address and its process."""

    url: str
    page: str  # the latest heartflow experiment's runs page, or the UI's address
    experiment_id: str | None
    process: subprocess.Popen

    def wait(self) -> int:
        """Waits until the UI exits; returns its exit status."""
        return self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the UI and every process it started (SIGTERM, then SIGKILL)."""
        import psutil  # lazy: only when a UI is stopped

        root = self.process
        try:
            family = psutil.Process(root.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(root.pid, signal.SIGTERM)  # its own process group: mlflow, uvicorn
        for child in family:  # any that left the group
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        try:
            root.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(root.pid, signal.SIGKILL)
            root.kill()
            root.wait()
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(alive, timeout=5)


def start_ui(*, port: int = 5000, host: str = "127.0.0.1") -> UIServer:
    """Starts the MLflow UI on heartflow's tracking store, in its own process group.

    Args:
        port: The port to serve on.
        host: The address to bind (default: loopback only).

    Returns:
        A :class:`UIServer`: ``url``, ``page`` (the runs page of the most recently used
        heartflow experiment, or ``url`` when there is none), ``wait()`` and ``stop()``,
        which ends the UI with every process it started.

    Example:

    ```python
    ui = hf.start_ui(port=5001)
    print(ui.page)
    ui.stop()
    ```
    """
    from heartflow.tracking.store import tracking_uri  # lazy: MLflow

    url = f"http://{host}:{port}"
    experiment = _latest_experiment()
    page = runs_page(experiment, url) if experiment else url
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port),
           "--backend-store-uri", tracking_uri(), "--workers", "1"]
    process = subprocess.Popen(cmd, env=env, start_new_session=True)
    return UIServer(url, page, experiment, process)


def _latest_experiment() -> str | None:
    """The heartflow training experiment whose latest run started last (else the one last
    updated), or None when the store holds none."""
    from heartflow.tracking.store import VIEW_KEY, client  # lazy: MLflow

    c = client()
    tag = f"mlflow.sharedViewState.{VIEW_KEY}"  # set on every heartflow training experiment
    ours = [e for e in c.search_experiments() if tag in (e.tags or {})]
    if not ours:
        return None
    latest = c.search_runs([e.experiment_id for e in ours],
                           order_by=["attributes.start_time DESC"], max_results=1)
    if latest:
        return latest[0].info.experiment_id
    return max(ours, key=lambda e: e.last_update_time or 0).experiment_id


# -- helpers -------------------------------------------------------------------------------


def _frame(records: Any) -> pd.DataFrame:
    import pandas as pd  # lazy: pandas costs 0.3 s to import

    if isinstance(records, pd.DataFrame):
        return records
    if isinstance(records, Mapping):
        return pd.DataFrame([dict(records)])
    return pd.DataFrame([dict(r) for r in records])


def _pandas() -> Any:
    import pandas as pd  # lazy: pandas costs 0.3 s to import

    return pd


def _did_you_mean(missing: list[str], present: list[str]) -> str:
    import difflib  # lazy: only when something is missing

    hints = []
    for column in missing:
        close = difflib.get_close_matches(column, present, n=1)
        if close:
            hints.append(f"{close[0]!r} for {column!r}" if len(missing) > 1
                         else f"{close[0]!r}")
    return f"; did you mean {', '.join(hints)}?" if hints else ""


def _require_columns(source: str, present: list[str], needed: list[str]) -> None:
    """A DataError naming each needed column that is not present, near matches among the
    present ones, and the columns present."""
    present = [str(c) for c in present]
    missing = [c for c in needed if c not in present]
    if missing:
        raise DataError(_sentence(f"{source}: missing required column(s): "
                                  f"{', '.join(missing)}{_did_you_mean(missing, present)}")
                        + f" Columns present: {', '.join(present) or 'none'}")


def _require_site_columns(model_uri: str, data: str) -> None:
    """Refuse (naming near matches) a site whose header lacks a column the model reads,
    before anything runs; other problems are the site evaluation's to report."""
    import csv  # lazy: only here

    from mlflow.models import get_model_info  # lazy: MLflow

    from heartflow.data.sources import resolve_source  # lazy: heartflow's data layer

    resolved = resolve_source(data, os.getcwd())
    header = list(resolved.columns or [])
    if not header:
        try:
            with open(resolved.path, encoding="utf-8-sig", newline="") as fh:
                header = next((row for row in csv.reader(fh) if any(c.strip() for c in row)),
                              [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return  # reading the site says what is wrong, with its line
    signature = _loading(model_uri, get_model_info).signature
    if signature is None or not header:
        return
    _require_columns(data, [c.strip() for c in header], signature.inputs.input_names())


def _loading(uri: str, load: Any) -> Any:
    """``load(uri)``, with MLflow's refusal of a URI as a heartflow error."""
    from mlflow.exceptions import MlflowException  # lazy: MLflow

    try:
        return load(uri)
    except MlflowException as exc:
        if is_transient(exc):
            raise
        raise HeartflowError(f"cannot load the model {uri}: {exc.message}") from None


def _require_model(uri: str) -> None:
    """For a ``models:/`` URI, a RegistryError unless its model, version or alias exists,
    naming the model's aliases and versions (or the registered models)."""
    if not uri.startswith("models:/"):
        return
    from heartflow.tracking import registry  # lazy: MLflow

    rest = uri.removeprefix("models:/")
    name, alias, version = rest, None, None
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias and registry.alias_version(name, alias) is not None:
            return
    else:
        name, _, version = rest.partition("/")
        if name and version and version.isdigit():
            with contextlib.suppress(RegistryError):
                registry.version_tags(name, version)
                return
        if name and version == "latest":
            with contextlib.suppress(RegistryError):
                if registry.list_versions(name):
                    return  # MLflow resolves it
    _refuse_model(uri, name, alias, version)


def _refuse_model(uri: str, name: str, alias: str | None, version: str | None) -> None:
    from heartflow.tracking.store import client  # lazy: MLflow

    c = client()
    try:
        model = c.get_registered_model(name) if name else None
    except Exception:
        model = None
    if model is None:
        names = sorted(m.name for m in c.search_registered_models())
        known = (f"registered models: {', '.join(names)}{_did_you_mean([name], names)}"
                 if names else "the registry holds no models yet")
        raise RegistryError(f"{uri}: no registered model named {name!r}; {known}")
    numbers = sorted(int(v.version) for v in c.search_model_versions(f"name='{name}'"))
    aliases = dict(model.aliases or {})
    named = ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
    if alias:
        wrong = f"no alias {alias!r}{_did_you_mean([alias], list(aliases))}"
    elif version:
        wrong = f"no version {version}"
    else:
        wrong = "no version or alias in the URI (use models:/NAME/VERSION or models:/NAME@ALIAS)"
    raise RegistryError(_sentence(f"{uri}: model {name!r} has {wrong}")
                        + f" Its aliases: {named}; its versions: "
                        f"{', '.join(map(str, numbers)) or 'none'}")


def _sentence(text: str) -> str:
    """``text`` ending as a sentence (a question keeps its question mark)."""
    return text if text.endswith(("?", ".", ")")) else text + "."


class _HideExplainedErrors(logging.Filter):
    """Drop Prefect's traceback logs for errors heartflow reports itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (HeartflowError, Interrupted, KeyboardInterrupt)):
            return False
        if isinstance(exc, Exception) and is_transient(exc):
            return False
        return "Finished in state Failed" not in record.getMessage()


class _OwnProgramsTracedOnce(logging.Filter):
    """TensorFlow warns when one Python function was traced on 5 recent calls. heartflow's
    many-model programs (``model/together.py``: CV folds, bootstrap refits, a sweep's seeds)
    are built afresh for each set of networks and traced once each, by design, so in a
    notebook that runs several of them the warning names ``_compile.<locals>`` on every
    later run. Only that warning about heartflow's own programs is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("triggered tf.function retracing" in text
                    and "function _compile.<locals>." in text)


def _quiet_loggers() -> None:
    import mlflow  # noqa: F401  (lazy: configures its loggers on import; adjust after)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry chatter; we report
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _OwnProgramsTracedOnce) for f in tf_logger.filters):
        tf_logger.addFilter(_OwnProgramsTracedOnce())
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideExplainedErrors) for f in logger.filters):
            logger.addFilter(_HideExplainedErrors())


def _start_flow_server() -> None:
    """Start this process's local Prefect server now (a no-op once started, or when
    ``PREFECT_API_URL`` names one), so that it boots on the other core while the caller
    imports MLflow and checks the registry."""
    from heartflow.runtime.prefect_server import start_local_server  # lazy: 50 ms

    apply_quiet_defaults()
    start_local_server()


@contextlib.contextmanager
def _flow_engine(flows: str, *, tensorflow: bool = True) -> Iterator[None]:
    """Prepare this process to run the flows of module ``flows`` (imported here, with the
    GC paused), then hold Prefect's API for the block."""
    from heartflow.runtime.prefect_server import start_local_server, using  # lazy: 50 ms

    apply_quiet_defaults()
    server = start_local_server()
    with imports_without_gc():
        if tensorflow:
            from heartflow.runtime.quiet_import import import_tensorflow  # lazy: TensorFlow

            import_tensorflow()
        importlib.import_module(flows)  # lazy: Prefect and the flows
        from heartflow.tracking.store import preload  # lazy: MLflow

        preload()
        _quiet_loggers()
    with using(server), warnings.catch_warnings():
        # Keras' ONNX export patches tf2onnx after probing ``hasattr(np, "object")``, an
        # alias NumPy removed; NumPy answers with a FutureWarning about Keras' code, not the
        # user's (a red stderr box under every notebook run). Only that warning, only from
        # that module. (Its home is the export call in heartflow/model/scorer.py.)
        warnings.filterwarnings("ignore", message=r"In the future `np\.object` will be",
                                category=FutureWarning, module=r"keras\.src\.export\.")
        yield


CSV_DIGITS = 6  # risks written to a CSV: 1e-6 is finer than any model's precision


def written_scores(scored: Any) -> Any:
    """Scored columns as ``heartflow predict`` writes them: risks rounded to
    :data:`CSV_DIGITS` decimals (not float64's 17 digits); labels and counts as they are."""
    return scored.round(CSV_DIGITS)


def _rows_html(rows: list[dict[str, Any]], caption: str) -> str:
    if not rows:
        return f"<p>{html.escape(caption)}: no runs</p>"
    columns = [c for c in rows[0] if c not in ("run_id",)]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    from heartflow.evaluation.tables import interval, number  # lazy: rich

    if isinstance(value, float):
        return number(value)
    if isinstance(value, tuple) and len(value) == 2:
        return interval(*value)
    return "" if value is None else str(value)

