"""The `heartflow run` flow for data too large for memory (see heartflow.streaming)."""

from __future__ import annotations

import json
import math
import tempfile
import time

import yaml
from prefect import task

from heartflow import tracking
from heartflow.data.sources import ResolvedSource, file_sha256
from heartflow.pipelines.training import RETRYING, TASK_OPTIONS, RunOutcome, spec_hash
from heartflow.reporting import EpochReporter
from heartflow.spec.loading import LoadedSpec
from heartflow.streaming import StreamStats, scan, tf_dataset


@task(name="preprocess-stream", **RETRYING)
def scan_task(loaded: LoadedSpec, source: ResolvedSource) -> tuple[StreamStats, str]:
    """One chunked pass over the file: checks, statistics, levels; and its sha256."""
    path = str(source.path)
    columns = loaded.spec.data.columns or source.columns
    return scan(loaded.spec, path, columns), file_sha256(path)


@task(name="train-stream", **TASK_OPTIONS)
def stream_train_task(loaded: LoadedSpec, path: str, stats: StreamStats, verbose: bool):
    """Fit from the tf.data pipeline (validation on up to 50,000 validation rows)."""
    from heartflow.train import fit_dataset

    spec = loaded.spec
    t = spec.train
    train_ds = tf_dataset(spec, path, stats, 0, t.batch_size, shuffle_seed=t.seed)
    x_val = y_val = None
    if "validation" in stats.samples:
        x_val = stats.encoder.transform(stats.samples["validation"])
        y_val = stats.sample_y["validation"].reshape(-1, 1)
    reporter = EpochReporter(t.epochs, enabled=verbose)
    try:
        steps = max(1, math.ceil(stats.parts["train"] / t.batch_size))
        return fit_dataset(spec, stats.encoder.width, train_ds, steps, x_val, y_val, reporter)
    finally:
        reporter.close()


@task(name="evaluate-stream", **RETRYING)
def stream_evaluate_task(loaded: LoadedSpec, path: str, stats: StreamStats, result,
                         recorder: tracking.Recorder) -> dict[str, float]:
    """Score every test row through the same pipeline; log metrics and plots."""
    import tensorflow as tf

    from heartflow import metrics as M
    from heartflow import plots as P

    spec = loaded.spec
    forward = tf.function(lambda x: result.model(x, training=False), reduce_retracing=True)
    totals = M.BinaryAccumulator(spec.evaluate.threshold)  # constant memory in test rows
    for x, y in tf_dataset(spec, path, stats, 2, 8192):
        totals.update(y.numpy(), forward(x).numpy())
    everything = totals.result()
    values = {name: everything[name] for name in spec.metrics}
    with tempfile.TemporaryDirectory() as folder:
        P.learning_curves(result.history, f"{folder}/learning_curves.png")
        P.accumulated_plots(totals, folder)
        recorder.directory(folder, "plots")
    recorder.metrics({f"test_{k}": v for k, v in values.items()})
    return values


def execute_streaming(loaded: LoadedSpec, source: ResolvedSource, *, verbose: bool = True,
                      parent_run_id: str | None = None, run_name: str | None = None,
                      extra_tags: dict[str, str] | None = None) -> RunOutcome:
    """Streaming preprocess -> train -> evaluate -> register."""
    from heartflow.builder import count_parameters
    from heartflow.pipelines.training import log_training_task, register_from

    spec = loaded.spec
    path = str(source.path)
    stats, sha = scan_task(loaded, source)
    run_name = run_name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracking.tracked_run(spec.name, run_name, parent_run_id=parent_run_id) as recorder:
        recorder.params(tracking.flatten(spec.model_dump(mode="json", by_alias=True)))
        recorder.tags({"heartflow.spec_name": spec.name, "heartflow.spec_path": loaded.path,
                       "heartflow.data_sha256": sha, "heartflow.data_source": path,
                       "heartflow.rows": stats.rows, "heartflow.streaming": "true",
                       **{f"heartflow.split.{k}": v for k, v in stats.parts.items()},
                       "heartflow.seed": spec.train.seed,
                       "heartflow.input_width": stats.encoder.width,
                       **tracking.environment_tags(), **(extra_tags or {})})
        recorder.text(loaded.text, "spec/spec.yaml")
        recorder.text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False),
                      "spec/resolved.yaml")
        recorder.text(json.dumps(stats.encoder.to_dict(), indent=1, sort_keys=True),
                      "preprocessing/encoder.json")
        result = stream_train_task(loaded, path, stats, verbose)
        log_training_task(result, recorder)
        metrics = stream_evaluate_task(loaded, path, stats, result, recorder)
        test = stats.samples.get("test")
        registered = register_from(loaded, stats.encoder, result.model, stats.classes,
                                   test, stats.sample_y.get("test"), sha, recorder,
                                   {**(extra_tags or {}), "heartflow.spec_hash":
                                    spec_hash(loaded)})
    return RunOutcome(
        spec_name=spec.name, run_id=recorder.run_id, experiment_id=recorder.experiment_id,
        input_width=stats.encoder.width,
        parameters=count_parameters(spec, stats.encoder.width), metrics=metrics,
        test_rows=stats.parts["test"], split=stats.parts, epochs_run=result.epochs_run,
        epochs_planned=spec.train.epochs,
        best_epoch=result.best_epoch, train_seconds=result.seconds,
        model_name=registered.get("model_name"), version=registered.get("version"),
        promoted=registered.get("promoted"), decision=str(registered.get("decision", "")),
        data_sha256=sha, extra={"streaming": True, "rows": stats.rows})
