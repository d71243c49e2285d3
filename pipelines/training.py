"""The training flow: preprocess -> train -> evaluate (-> cross-validate, baselines) -> register.

One path for in-memory and streamed data: they differ only in where batches come from
(:mod:`heartflow.data.prepare`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from typing import Any

from prefect import flow, task

from heartflow.data.batches import class_weight_map
from heartflow.data.prepare import FrameSource, PreparedData, prepare
from heartflow.data.sources import ResolvedSource
from heartflow.evaluation.heldout import Evaluation, evaluate, evaluate_streamed, score_with
from heartflow.evaluation.metrics import epoch_metrics
from heartflow.evaluation.subgroups import subgroup_table
from heartflow.model.devices import device_scope
from heartflow.model.progress import EpochReporter
from heartflow.model.training import TrainResult, fit_dataset
from heartflow.pipelines.task_options import RETRYING, TASK_OPTIONS
from heartflow.spec.loading import LoadedSpec
from heartflow.tracking import runs as tracking
from heartflow.tracking.outcome import UNDEFINED_REASON, RunOutcome
from heartflow.tracking.run_record import record_run_inputs


@task(name="preprocess", **RETRYING)
def preprocess_task(loaded: LoadedSpec, resolved: ResolvedSource | None,
                    frame: FrameSource | None) -> PreparedData:
    """Read (or stream), check, split and encode the data."""
    return prepare(loaded, resolved, frame)


@task(name="train", **TASK_OPTIONS)
def train_task(loaded: LoadedSpec, data: PreparedData, verbose: bool) -> TrainResult:
    """Fit the network (per-epoch progress on the terminal)."""
    import keras

    spec = loaded.spec
    keras.utils.set_random_seed(spec.train.seed)  # before the batches: their shuffle is seeded
    weights = (class_weight_map(spec.train.class_weight, data.train_class_counts())
               if spec.task != "regression" else None)
    batches, steps = data.train_batches(spec, weights)
    x_val, y_val = data.validation()
    reporter = EpochReporter(spec.train.epochs, enabled=verbose)
    try:
        from heartflow.model.builder import count_parameters
        from heartflow.model.devices import device_for

        with device_scope(device_for(spec.train.device, count_parameters(spec, data.width))):
            return fit_dataset(spec, data.width, batches, steps, x_val, y_val, reporter,
                               epoch_metrics(spec.task, spec.evaluate.decision_threshold))
    finally:
        reporter.close()


@task(name="log-training", **RETRYING)
def log_training_task(result: TrainResult, recorder: tracking.Recorder) -> None:
    """Per-epoch metrics and training facts (retried: the model is not retrained)."""
    recorder.history(result.history)
    recorder.tags({"heartflow.epochs_run": result.epochs_run,
                   "heartflow.best_epoch": result.best_epoch or "",
                   "heartflow.parameters": result.model.count_params()})
    recorder.metrics({"train_seconds": result.seconds, "epochs_run": result.epochs_run})


def settle_threshold(loaded: LoadedSpec, data: PreparedData, result: TrainResult,
                     recorder: tracking.Recorder) -> tuple[LoadedSpec, str]:
    """Fix the decision threshold (given, from the cost ratio, or least cost on validation
    rows) before any test row is scored; record it and how it was set."""
    from heartflow.evaluation.thresholds import resolve_threshold
    from heartflow.model.scorer import network_output

    spec = loaded.spec
    if spec.task != "binary":
        return loaded, ""
    costs = spec.evaluate.costs
    x_val, y_val = data.validation()
    p_val = None
    if costs is not None and costs.method == "validation" and x_val is not None:
        p_val = network_output(result.model, x_val).reshape(-1)
    threshold, how = resolve_threshold(costs, spec.evaluate.decision_threshold, y_val, p_val)
    recorder.tags({"heartflow.threshold": repr(float(threshold)), "heartflow.threshold_rule": how})
    if p_val is None:
        return loaded, how
    chosen = spec.model_copy(update={"evaluate": spec.evaluate.with_chosen_threshold(threshold)})
    return replace(loaded, spec=chosen), how


@task(name="evaluate", **RETRYING)
def evaluate_task(loaded: LoadedSpec, data: PreparedData, result: TrainResult,
                  recorder: tracking.Recorder) -> Evaluation:
    """Score the test rows; log test metrics, plots and (binary) the clinical report."""
    spec = loaded.spec
    with tempfile.TemporaryDirectory(prefix="heartflow-plots-") as folder:
        features, y, _keys = data.gate_rows()
        if data.streaming:
            evaluation = evaluate_streamed(spec, result.model, data.test_batches(),
                                           result.history, folder,
                                           (data.encoder.transform(features), y),
                                           data.validation(), features)
        else:
            x_test, y_test = next(data.test_batches())
            evaluation = evaluate(spec, result.model, x_test, y_test, result.history, folder,
                                  data.classes, *data.validation(), test_features=features)
        recorder.directory(folder, "plots")
        if evaluation.clinical is not None:
            log_clinical_report(loaded, data, evaluation, recorder)
    recorder.metrics(evaluation.as_metrics())
    undefined = [k for k, v in evaluation.metrics.items() if v != v]
    if undefined:  # NaN is not logged as a metric: say so, and why
        recorder.tags({f"heartflow.undefined.test_{k}": UNDEFINED_REASON.get(k, "undefined")
                       for k in undefined})
    return evaluation


def log_clinical_report(loaded: LoadedSpec, data: PreparedData, evaluation: Evaluation,
                        recorder: tracking.Recorder) -> None:
    """report.html (figures, subgroups, plots) and evaluation/subgroups.csv with the run."""
    from heartflow.evaluation.report_html import render_report
    from heartflow.evaluation.subgroups import subgroup_table

    spec, report = loaded.spec, evaluation.clinical
    assert report is not None
    facts = [f"data: {data.source} (sha256 {data.sha256[:16]}...), {data.rows} rows; split "
             + ", ".join(f"{k} {v}" for k, v in data.sizes().items()),
             f"test rows scored once: {report.rows}; threshold "
             f"{spec.evaluate.decision_threshold:.3g}"]
    plots = {p.rsplit("/", 1)[-1].removesuffix(".png").replace("_", " "): p
             for p in evaluation.plots}
    recorder.text(render_report(f"{spec.name}: test rows", facts, report, plots,
                                evaluation.subgroups), "report.html")
    if evaluation.subgroups:
        recorder.text(subgroup_table(evaluation.subgroups).to_csv(index=False),
                      "evaluation/subgroups.csv")
        recorder.metrics(subgroup_metrics(evaluation))


def subgroup_metrics(evaluation: Evaluation) -> dict[str, float]:
    """``subgroup/<column>/<level>/<figure>`` metrics (MLflow-safe names)."""
    import re

    out = {}
    for g in evaluation.subgroups:
        level = re.sub(r"[^A-Za-z0-9_.-]+", "_", g.level).strip("_") or "level"
        key = f"subgroup/{g.column}/{level}"
        out[f"{key}/rows"], out[f"{key}/cases"] = float(g.rows), float(g.cases)
        for name in ("roc_auc", "calibration_slope", "calibration_intercept"):
            out[f"{key}/{name}"] = g.report.values[name]
    return out


@task(name="cross-validate", **TASK_OPTIONS)
def cv_task(loaded: LoadedSpec, data: PreparedData, recorder: tracking.Recorder):
    """Repeated stratified k-fold for the network; logs cv_<metric>_mean/_ci95."""
    from heartflow.evaluation.cv import cross_validate_network

    summary = cross_validate_network(loaded.spec, data.development())
    recorder.metrics(summary.as_metrics())
    pooled = summary.pooled_report
    if pooled is not None:  # every development row scored by a model that never saw it
        recorder.metrics(pooled.as_metrics("cv_pooled_"))
        log_pooled_report(loaded, summary, pooled, recorder)
    return summary


def log_pooled_report(loaded: LoadedSpec, summary, pooled, recorder: tracking.Recorder) -> None:
    """report_cv.html: the clinical report of the pooled out-of-fold risks, with plots."""
    import numpy as np

    from heartflow.evaluation import plots as P
    from heartflow.evaluation.report_html import render_report

    spec = loaded.spec
    y, p = summary.pooled_y, summary.pooled_p
    curve = spec.evaluate.decision_curve
    with tempfile.TemporaryDirectory(prefix="heartflow-cv-plots-") as folder:
        plots = {"reliability (pooled out-of-fold)": P.reliability_diagram(
                     y, p, f"{folder}/cv_reliability.png", "Reliability (pooled out-of-fold)"),
                 "decision curve (pooled out-of-fold)": P.decision_curve(
                     y, p, f"{folder}/cv_decision_curve.png",
                     "Decision curve (pooled out-of-fold)",
                     np.linspace(curve.low, curve.high, 80))}
        facts = [f"{pooled.rows} development rows, each scored by the fold model that did not "
                 f"train on it (first repeat of {spec.evaluate.cv.folds}-fold CV)",
                 "development rows: these figures may inform choices; the test report does "
                 "not"]
        recorder.text(render_report(f"{spec.name}: pooled out-of-fold", facts, pooled, plots),
                      "report_cv.html")
        recorder.directory(folder, "plots")


@task(name="baselines", **TASK_OPTIONS)
def baselines_task(loaded: LoadedSpec, data: PreparedData, recorder: tracking.Recorder,
                   parent_run_id: str | None) -> dict[str, dict[str, float]]:
    """Fit each baseline on the identical split and encoding; log each as a sibling run."""
    from heartflow.evaluation.baselines import run_baseline

    spec = loaded.spec
    results: dict[str, dict[str, float]] = {}
    for name in spec.evaluate.baselines:
        tags = {"heartflow.baseline": name, "heartflow.baseline_for": recorder.run_id,
                "heartflow.spec_name": spec.name, "heartflow.data_sha256": data.sha256,
                **{f"heartflow.split.{k}": v for k, v in data.sizes().items()}}
        with tracking.tracked_run(spec.name, f"baseline-{name}", tags=tags,
                                  parent_run_id=parent_run_id) as base:
            result = run_baseline(name, spec, data)
            base.params({"baseline": name, **{f"estimator.{k}": v
                                               for k, v in result.params.items()}})
            base.metrics({f"test_{k}": v for k, v in result.metrics.items()})
            base.metrics({f"validation_{k}": v for k, v in (result.validation or {}).items()})
            base.metrics({"train_seconds": result.seconds})
            if result.cv is not None:
                base.metrics(result.cv.as_metrics())
        results[name] = result.scores()
    recorder.tags({"heartflow.baselines": ",".join(spec.evaluate.baselines)})
    return results


@task(name="register", **RETRYING)
def register_task(loaded: LoadedSpec, data: PreparedData, result: TrainResult,
                  evaluation: Evaluation, recorder: tracking.Recorder,
                  baseline_scores: dict[str, float],
                  version_tags: dict[str, str]) -> dict[str, object]:
    """Log the model (preprocessing + network), register a version, run the promotion gate."""
    from heartflow.model.scorer import Scorer, model_meta
    from heartflow.tracking import registry
    from heartflow.tracking.logged_model import log_model

    spec = loaded.spec
    uri = log_model(recorder.run_id, recorder.experiment_id, spec, data.encoder, result.model,
                    data.classes, data.example())
    if not spec.register.enabled:
        return {"model_uri": uri}
    name, metric = spec.model_name, spec.promotion_metric
    version = registry.register_version(uri, name, recorder.run_id, {
        "heartflow.spec_name": spec.name, "heartflow.data_sha256": data.sha256,
        **version_tags})
    features, y, keys = data.gate_rows()
    challenger = Scorer(data.encoder, result.model, model_meta(spec, data.encoder, data.classes))
    promote = spec.register.promote
    decision = registry.decide_and_promote(
        name, version, recorder.run_id, metric, challenger,
        registry.GateRows(features, y, keys),
        lambda scorer, rows, labels: score_with(scorer, rows, labels, spec, metric),
        promote.min_improvement, promote.min_gate_rows,
        baseline_scores if promote.must_beat_baselines else None)
    recorder.tags({"heartflow.registered_model": name, "heartflow.registered_version": version})
    from heartflow.tracking.model_card import write_card

    write_card(name, version)  # model_card.md and .html with this run
    return {"model_uri": uri, "model_name": name, "version": version,
            "promoted": decision.promoted, "decision": decision.reason,
            "gate_rows": decision.gate_rows, "undecided": decision.undecided}


def execute(loaded: LoadedSpec, *, frame: FrameSource | None = None, verbose: bool = True,
            parent_run_id: str | None = None, run_name: str | None = None,
            extra_tags: dict[str, str] | None = None) -> RunOutcome:
    """The flow body (also called by sweep trials and retraining)."""
    data = _prepared(loaded, frame)
    return _tracked(loaded, data, None, verbose, parent_run_id, run_name, extra_tags)


def _prepared(loaded: LoadedSpec, frame: FrameSource | None = None) -> PreparedData:
    """Check the device and the tracking server, then preprocess the spec's data."""
    from heartflow.model.devices import check_device

    spec = loaded.spec
    check_device(spec.train.device)
    tracking.check_reachable()
    resolved = None
    if frame is None:
        from heartflow.data.sources import resolve_source

        resolved = resolve_source(spec.data.source, loaded.base_dir, spec.data.sha256)
    return preprocess_task(loaded, resolved, frame)


def execute_seeds(loadeds: list[LoadedSpec], *, parent_run_id: str | None = None,
                  run_names: list[str] | None = None) -> list[RunOutcome | Exception]:
    """Specs that differ only in ``train.seed`` (a sweep's seeds): the data prepared once,
    the networks trained together in one program when they can be
    (:func:`heartflow.model.together.fit_seeds`), then each seed tracked, evaluated and
    registered as its own run, exactly as :func:`execute` does. A seed whose run fails
    gives its exception in its place; the others go on."""
    first = loadeds[0].spec
    data = _prepared(loadeds[0])
    trained = train_seeds_task(loadeds, data) if trains_together(first, data, len(loadeds)) \
        else [None] * len(loadeds)
    outcomes: list[RunOutcome | Exception] = []
    for loaded, result, name in zip(loadeds, trained, run_names or [None] * len(loadeds),
                                    strict=True):
        tags = {"heartflow.trained_together": str(len(loadeds))} if result else None
        try:
            outcomes.append(_tracked(loaded, data, result, False, parent_run_id, name, tags))
        except Exception as exc:  # one seed's failure must not lose the others
            outcomes.append(exc)
    return outcomes


def trains_together(spec, data: PreparedData, seeds: int) -> bool:
    """Whether a sweep's seeds can share one program: in-memory rows that fit K times,
    full precision, and a CPU choice (a GPU takes one trial at a time)."""
    from heartflow.data.prepare import Prepared
    from heartflow.model.builder import count_parameters
    from heartflow.model.devices import device_for
    from heartflow.model.together import fits_together

    if seeds < 2 or not isinstance(data, Prepared) or spec.train.mixed_precision:
        return False
    return (device_for(spec.train.device, count_parameters(spec, data.width)) == "cpu"
            and fits_together(seeds, data.rows, data.width))


@task(name="train-seeds", **TASK_OPTIONS)
def train_seeds_task(loadeds: list[LoadedSpec], data: PreparedData) -> list[TrainResult]:
    """One network per seed, trained together on the same rows."""
    from heartflow.model.together import fit_seeds

    spec = loadeds[0].spec
    x_train, y_train = data.part("train")
    x_val, y_val = data.validation()
    with device_scope("cpu"):
        return fit_seeds(spec, [loaded.spec.train.seed for loaded in loadeds], x_train,
                         y_train, x_val, y_val,
                         epoch_metrics(spec.task, spec.evaluate.decision_threshold))


def _tracked(loaded: LoadedSpec, data: PreparedData, result: TrainResult | None,
             verbose: bool, parent_run_id: str | None, run_name: str | None,
             extra_tags: dict[str, str] | None) -> RunOutcome:
    """One tracked run on prepared data: train (unless ``result`` is given), evaluate,
    cross-validate, compare with baselines, register."""
    from heartflow.model.builder import count_parameters

    spec = loaded.spec
    run_name = run_name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracking.tracked_run(spec.name, run_name, parent_run_id=parent_run_id) as recorder:
        record_run_inputs(recorder, loaded, data, extra_tags)
        result = result or train_task(loaded, data, verbose)
        log_training_task(result, recorder)
        loaded, rule = settle_threshold(loaded, data, result, recorder)
        spec = loaded.spec
        evaluation = evaluate_task(loaded, data, result, recorder)
        summary = cv_task(loaded, data, recorder) if spec.evaluate.cv else None  # dev rows
        baselines = (baselines_task(loaded, data, recorder, parent_run_id)
                     if spec.evaluate.baselines else {})
        metric = spec.promotion_metric
        registered = register_task(loaded, data, result, evaluation, recorder,
                                   {b: s[metric] for b, s in baselines.items()},
                                   {k: v for k, v in (extra_tags or {}).items()})
    return RunOutcome(
        spec_name=spec.name, run_id=recorder.run_id, experiment_id=recorder.experiment_id,
        input_width=data.width, parameters=count_parameters(spec, data.width),
        metrics=evaluation.metrics, test_rows=evaluation.test_rows, split=data.sizes(),
        intervals={k: list(v) for k, v in evaluation.intervals.items()},
        calibration=evaluation.calibration,
        validation=evaluation.validation, validation_rows=evaluation.validation_rows,
        validation_output=evaluation.validation_output,
        validation_labels=evaluation.validation_labels,
        epochs_run=result.epochs_run, epochs_planned=spec.train.epochs,
        best_epoch=result.best_epoch, train_seconds=result.seconds,
        model_name=registered.get("model_name"), version=registered.get("version"),
        promoted=registered.get("promoted"), decision=str(registered.get("decision", "")),
        gate_rows=registered.get("gate_rows"), undecided=bool(registered.get("undecided")),
        data_sha256=data.sha256,
        cv={m: [summary.mean(m), summary.ci95(m)] for m in summary.scores} if summary else {},
        cv_scores=dict(summary.scores) if summary else {},
        cv_folds=summary.folds if summary else 0, baselines=baselines,
        plots={p.rsplit("/", 1)[-1].removesuffix(".png"): f"plots/{p.rsplit('/', 1)[-1]}"
               for p in evaluation.plots},
        threshold=spec.evaluate.decision_threshold if spec.task == "binary" else None,
        threshold_rule=rule,
        subgroups=(subgroup_table(evaluation.subgroups).to_dict("records")
                   if evaluation.subgroups else []),
        cv_pooled=summary.pooled_metrics() if summary else {},
        extra={"streaming": data.streaming, "rows": data.rows})


@flow(name="heartflow-run", persist_result=False, validate_parameters=False)
def train_flow(loaded: LoadedSpec, frame: FrameSource | None = None, verbose: bool = True,
               parent_run_id: str | None = None, spec_path: str = "") -> dict[str, Any]:
    """Preprocess -> train -> evaluate -> register for an already validated spec.

    ``spec_path`` is only recorded on the flow run (Prefect records parameters as JSON;
    the validated spec itself shows there as ``<LoadedSpec>``).
    """
    return execute(loaded, frame=frame, verbose=verbose, parent_run_id=parent_run_id).as_dict()
