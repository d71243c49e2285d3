"""The training flow: preprocess -> train -> evaluate (-> cross-validate, baselines) -> register.

One path for in-memory and streamed data: they differ only in where batches come from
(:mod:`heartflow.data.prepare`).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from prefect import flow, task

from heartflow.data.batches import class_weight_map
from heartflow.data.prepare import FrameSource, PreparedData, prepare
from heartflow.data.sources import ResolvedSource
from heartflow.evaluation.heldout import Evaluation, evaluate, evaluate_streamed, score_with
from heartflow.evaluation.metrics import epoch_metrics
from heartflow.model.progress import EpochReporter
from heartflow.model.training import TrainResult, fit_dataset
from heartflow.pipelines.task_options import RETRYING, TASK_OPTIONS
from heartflow.spec.loading import LoadedSpec
from heartflow.tracking import runs as tracking
from heartflow.tracking.outcome import RunOutcome
from heartflow.tracking.run_record import record_run_inputs


@task(name="preprocess", **RETRYING)
def preprocess_task(loaded: LoadedSpec, resolved: ResolvedSource | None,
                    frame: FrameSource | None) -> PreparedData:
    """Read (or stream), check, split and encode the data."""
    return prepare(loaded, resolved, frame)


@task(name="train", **TASK_OPTIONS)
def train_task(loaded: LoadedSpec, data: PreparedData, verbose: bool) -> TrainResult:
    """Fit the network (per-epoch progress on the terminal)."""
    spec = loaded.spec
    weights = (class_weight_map(spec.train.class_weight, data.train_class_counts())
               if spec.task != "regression" else None)
    batches, steps = data.train_batches(spec, weights)
    x_val, y_val = data.validation()
    reporter = EpochReporter(spec.train.epochs, enabled=verbose)
    try:
        return fit_dataset(spec, data.width, batches, steps, x_val, y_val, reporter,
                           epoch_metrics(spec.task, spec.evaluate.threshold))
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


@task(name="evaluate", **RETRYING)
def evaluate_task(loaded: LoadedSpec, data: PreparedData, result: TrainResult,
                  recorder: tracking.Recorder) -> Evaluation:
    """Score the test rows; log test metrics and plots."""
    spec = loaded.spec
    with tempfile.TemporaryDirectory(prefix="heartflow-plots-") as folder:
        if data.streaming:
            evaluation = evaluate_streamed(spec, result.model, data.test_batches(),
                                           result.history, folder)
        else:
            x_test, y_test = next(data.test_batches())
            evaluation = evaluate(spec, result.model, x_test, y_test, result.history, folder,
                                  data.classes)
        recorder.directory(folder, "plots")
    recorder.metrics({f"test_{k}": v for k, v in evaluation.metrics.items()})
    return evaluation


@task(name="cross-validate", **TASK_OPTIONS)
def cv_task(loaded: LoadedSpec, data: PreparedData, recorder: tracking.Recorder):
    """Repeated stratified k-fold for the network; logs cv_<metric>_mean/_ci95."""
    from heartflow.evaluation.cv import cross_validate_network

    summary = cross_validate_network(loaded.spec, data.dataset)
    recorder.metrics(summary.as_metrics())
    return summary


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
    features, y = data.gate_rows()
    challenger = Scorer(data.encoder, result.model, model_meta(spec, data.encoder, data.classes))
    # In memory the gate rows are the test rows, already scored; a streamed run's gate
    # rows are a sample of them, scored here.
    new_score = (score_with(challenger, features, y, spec, metric) if data.streaming
                 else evaluation.metrics.get(metric))
    if new_score is None:
        new_score = score_with(challenger, features, y, spec, metric)
    promote = spec.register.promote
    decision = registry.decide_and_promote(
        name, version, recorder.run_id, metric, new_score, challenger.meta,
        lambda champion: score_with(champion, features, y, spec, metric),
        promote.min_improvement, baseline_scores if promote.must_beat_baselines else None)
    recorder.tags({"heartflow.registered_model": name, "heartflow.registered_version": version})
    return {"model_uri": uri, "model_name": name, "version": version,
            "promoted": decision.promoted, "decision": decision.reason}


def execute(loaded: LoadedSpec, *, frame: FrameSource | None = None, verbose: bool = True,
            parent_run_id: str | None = None, run_name: str | None = None,
            extra_tags: dict[str, str] | None = None) -> RunOutcome:
    """The flow body (also called by sweep trials and retraining)."""
    from heartflow.model.builder import count_parameters
    from heartflow.model.devices import check_device

    spec = loaded.spec
    check_device(spec.train.device)
    tracking.check_reachable()
    resolved = None
    if frame is None:
        from heartflow.data.sources import resolve_source

        resolved = resolve_source(spec.data.source, loaded.base_dir, spec.data.sha256)
    data = preprocess_task(loaded, resolved, frame)
    run_name = run_name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracking.tracked_run(spec.name, run_name, parent_run_id=parent_run_id) as recorder:
        record_run_inputs(recorder, loaded, data, extra_tags)
        result = train_task(loaded, data, verbose)
        log_training_task(result, recorder)
        evaluation = evaluate_task(loaded, data, result, recorder)
        summary = cv_task(loaded, data, recorder) if spec.evaluate.cv else None
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
        epochs_run=result.epochs_run, epochs_planned=spec.train.epochs,
        best_epoch=result.best_epoch, train_seconds=result.seconds,
        model_name=registered.get("model_name"), version=registered.get("version"),
        promoted=registered.get("promoted"), decision=str(registered.get("decision", "")),
        data_sha256=data.sha256,
        cv={m: [summary.mean(m), summary.ci95(m)] for m in summary.scores} if summary else {},
        cv_folds=summary.folds if summary else 0, baselines=baselines,
        plots={p.rsplit("/", 1)[-1].removesuffix(".png"): f"plots/{p.rsplit('/', 1)[-1]}"
               for p in evaluation.plots},
        extra={"streaming": data.streaming, "rows": data.rows})


@flow(name="heartflow-run", persist_result=False, validate_parameters=False)
def train_flow(loaded: LoadedSpec, frame: FrameSource | None = None, verbose: bool = True,
               parent_run_id: str | None = None) -> dict[str, Any]:
    """Preprocess -> train -> evaluate -> register for an already validated spec."""
    return execute(loaded, frame=frame, verbose=verbose, parent_run_id=parent_run_id).as_dict()
