"""What the flows return: typed results, printed by the CLI, shown by notebooks.

- :class:`RunOutcome`: one training run (``heartflow run``, a sweep trial, a retraining);
- :class:`TrialResult`: one trial of a sweep, finished or failed.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

from heartflow.evaluation.heldout import UNDEFINED_REASON
from heartflow.evaluation.subgroups import SHOWN, subgroup_table
from heartflow.evaluation.tables import UNDEFINED, defined, figure, interval, number
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

    def as_dict(self) -> dict[str, object]:
        """Plain data."""
        return asdict(self)

    @classmethod
    def of(cls, spec: Any, data: Any, result: Any, evaluation: Any, summary: Any,
           baselines: dict[str, dict[str, float]], threshold: float | None, rule: str,
           recorder: Any, model_name: str | None, version: str | None, decision: Any
           ) -> RunOutcome:
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
            cv_pooled_undefined=_pooled_undefined(summary))

    @property
    def model_uri(self) -> str | None:
        """``models:/name/version`` of the registered version, if one was registered."""
        return f"models:/{self.model_name}/{self.version}" if self.version else None

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (what, value) pairs: the CLI's table and the notebook's."""
        split = self.split
        stopped = 0 < self.epochs_run < (self.epochs_planned or self.epochs_run + 1)
        stop = (f" (early stop, best epoch {self.best_epoch})" if stopped and self.best_epoch
                else f" (best epoch {self.best_epoch})" if self.best_epoch else "")
        out = [("inputs", str(self.input_width)), ("parameters", str(self.parameters)),
               ("rows (train/val/test)",
                f"{split['train']}/{split['validation']}/{split['test']}"),
               ("epochs run", f"{self.epochs_run}{stop}"),
               ("train time", f"{self.train_seconds:.2f} s")]
        out += [(f"validation {name}", f"{value:.4f}  (n={self.validation_rows} validation "
                 "rows; runs are compared on these)") for name, value in self.validation.items()
                if value == value][:1]
        out += [(f"test {name}", self._test_figure(name, value))
                for name, value in self.metrics.items()]
        c = self.calibration
        if "calibration_slope" in c:
            out.append(("test calibration",
                        f"slope {self._figure('calibration_slope', 2)}, intercept "
                        f"{self._figure('calibration_intercept', 2, signed=True)}; mean risk "
                        f"{self._figure('mean_risk', 2)} vs prevalence "
                        f"{self._figure('prevalence', 2)}"))
        if self.threshold is not None and self.threshold_rule:
            shown = f"{self.threshold:.3f}: {self.threshold_rule}"
            if "expected_cost" in c:
                shown += f"; expected cost per test row {self._figure('expected_cost', 3)}"
            out.append(("threshold", shown))
        for g in self.subgroups:
            out.append((f"subgroup {g['subgroup']}", _subgroup_line(g)))
        out += [(f"CV {name}", f"{mean:.4f} ± {ci:.4f}  ({self.cv_folds} folds, 95% CI)"
                 if defined(mean) else f"{UNDEFINED} ({self.cv_folds} folds)")
                for name, (mean, ci) in self.cv.items()]
        if self.cv_pooled:
            p, why = self.cv_pooled, self.cv_pooled_undefined

            def pooled(name: str, digits: int, signed: bool = False) -> str:
                return _said(p.get(name), why.get(name), digits, signed=signed)

            out.append(("CV pooled out-of-fold",
                        f"AUC {pooled('roc_auc', 3)}, slope {pooled('calibration_slope', 2)}, "
                        f"intercept {pooled('calibration_intercept', 2, True)} "
                        f"(n={int(p.get('rows', 0))} development rows, first repeat)"))
        first = next(iter(self.metrics), "")
        for base, scores in self.baselines.items():
            shown = "  ".join(f"{k} {scores[k]:.4f}" for k in list(self.metrics)[:2]
                              if k in scores)
            if f"cv_{first}" in scores:
                shown += f"  (CV {first} {scores[f'cv_{first}']:.4f} ± " \
                         f"{scores[f'cv_{first}_ci95']:.4f})"
            out.append((f"baseline {base}", shown))
        out.append(("MLflow run", self.run_id))
        if self.version:
            verdict = "champion" if self.promoted else "not promoted"
            out.append(("registered", f"{self.model_name} v{self.version} ({verdict})"))
            out.append(("promotion", self.decision + (f" [gate rows: {self.gate_rows}]"
                                                      if self.gate_rows is not None else "")))
        return out

    def _test_figure(self, name: str, value: float) -> str:
        why = self.undefined.get(name)
        if value != value:
            return (f"undefined on the {self.test_rows} test rows "
                    f"({why or UNDEFINED_REASON.get(name, 'not computable on these rows')})")
        low, high = self.intervals.get(name, (float("nan"), float("nan")))
        ci = f"  [{low:.4f}, {high:.4f}]" if low == low and high == high else ""
        note = f"; {why}" if why and not ci else ""
        return f"{value:.4f}{ci}  (n={self.test_rows} test rows, 95% bootstrap{note})"

    def _figure(self, name: str, digits: int, signed: bool = False) -> str:
        """A clinical figure of the test rows with its interval, or why it has none."""
        c = self.calibration
        return _said(c.get(name), self.undefined.get(name), digits, c.get(f"{name}_ci_low"),
                     c.get(f"{name}_ci_high"), signed=signed)

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


def _said(value: Any, why: str | None, digits: int, low: Any = None, high: Any = None,
          *, signed: bool = False) -> str:
    """A figure with its interval; ``undefined (why)`` when it is undefined, and the figure
    followed by why when its interval is withheld."""
    if not defined(value):
        return f"{UNDEFINED} ({why})" if why else UNDEFINED
    shown = figure(value, low, high, digits, signed=signed)
    return f"{shown} ({why})" if why and not interval(low, high) else shown


def _subgroup_line(g: dict[str, Any]) -> str:
    """A subgroup's counts, and its figures only when it is large enough to judge."""
    counts = f"n={g['rows']}, {g['cases']} cases"
    why = g.get("undefined") or {}
    if g["too_small"]:
        detail = str(why.get("roc_auc", "")).removeprefix("too small to judge: ")
        return f"TOO SMALL TO JUDGE: counts only ({counts}" + (f"; {detail})" if detail
                                                               else ")")
    auc = _said(g["roc_auc"], why.get("roc_auc"), 3, g["roc_auc_ci_low"], g["roc_auc_ci_high"])
    return (f"AUC {auc}, slope {_said(g['calibration_slope'], why.get('calibration_slope'), 2)}"
            f", risk {_said(g['mean_risk'], why.get('mean_risk'), 2)} vs prevalence "
            f"{number(g['prevalence'], 2)} ({counts})")


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
