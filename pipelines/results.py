"""What the flows return: typed results, printed by the CLI, shown by notebooks.

- :class:`RunOutcome`: one training run (``heartflow run``, a sweep trial, a retraining);
- :class:`TrialResult`: one trial of a sweep, finished or failed.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

from heartflow.evaluation.subgroups import SHOWN, subgroup_table
from heartflow.evaluation.tables import outcome_rows
from heartflow.model.builder import count_parameters


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

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                       for k, v in self.rows())
        return (f"<table><caption>heartflow run: {html.escape(self.spec_name)}</caption>"
                f"{body}</table>")


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
