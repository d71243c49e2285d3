"""What the flows return: typed results, printed by the CLI, shown by notebooks.

- :class:`RunOutcome`: one training run (``heartflow run``, a sweep trial, a retraining);
- :class:`TrialResult`: one trial of a sweep, finished or failed;
- :class:`Figures`: PNG plots a run logged (or a comparison drew), shown inline in Jupyter.

At a Python prompt each prints a few lines (what it is, its key figures, how to see more);
``.table()`` gives the full text view and Jupyter renders ``_repr_html_``.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heartflow.evaluation.subgroups import SHOWN, subgroup_table
from heartflow.evaluation.tables import FigureTable, figure, number, outcome_rows, text_of
from heartflow.model.builder import count_parameters
from heartflow.tracking.names import PLOTS_FOLDER
from heartflow.tracking.store import client

# The order plots are shown in (others follow by name): how it trained, then how it judges.
FIGURE_ORDER = ("learning_curves", "roc_curve", "reliability", "decision_curve",
                "precision_recall", "confusion_matrix")


@dataclass(frozen=True)
class Figures:
    """PNG figures by name; Jupyter shows them inline (``_repr_html_``, base64 images)."""

    images: dict[str, bytes]
    title: str = ""
    why_none: str = ""  # why there are no figures, when there are none

    def __repr__(self) -> str:
        if not self.images:
            return f"Figures({self.title}): none ({self.why_none or 'nothing logged'})"
        return (f"Figures({self.title}): {', '.join(self.images)}; shown inline in Jupyter, "
                ".save(folder) writes the PNG files")

    def only(self, *names: str) -> Figures:
        """These figures alone, in the order named (a name that was not drawn is left out,
        and said when none is left)."""
        kept = {n: self.images[n] for n in names if n in self.images}
        return Figures(kept, self.title, "" if kept else
                       f"none of {', '.join(names)} among {', '.join(self.images) or 'none'}")

    def save(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write each figure as ``<name>.png`` in ``folder``; returns the paths."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, png in self.images.items():
            path = target / f"{name}.png"
            path.write_bytes(png)
            paths.append(path)
        return paths

    def _repr_html_(self) -> str:
        if not self.images:
            return f"<p>no figures: {html.escape(self.why_none or 'nothing logged')}</p>"
        cells = "".join(
            "<figure style='display:inline-block;margin:4px'>"
            f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}' "
            f"alt='{html.escape(name)}' style='max-width:420px'/>"
            f"<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>"
            for name, png in self.images.items())
        head = f"<p><b>{html.escape(self.title)}</b></p>" if self.title else ""
        return f"<div>{head}{cells}</div>"


def ordered(images: dict[str, bytes]) -> dict[str, bytes]:
    """Figures in :data:`FIGURE_ORDER`, the rest after them by name."""
    rank = {name: i for i, name in enumerate(FIGURE_ORDER)}
    return dict(sorted(images.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def folder_figures(folder: str | os.PathLike[str], title: str = "") -> Figures:
    """The PNG files of a local folder as :class:`Figures`."""
    found = {p.stem: p.read_bytes() for p in sorted(Path(folder).glob("*.png"))}
    return Figures(ordered(found), title, "" if found else f"no PNG file in {folder}")


def run_figures(run_id: str, title: str = "") -> Figures:
    """The plots an MLflow run logged (its ``plots/`` artifacts) as :class:`Figures`."""
    # lazy: MLflow, only when a run's figures are asked for
    from mlflow.artifacts import download_artifacts

    listed = [a.path for a in client().list_artifacts(run_id, PLOTS_FOLDER)
              if a.path.endswith(".png")]
    if not listed:
        return Figures({}, title, f"run {run_id} logged no plot under {PLOTS_FOLDER}/")
    with tempfile.TemporaryDirectory(prefix="heartflow-figures-") as folder:
        local = download_artifacts(run_id=run_id, artifact_path=PLOTS_FOLDER, dst_path=folder)
        return folder_figures(local, title)


@dataclass
class RunOutcome:
    """The outcome of one training run."""

    spec_name: str
    run_id: str
    experiment_id: str
    input_width: int
    parameters: int
    metrics: dict[str, float]      # test rows: reported, never used to choose
    test_rows: int
    split: dict[str, int]
    epochs_run: int
    best_epoch: int | None
    train_seconds: float
    epochs_planned: int = 0
    model_name: str | None = None
    version: str | None = None
    promoted: bool | None = None
    decision: str = ""
    gate_rows: int | None = None
    undecided: bool = False
    data_sha256: str = ""
    intervals: dict[str, list[float]] = field(default_factory=dict)  # test: [low, high], 95%
    calibration: dict[str, float] = field(default_factory=dict)  # test rows, binary models
    validation: dict[str, float] = field(default_factory=dict)  # what runs are chosen by
    validation_rows: int = 0
    validation_output: list = field(default_factory=list)
    validation_labels: list = field(default_factory=list)
    cv: dict[str, list[float]] = field(default_factory=dict)  # metric -> [mean, ci95]
    cv_scores: dict[str, list[float]] = field(default_factory=dict)  # per fold (paired tests)
    cv_folds: int = 0
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)  # name -> artifact path in the run
    threshold: float | None = None  # binary: the decision threshold in force
    threshold_rule: str = ""  # how it was set (given, cost ratio, least cost on validation)
    subgroups: list[dict[str, object]] = field(default_factory=list)  # test rows, per subgroup
    cv_pooled: dict[str, float] = field(default_factory=dict)  # pooled out-of-fold, binary
    extra: dict[str, object] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)  # test figure -> why undefined
    cv_pooled_undefined: dict[str, str] = field(default_factory=dict)  # the same, pooled
    sample_size: dict[str, object] = field(default_factory=dict)  # Riley's criteria (binary)
    corrected: dict[str, float] = field(default_factory=dict)  # optimism bootstrap
    optimism: dict[str, float] = field(default_factory=dict)
    instability: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Plain data."""
        return asdict(self)

    @classmethod
    def of(cls, spec: Any, data: Any, result: Any, evaluation: Any, summary: Any,
           baselines: dict[str, dict[str, float]], threshold: float | None, rule: str,
           recorder: Any, model_name: str | None, version: str | None, decision: Any,
           sample_size: Any = None, validation: Any = None) -> RunOutcome:
        """The outcome of one tracked run, from what its steps returned."""
        return cls(
            spec_name=spec.name, run_id=recorder.run_id, experiment_id=recorder.experiment_id,
            input_width=data.width, parameters=count_parameters(spec, data.width),
            metrics=evaluation.metrics, test_rows=evaluation.test_rows, split=data.sizes(),
            intervals={k: list(v) for k, v in evaluation.intervals.items()},
            calibration=evaluation.calibration, validation=evaluation.validation,
            validation_rows=evaluation.validation_rows,
            validation_output=evaluation.validation_output,
            validation_labels=evaluation.validation_labels,
            epochs_run=result.epochs_run, epochs_planned=spec.train.epochs,
            best_epoch=result.best_epoch, train_seconds=result.seconds,
            model_name=model_name, version=version,
            promoted=decision.promoted if decision else None,
            decision=decision.reason if decision else "",
            gate_rows=decision.gate_rows if decision else None,
            undecided=bool(decision and decision.undecided), data_sha256=data.sha256,
            cv={m: [summary.mean(m), summary.ci95(m)] for m in summary.scores}
            if summary else {},
            cv_scores=dict(summary.scores) if summary else {},
            cv_folds=summary.folds if summary else 0, baselines=baselines,
            plots={p.rsplit("/", 1)[-1].removesuffix(".png"): f"plots/{p.rsplit('/', 1)[-1]}"
                   for p in evaluation.plots},
            threshold=threshold, threshold_rule=rule,
            subgroups=_subgroup_records(evaluation.subgroups),
            cv_pooled=summary.pooled_metrics() if summary else {},
            extra={"streaming": data.streaming, "rows": data.rows},
            undefined=dict(getattr(evaluation, "undefined", {})),
            cv_pooled_undefined=_pooled_undefined(summary),
            sample_size=_sample_size(sample_size),
            corrected=dict(validation.corrected) if validation else {},
            optimism=dict(validation.optimism) if validation else {},
            instability={"mean_abs_difference": validation.mean_abs_difference,
                         "flip_share": validation.flip_share,
                         "resamples": float(validation.resamples)} if validation else {})

    @property
    def model_uri(self) -> str | None:
        """``models:/name/version`` of the registered version, if one was registered."""
        return f"models:/{self.model_name}/{self.version}" if self.version else None

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (what, value) pairs: the CLI's table and the notebook's (one
        formatter: :func:`heartflow.evaluation.tables.outcome_rows`)."""
        return outcome_rows(self)

    def table(self, width: int = 100) -> str:
        """The full summary as text (the table ``heartflow run`` prints)."""
        table = FigureTable(title=f"heartflow run: {self.spec_name}", show_header=False)
        rows = self.rows()
        table.column("what", [w for w, _ in rows])
        table.column("value", [v for _, v in rows])
        for what, value in rows:
            table.add_row(what, value)
        return text_of(table, width)

    def figures(self) -> Figures:
        """The run's plots (learning curves, ROC, reliability, decision curve, ...), read
        from its MLflow run; shown inline in Jupyter."""
        return run_figures(self.run_id, f"heartflow run: {self.spec_name}")

    def __repr__(self) -> str:
        first = next(iter(self.metrics), None)
        lines = [f"heartflow run {self.spec_name} (MLflow run {self.run_id[:8]}): "
                 f"{self.input_width} inputs, {self.parameters} parameters, "
                 f"{self.epochs_run} epochs"]
        figures = []
        if first and first in self.validation:
            figures.append(f"validation {first} {number(self.validation[first])} "
                           f"(n={self.validation_rows})")
        if first and first in self.cv:
            mean, ci = self.cv[first]
            figures.append(f"CV {first} {number(mean)} ± {number(ci)}")
        if first:
            low, high = self.intervals.get(first, (None, None))
            figures.append(f"test {first} {figure(self.metrics[first], low, high)} "
                           f"(n={self.test_rows})")
        if figures:
            lines.append("  " + "; ".join(figures))
        if self.version:
            verdict = "champion" if self.promoted else "not promoted"
            lines.append(f"  registered {self.model_name} v{self.version} ({verdict})")
        lines.append("  more: .table() the full summary, .figures() the plots, "
                     ".metrics, .as_dict()")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                       for k, v in self.rows())
        table = (f"<table><caption>heartflow run: {html.escape(self.spec_name)}</caption>"
                 f"{body}</table>")
        try:
            shown = self.figures()._repr_html_()
        except Exception as exc:  # the summary stands without its plots
            shown = (f"<p>figures not shown: {html.escape(type(exc).__name__)}: "
                     f"{html.escape(str(exc)[:300])}</p>")
        return table + shown


@dataclass
class TrialResult:
    """One trial of a sweep: its outcome when it finished, else the FAILED run and why."""

    number: int
    overrides: dict[str, Any]
    ok: bool
    seconds: float
    outcome: RunOutcome | None = None
    run_id: str | None = None  # the FAILED child run, when the trial failed
    error: str = ""
    worker: str = ""  # the Prefect worker that ran it (``--pool``)

    @property
    def label(self) -> str:
        """The swept values, e.g. ``model.hidden.0.units=8``."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items())

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready with ``default=str``)."""
        return asdict(self)

    def __repr__(self) -> str:
        if not self.ok or self.outcome is None:
            return f"trial {self.number} ({self.label}): FAILED: {self.error[:200]}"
        first = repr(self.outcome).splitlines()
        return f"trial {self.number} ({self.label}): " + "\n".join(first[:2])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        """Back from :meth:`as_dict` (a pool worker's JSON)."""
        outcome = data.get("outcome")
        return cls(**{**data, "outcome": RunOutcome(**outcome) if outcome else None})


def _subgroup_records(subgroups: list[Any]) -> list[dict[str, object]]:
    """The subgroup table as plain rows, each with why its undefined figures are."""
    if not subgroups:
        return []
    records = subgroup_table(subgroups).to_dict("records")
    for record, g in zip(records, subgroups, strict=True):
        record["undefined"] = {k: v for k, v in g.report.undefined.items() if k in SHOWN}
    return records


def _pooled_undefined(summary: Any) -> dict[str, str]:
    """Why each pooled out-of-fold figure is undefined (names as in ``cv_pooled``)."""
    report = summary.pooled_report if summary else None
    if report is None:
        return {}
    return {k.replace("@", "_at_"): v for k, v in report.undefined.items()}


def _sample_size(check: Any) -> dict[str, object]:
    """Riley's check as plain data: rows, events, each view's minimum and the warning."""
    if check is None:
        return {}
    return {"development_rows": check.rows, "development_events": check.events,
            "anticipated": check.anticipated,
            "by_inputs": {"parameters": check.by_inputs.parameters,
                          "rows": check.by_inputs.rows},
            "by_weights": {"parameters": check.by_weights.parameters,
                           "rows": check.by_weights.rows},
            "warning": check.warning()}
