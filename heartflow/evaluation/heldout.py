"""The evaluate step: score held-out rows, compute the spec's metrics, draw plots.

Test metrics come with 95% bootstrap intervals and the number of rows they rest on;
validation metrics (development rows, the ones runs are compared and chosen by) are
computed with the same trained model. In-memory test rows are scored in one batch
(exact metrics); streamed test rows are scored block by block into a constant-memory
accumulator, their intervals from a uniform sample of the test part.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from heartflow.evaluation import metrics as M
from heartflow.evaluation import plots as P
from heartflow.evaluation.clinical import RISK_FREE, ClinicalReport, clinical_report
from heartflow.evaluation.intervals import (
    MAX_ROWS,
    MAX_UNDEFINED_SHARE,
    RESAMPLES,
    bootstrap_intervals,
)
from heartflow.evaluation.subgroups import Subgroup, subgroup_reports
from heartflow.model.scorer import network_output
from heartflow.spec.schema import Spec

VALIDATION_OUTPUT_ROWS = 20_000  # kept for paired comparisons of runs (sweeps)
UNDEFINED_REASON = {  # why a metric can be undefined (NaN) on a set of rows
    "roc_auc": "needs both classes among the rows", "pr_auc": "needs a positive row",
    "r2": "the target is constant on these rows"}
"""The generic reason for a metric that is undefined: a fallback only. An
:class:`Evaluation` says why each of its figures is undefined on its own rows
(``Evaluation.undefined``, ``Evaluation.as_undefined``)."""


def diverged(count: int, total: int) -> str:
    """Why every figure of a network whose outputs include NaN or infinity is undefined."""
    return (f"{count} of the {total} network outputs are not numbers (NaN or infinite): the "
            "network diverged")


def withheld(count: int, resamples: int) -> str:
    """Why a defined figure's bootstrap interval is withheld."""
    return (f"interval withheld: undefined on {count} of {resamples} bootstrap resamples "
            f"(more than {MAX_UNDEFINED_SHARE:.0%})")


@dataclass
class Evaluation:
    """Test metrics with intervals, validation metrics, and the plots."""

    metrics: dict[str, float]
    test_rows: int
    plots: list[str] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    validation_rows: int = 0
    validation_output: list = field(default_factory=list)  # per row, when few enough
    validation_labels: list = field(default_factory=list)
    calibration: dict[str, float] = field(default_factory=dict)  # binary: slope, intercept...
    clinical: ClinicalReport | None = None  # binary, in-memory: the whole clinical report
    subgroups: list[Subgroup] = field(default_factory=list)
    undefined: dict[str, str] = field(default_factory=dict)
    """Why each figure of ``metrics`` and ``calibration`` (same keys) is undefined (NaN), or
    why its interval is withheld (the reason then starts "interval withheld")."""
    resamples: int = 0  # bootstrap resamples behind the test metrics' intervals
    undefined_resamples: dict[str, int] = field(default_factory=dict)
    """How many bootstrap resamples left each figure of ``metrics`` and ``calibration``
    undefined (figures with any only; the clinical figures' out of ``clinical.resamples``)."""

    def as_metrics(self) -> dict[str, float]:
        """MLflow metrics: test_<m>, test_<m>_ci_low/_ci_high, validation_<m>, and
        test_<m>_undefined_resamples for figures undefined on some resamples."""
        out = {f"test_{k}": v for k, v in self.metrics.items()}
        for k, (low, high) in self.intervals.items():
            out[f"test_{k}_ci_low"], out[f"test_{k}_ci_high"] = low, high
        out.update({f"validation_{k}": v for k, v in self.validation.items()})
        out.update({f"test_{k}": v for k, v in self.calibration.items()})
        out.update({f"test_{k}_undefined_resamples": float(v)
                    for k, v in self.undefined_resamples.items()})
        return out

    def as_undefined(self) -> dict[str, str]:
        """The MLflow metric name (``test_<m>``) of every figure that is undefined, or whose
        interval is withheld, and why: NaN is never logged as a metric, so the run says why
        in a tag instead."""
        return {f"test_{k}": why for k, why in self.undefined.items()}


def _flat(spec: Spec, output: np.ndarray) -> np.ndarray:
    return output if spec.task == "multiclass" else output.reshape(-1)


def validation_scores(spec: Spec, model, x_val: np.ndarray | None,
                      y_val: np.ndarray | None, threshold: float) -> dict[str, Any]:
    """Evaluation fields for the validation rows: metrics, count, outputs and labels (if few)."""
    if x_val is None or not len(x_val):
        return {}
    output = _flat(spec, network_output(model, x_val))
    values = M.compute(spec.task, y_val, output, threshold, spec.metrics)
    few = len(output) <= VALIDATION_OUTPUT_ROWS
    return {"validation": values, "validation_rows": len(output),
            "validation_output": output.tolist() if few else [],
            "validation_labels": np.asarray(y_val).tolist() if few else []}


def evaluate_prepared(spec: Spec, data: Any, model: Any, history: dict[str, list[float]],
                      threshold: float, plot_dir: str) -> Evaluation:
    """Score the test rows of prepared data (in memory, or streamed block by block) once,
    at the settled decision threshold; plots go to ``plot_dir``."""
    features, y, _keys = data.gate_rows()
    if data.streaming:
        return evaluate_streamed(spec, model, data.test_batches(), threshold, history, plot_dir,
                                 (data.encoder.transform(features), y), data.validation(),
                                 features)
    x_test, y_test = next(data.test_batches())
    return evaluate(spec, model, x_test, y_test, threshold, history, plot_dir, data.classes,
                    *data.validation(), test_features=features)


def evaluate(spec: Spec, model, x_test: np.ndarray, y_test: np.ndarray, threshold: float,
             history: dict[str, list[float]] | None = None, plot_dir: str | None = None,
             classes: list[str] | None = None, x_val: np.ndarray | None = None,
             y_val: np.ndarray | None = None,
             test_features: pd.DataFrame | None = None) -> Evaluation:
    """Metrics on in-memory test rows (with intervals), validation metrics, and plots;
    for a binary model also the clinical report, per subgroup of ``test_features``."""
    output = network_output(model, x_test)
    values = M.compute(spec.task, y_test, _flat(spec, output), threshold, spec.metrics)
    missing: dict[str, int] = {}
    intervals = bootstrap_intervals(spec.task, y_test, _flat(spec, output), threshold,
                                    spec.metrics, seed=spec.train.seed, undefined=missing)
    bad = int(np.sum(~np.isfinite(np.asarray(output, dtype=np.float64))))
    if bad:  # undefined on every resample, for the one reason below
        missing.clear()
    reasons = metric_reasons(spec.task, len(y_test), int(np.sum(np.asarray(y_test) > 0.5)),
                             values, intervals, missing,
                             _resamples_of(len(y_test), spec.metrics), bad, output.size)
    validation = validation_scores(spec, model, x_val, y_val, threshold)
    plots: list[str] = []
    if plot_dir:
        if history:
            plots.append(P.learning_curves(history, f"{plot_dir}/learning_curves.png"))
        if spec.task == "binary":
            p = output.reshape(-1)
            curve = spec.evaluate.decision_curve
            plots += P.binary_plots(y_test, p, threshold, plot_dir)
            plots.append(P.reliability_diagram(y_test, p, f"{plot_dir}/reliability.png",
                                               "Reliability (test)"))
            plots.append(P.decision_curve(y_test, p, f"{plot_dir}/decision_curve.png",
                                          "Decision curve (test)",
                                          np.linspace(curve.low, curve.high, 80)))
        elif spec.task == "multiclass":
            plots += P.multiclass_plots(y_test, output, classes or [], plot_dir)
    extra: dict[str, Any] = {}
    if spec.task == "binary":  # discrimination is not enough for a risk model
        extra = clinical_fields(spec, y_test, output.reshape(-1), threshold, test_features)
        if bad:
            _diverged_report(extra, diverged(bad, output.size))
    return Evaluation(metrics=values, test_rows=len(y_test), plots=plots, intervals=intervals,
                      **_with_reasons(extra, reasons, missing, len(y_test), spec.metrics),
                      **validation)


def _resamples_of(rows: int, names: list[str]) -> int:
    """How many bootstrap resamples :func:`bootstrap_intervals` draws for ``rows`` rows."""
    if rows < 2 or not names:
        return 0
    return RESAMPLES if min(rows, MAX_ROWS) <= 5000 else 200


def metric_reasons(task: str, rows: int, cases: int, values: dict[str, float],
                   intervals: dict[str, tuple[float, float]], missing: dict[str, int],
                   resamples: int, non_finite: int, total: int) -> dict[str, str]:
    """Why each undefined metric of ``values`` is undefined on ``rows`` rows (``cases``
    with the outcome, for a binary model), and why a defined one's interval is withheld
    (``missing``: undefined resamples of ``resamples``). ``non_finite`` of the ``total``
    network outputs were NaN or infinite: then every metric is undefined for that reason."""
    if non_finite:
        return dict.fromkeys(values, diverged(non_finite, total))
    out = {}
    for name, value in values.items():
        if value != value:
            out[name] = _why(task, name, rows, cases)
            continue
        low, high = intervals.get(name, (0.0, 0.0))
        if resamples and missing.get(name, 0) > MAX_UNDEFINED_SHARE * resamples and not (
                low == low and high == high):
            out[name] = withheld(missing[name], resamples)
    return out


def _why(task: str, name: str, n: int, cases: int) -> str:
    """Why metric ``name`` is undefined on finite outputs for ``n`` rows, ``cases`` of
    them with the outcome (binary)."""
    if not n:
        return "there are no rows"
    if name == "roc_auc" and task == "binary":
        return (f"needs both classes among the rows: all {n} rows are "
                f"{'with' if cases else 'without'} the outcome")
    if name == "roc_auc" and task == "multiclass":
        return f"needs rows of at least two classes: all {n} rows are of one class"
    return UNDEFINED_REASON.get(name, "not computable on these rows")


def _with_reasons(extra: dict[str, Any], reasons: dict[str, str], missing: dict[str, int],
                  rows: int, names: list[str]) -> dict[str, Any]:
    """The Evaluation fields of ``extra`` (clinical fields, if any) with the reasons and
    undefined-resample counts of the metrics and of the clinical figures."""
    undefined, counts = dict(reasons), dict(missing)
    report: ClinicalReport | None = extra.get("clinical")
    if report is not None:
        shown = extra.get("calibration", {})
        for name, why in report.undefined.items():
            key = name.replace("@", "_at_")
            if key in shown:
                undefined[key] = why
        for name, count in report.undefined_resamples.items():
            key = name.replace("@", "_at_")
            if key in shown:
                counts[key] = count
    return {**extra, "undefined": undefined, "resamples": _resamples_of(rows, names),
            "undefined_resamples": counts}


def _diverged_report(extra: dict[str, Any], reason: str) -> None:
    """Make every figure of the clinical report (and its ``calibration`` fields) that uses
    the risks undefined for ``reason``: some network outputs were not numbers."""
    report: ClinicalReport = extra["clinical"]
    for name in report.values:
        if name.startswith(RISK_FREE) or name.startswith("treat_all"):
            continue
        report.values[name] = float("nan")
        report.intervals[name] = (float("nan"), float("nan"))
        report.undefined[name] = reason
        report.undefined_resamples.pop(name, None)
    calibration = extra["calibration"]
    for key in list(calibration):
        figure = key.removesuffix("_ci_low").removesuffix("_ci_high")
        if not figure.startswith(RISK_FREE):
            calibration[key] = float("nan")
    report.notes = [f"every figure that uses the risks is undefined: {reason}"]


CLINICAL_PREFIXES = ("calibration_", "ece", "net_benefit", "mean_risk", "prevalence",
                     "expected_cost")


def clinical_fields(spec: Spec, y: np.ndarray, p: np.ndarray, threshold: float,
                    features: pd.DataFrame | None) -> dict[str, Any]:
    """The clinical report of test rows (and their subgroups) as Evaluation fields."""
    ev = spec.evaluate
    report_at = tuple(ev.decision_curve.report_at)
    report = clinical_report(y, p, threshold, report_at, seed=spec.train.seed,
                             costs=ev.costs)
    calibration = {}
    for name, value in report.values.items():
        if name.startswith(CLINICAL_PREFIXES):
            key = name.replace("@", "_at_")
            calibration[key] = value
            if name in report.intervals:
                calibration[f"{key}_ci_low"], calibration[f"{key}_ci_high"] = (
                    report.intervals[name])
    subgroups = []
    if ev.subgroups and features is not None:
        subgroups = subgroup_reports(features, y, p, ev.subgroup_specs, threshold,
                                     report_at, ev.min_subgroup_rows, spec.train.seed,
                                     ev.costs)
    return {"calibration": calibration, "clinical": report, "subgroups": subgroups}


def evaluate_streamed(spec: Spec, model, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                      threshold: float, history: dict[str, list[float]] | None = None,
                      plot_dir: str | None = None,
                      test_sample: tuple[np.ndarray, np.ndarray] | None = None,
                      validation: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
                      test_features: pd.DataFrame | None = None) -> Evaluation:
    """Binary metrics over test rows that arrive in blocks, in constant memory.

    Intervals and the clinical report come from ``test_sample`` (encoded rows drawn
    uniformly from the test part; ``test_features`` are the same rows, typed).
    """
    import tensorflow as tf  # lazy: only streamed runs compile a forward pass

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    totals = M.BinaryAccumulator(threshold)
    for x, y in batches:
        totals.update(y, forward(x).numpy())
    everything = totals.result()
    plots: list[str] = []
    if plot_dir:
        if history:
            plots.append(P.learning_curves(history, f"{plot_dir}/learning_curves.png"))
        plots += P.accumulated_plots(totals, plot_dir)
    values = {name: everything[name] for name in spec.metrics}
    intervals: dict[str, tuple[float, float]] = {}
    extra: dict[str, Any] = {}
    missing: dict[str, int] = {}
    sampled = 0
    if test_sample is not None:
        x_s, y_s = test_sample
        sampled = len(y_s)
        p_s = _flat(spec, network_output(model, x_s))
        intervals = bootstrap_intervals(spec.task, y_s, p_s, threshold, spec.metrics,
                                        seed=spec.train.seed, undefined=missing)
        extra = clinical_fields(spec, y_s, p_s, threshold, test_features)
        if totals.non_finite:  # somewhere in the part, if not in the sample
            _diverged_report(extra, diverged(totals.non_finite, totals.n))
            intervals = {name: (float("nan"), float("nan")) for name in intervals}
            missing.clear()
        extra["clinical"].notes.append(f"clinical figures from a uniform sample of {len(y_s)} "
                                       f"of the {totals.n} streamed test rows")
    reasons = metric_reasons(spec.task, totals.n, int(totals.pos.sum()), values, intervals,
                             missing, _resamples_of(sampled, spec.metrics),
                             totals.non_finite, totals.n)
    return Evaluation(metrics=values, test_rows=totals.n, plots=plots, intervals=intervals,
                      **_with_reasons(extra, reasons, missing, sampled, spec.metrics),
                      **validation_scores(spec, model, *validation, threshold))
