"""The training flow: ``heartflow run`` / ``hf.run``.

    preprocess -> train -> settle the threshold -> evaluate the test rows once
    -> cross-validate (development rows) -> baselines -> register -> promotion gate -> card

One path for in-memory and streamed data: they differ only in where batches come from
(:mod:`heartflow.data.prepare`). Each task is a library step; this module holds the
composition, the task boundaries and their retries.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import time
from dataclasses import dataclass

from prefect import flow, task

from heartflow.data.prepare import FrameSource, PreparedData, prepare
from heartflow.data.sources import resolve_source
from heartflow.data.streaming import write_seen_keys
from heartflow.evaluation import sample_size
from heartflow.evaluation.baselines import BaselineResult, run_baseline
from heartflow.evaluation.card import rigour_lines
from heartflow.evaluation.cv import (
    CVSummary,
    FoldFits,
    cross_validate_network,
    fit_with_folds,
    trains_with_folds,
)
from heartflow.evaluation.drift import development_reference
from heartflow.evaluation.gate import Decision, GateRows
from heartflow.evaluation.heldout import Evaluation, evaluate_prepared
from heartflow.evaluation.metrics import epoch_metrics
from heartflow.evaluation.optimism import Optimism, validate_network
from heartflow.evaluation.plots import instability_plot
from heartflow.evaluation.report_html import pooled_report, test_report
from heartflow.evaluation.thresholds import settle_threshold
from heartflow.model.devices import check_device, device_scope
from heartflow.model.progress import EpochReporter
from heartflow.model.scorer import Scorer, network_output
from heartflow.model.together import fit_seeds, seeds_train_together
from heartflow.model.training import TrainResult, check_finite, train_prepared
from heartflow.pipelines.model_card import write_card
from heartflow.pipelines.promotion import gate_task
from heartflow.pipelines.results import RunOutcome
from heartflow.pipelines.task_options import RETRYING, TASK_OPTIONS
from heartflow.spec.loading import LoadedSpec
from heartflow.tracking import names as N
from heartflow.tracking import run_record as R
from heartflow.tracking.compare import record_rank
from heartflow.tracking.logged_model import log_scorer
from heartflow.tracking.recorder import Recorder, tracked_run
from heartflow.tracking.registry import register_version
from heartflow.tracking.row_secret import row_key_secret
from heartflow.tracking.store import check_reachable, check_write_access


@dataclass(frozen=True)
class Registered:
    """What the register step produced: the logged model, and the version and the gate's
    decision when it was registered."""

    model_uri: str
    name: str | None = None
    version: str | None = None
    decision: Decision | None = None


@task(name="preprocess", **RETRYING)
def preprocess_task(loaded: LoadedSpec, frame: FrameSource | None) -> PreparedData:
    """Read (or stream), check, split and encode the data; row keys that leave are keyed
    by the store's row-key secret (fetched here, never a task parameter Prefect records)."""
    secret = row_key_secret()
    resolved = None if frame is not None else resolve_source(
        loaded.spec.data.source, loaded.base_dir, loaded.spec.data.sha256)
    return prepare(loaded, resolved, frame, row_secret=secret)


@task(name="train", **TASK_OPTIONS)
def train_task(loaded: LoadedSpec, data: PreparedData, verbose: bool) -> TrainResult:
    """Fit the network (per-epoch progress on the terminal)."""
    spec = loaded.spec
    return train_prepared(spec, data, verbose,
                          epoch_metrics(spec.task, spec.evaluate.decision_threshold))


@task(name="train", **TASK_OPTIONS)
def train_with_folds_task(loaded: LoadedSpec, data: PreparedData, verbose: bool
                          ) -> tuple[TrainResult, FoldFits]:
    """Fit the network and its cross-validation folds' networks in one compiled program
    (per-epoch progress of the network on the terminal)."""
    spec = loaded.spec
    reporter = EpochReporter(spec.train.epochs, enabled=verbose)
    try:
        with device_scope("cpu"):
            return fit_with_folds(spec, data,
                                  epoch_metrics(spec.task, spec.evaluate.decision_threshold),
                                  reporter)
    finally:
        reporter.close()


@task(name="train-seeds", **TASK_OPTIONS)
def train_seeds_task(loadeds: list[LoadedSpec], data: PreparedData) -> list[TrainResult]:
    """One network per seed, trained together on the same rows."""
    spec = loadeds[0].spec
    with device_scope("cpu"):
        return fit_seeds(spec, [loaded.spec.train.seed for loaded in loadeds],
                         *data.part("train"), *data.validation(),
                         epoch_metrics(spec.task, spec.evaluate.decision_threshold))


@task(name="log-training", **RETRYING)
def log_training_task(result: TrainResult, recorder: Recorder) -> None:
    """Per-epoch metrics and training facts (retried: the model is not retrained)."""
    R.record_training(recorder, result)


@task(name="evaluate", **RETRYING)
def evaluate_task(loaded: LoadedSpec, data: PreparedData, result: TrainResult,
                  threshold: float | None, recorder: Recorder,
                  development: dict[str, float] | None = None) -> Evaluation:
    """Score the test rows once; log test metrics, plots and (binary) the clinical report,
    with the development's sample size, corrected figures and instability (``development``:
    their metrics, when the run computed them)."""
    spec = loaded.spec
    threshold = spec.evaluate.decision_threshold if threshold is None else threshold
    with tempfile.TemporaryDirectory(prefix="heartflow-plots-") as folder:
        evaluation = evaluate_prepared(spec, data, result.model, result.history, threshold,
                                       folder)
        report = None
        if evaluation.clinical is not None:
            facts = (f"data: {data.source} (sha256 {data.sha256[:16]}...), {data.rows} rows; "
                     "split " + ", ".join(f"{k} {v}" for k, v in data.sizes().items()))
            report = test_report(spec.name, facts, evaluation.clinical, threshold,
                                 evaluation.plots, evaluation.subgroups,
                                 rigour_lines(development or {}, spec.model_dump(mode="json")))
        R.record_evaluation(recorder, evaluation, folder, report)
    return evaluation


@task(name="cross-validate", **TASK_OPTIONS)
def cv_task(loaded: LoadedSpec, data: PreparedData, threshold: float | None,
            recorder: Recorder, fits: FoldFits | None = None) -> CVSummary:
    """Repeated stratified k-fold for the network on development rows (``fits``: the
    folds' networks already trained beside the run's own); the pooled out-of-fold report
    of a binary model."""
    spec = loaded.spec
    summary = cross_validate_network(spec, data.development(), threshold, fits)
    with tempfile.TemporaryDirectory(prefix="heartflow-cv-plots-") as folder:
        pooled = summary.pooled_report
        page = None if pooled is None else pooled_report(
            spec.name, spec.evaluate.cv.folds, summary.pooled_y, summary.pooled_p, pooled,
            spec.evaluate.decision_curve, folder)
        R.record_cv(recorder, summary, page, folder if page else None)
    return summary


@task(name="bootstrap-validation", **TASK_OPTIONS)
def validate_task(loaded: LoadedSpec, data: PreparedData, result: TrainResult,
                  threshold: float | None, recorder: Recorder) -> Optimism:
    """The optimism bootstrap of the whole development (development rows) and the
    instability of each patient's risk across the refits."""
    spec = loaded.spec
    threshold = spec.evaluate.decision_threshold if threshold is None else threshold
    development = data.development()
    original = network_output(result.model, data.encoder.transform(development.features))
    outcome = validate_network(spec, development, original, threshold,
                               spec.evaluate.validation.resamples)
    with tempfile.TemporaryDirectory(prefix="heartflow-bootstrap-") as folder:
        instability_plot(outcome.original_risks, outcome.refit_risks,
                         f"{folder}/instability.png")
        R.record_optimism(recorder, outcome, folder)
    return outcome


@task(name="baselines", **TASK_OPTIONS)
def baselines_task(loaded: LoadedSpec, data: PreparedData, threshold: float | None,
                   recorder: Recorder, parent_run_id: str | None) -> list[BaselineResult]:
    """Fit each baseline on the identical split and encoding; log each as a sibling run."""
    spec = loaded.spec
    threshold = spec.evaluate.decision_threshold if threshold is None else threshold
    results = []
    for name in spec.evaluate.baselines:
        with R.baseline_run(spec.name, name, recorder, data, parent_run_id) as base:
            result = run_baseline(name, spec, data, threshold)
            R.record_baseline(base, name, result)
            record_rank(base.run_id, spec.promotion_metric)  # sorted as compare ranks
        results.append(result)
    recorder.tags({N.BASELINES: ",".join(spec.evaluate.baselines)})
    return results


@task(name="register", **RETRYING)
def register_task(loaded: LoadedSpec, data: PreparedData, scorer: Scorer,
                  recorder: Recorder, register: bool, version_tags: dict[str, str]
                  ) -> Registered:
    """Log the model (preprocessing + network); register it as a version when asked."""
    spec = loaded.spec
    uri = log_scorer(recorder.run_id, recorder.experiment_id, scorer, data.example())
    if not register:
        return Registered(uri)
    version = register_version(uri, spec.model_name, recorder.run_id, {
        N.SPEC_NAME: spec.name, N.DATA_SHA256: data.sha256, **version_tags})
    R.record_registration(recorder, spec.model_name, version)
    return Registered(uri, spec.model_name, version)


def execute(loaded: LoadedSpec, *, frame: FrameSource | None = None, verbose: bool = True,
            register: bool = True, parent_run_id: str | None = None,
            run_name: str | None = None, extra_tags: dict[str, str] | None = None
            ) -> RunOutcome:
    """The flow body (also called by sweep trials and retraining)."""
    data = prepared(loaded, frame)
    return tracked(loaded, data, None, verbose=verbose,
                   register=register and loaded.spec.register.enabled,
                   parent_run_id=parent_run_id, run_name=run_name, extra_tags=extra_tags)


def prepared(loaded: LoadedSpec, frame: FrameSource | None = None) -> PreparedData:
    """Check the device and the tracking server, then preprocess the spec's data."""
    check_device(loaded.spec.train.device)
    check_reachable()
    spec = loaded.spec
    check_write_access(spec.name, spec.model_name if spec.register.enabled else None)
    row_key_secret()  # a shared store without HEARTFLOW_ROW_KEY_SECRET: fail before anything
    return preprocess_task(loaded, frame)


def execute_seeds(loadeds: list[LoadedSpec], *, register: bool = True,
                  parent_run_id: str | None = None, run_names: list[str] | None = None
                  ) -> list[RunOutcome | Exception]:
    """Specs that differ only in ``train.seed`` (a sweep's seeds): the data prepared once,
    the networks trained together in one program when they can be
    (:func:`heartflow.model.together.fit_seeds`), then each seed tracked, evaluated and
    registered as its own run, exactly as :func:`execute` does. A seed whose run fails
    gives its exception in its place; the others go on."""
    data = prepared(loadeds[0])
    together = seeds_train_together(loadeds[0].spec, data, len(loadeds))
    trained = train_seeds_task(loadeds, data) if together else [None] * len(loadeds)
    outcomes: list[RunOutcome | Exception] = []
    for loaded, result, name in zip(loadeds, trained, run_names or [None] * len(loadeds),
                                    strict=True):
        tags = {N.TRAINED_TOGETHER: str(len(loadeds))} if result else None
        try:
            outcomes.append(tracked(loaded, data, result, verbose=False,
                                    register=register and loaded.spec.register.enabled,
                                    parent_run_id=parent_run_id, run_name=name,
                                    extra_tags=tags))
        except Exception as exc:  # one seed's failure must not lose the others
            outcomes.append(exc)
    return outcomes


def reference_step(loaded: LoadedSpec, data: PreparedData, result: TrainResult,
                   scorer: Scorer, evaluation: Evaluation, recorder: Recorder) -> None:
    """The monitoring reference (``heartflow monitor``): the development rows' variables and
    risks, the test rows' figures at the model's threshold; streamed data gets a note.
    About 50 ms for the Cleveland data: quantiles of rows in memory, one pass of the
    network, the test figures taken from the evaluation."""
    if data.streaming or getattr(data, "dataset", None) is None:
        R.record_reference(recorder, None, "streamed data: no monitoring reference (its rows "
                                           "are not held in memory)")
        return
    meta = scorer.meta
    R.record_reference(recorder, development_reference(
        loaded.spec, data, result.model, meta.threshold if meta.task == "binary" else None,
        evaluation.clinical))


def record_seen_rows(recorder: Recorder, data: PreparedData) -> None:
    """A streamed run's split, for later promotion gates: the rows it trains and validates
    on as keyed-key prefixes (:func:`heartflow.data.streaming.write_seen_keys`), with the
    key format and key id. In memory the split manifest (the run's inputs) says it."""
    if not data.streaming:
        return
    keyer = data.keyer
    with tempfile.TemporaryDirectory(prefix="heartflow-split-") as folder:
        write_seen_keys(data.stats, keyer,  # type: ignore[attr-defined]  # StreamedData
                        os.path.join(folder, posixpath.basename(N.SEEN_ARTIFACT)))
        recorder.directory(folder, posixpath.dirname(N.SEEN_ARTIFACT))
    recorder.tags({N.SPLIT_KEY_FORMAT: keyer.key_format, N.SPLIT_KEY_ID: keyer.key_id})


def tracked(loaded: LoadedSpec, data: PreparedData, result: TrainResult | None, *,
            verbose: bool, register: bool, parent_run_id: str | None, run_name: str | None,
            extra_tags: dict[str, str] | None) -> RunOutcome:
    """One tracked run on prepared data (the recipe): train (unless ``result`` is given),
    settle the threshold, evaluate, cross-validate, compare with baselines, register."""
    spec = loaded.spec
    run_name = run_name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracked_run(spec.name, run_name, parent_run_id=parent_run_id) as recorder:
        with recorder.batched():  # params, tags and metrics sent together at its end
            R.record_run_inputs(recorder, loaded, data, extra_tags)
            record_seen_rows(recorder, data)
            size = sample_size.check_for(spec, data)
            R.record_sample_size(recorder, size)
            fits = None
            if result is None and trains_with_folds(spec, data):
                result, fits = train_with_folds_task(loaded, data, verbose)
                recorder.tags({N.TRAINED_WITH_FOLDS: str(len(fits.plan))})
            result = result or train_task(loaded, data, verbose)
            check_finite(result.history.get("loss", []), spec.train)  # seeds trained together too
            log_training_task(result, recorder)
            threshold, rule = settle_threshold(spec, result.model, *data.validation())
            R.record_threshold(recorder, threshold, rule)
            validation = (validate_task(loaded, data, result, threshold, recorder)
                          if spec.evaluate.validation else None)  # (development rows only)
            evaluation = evaluate_task(loaded, data, result, threshold, recorder, {
                **(size.as_metrics() if size else {}),
                **(validation.as_metrics() if validation else {})})
            summary = (cv_task(loaded, data, threshold, recorder, fits) if spec.evaluate.cv
                       else None)
            baselines = (baselines_task(loaded, data, threshold, recorder, parent_run_id)
                         if spec.evaluate.baselines else [])
        scorer = Scorer.trained(spec, data.encoder, result.model, data.classes,
                                spec.evaluate.decision_threshold if threshold is None
                                else threshold)
        record_rank(recorder.run_id, spec.promotion_metric)  # the UI sorts as compare ranks
        reference_step(loaded, data, result, scorer, evaluation, recorder)
        registered = register_task(loaded, data, scorer, recorder, register,
                                   dict(extra_tags or {}))
        decision = None
        if registered.version is not None:
            promote = spec.register.promote
            features, y, keys = data.gate_rows()
            rows = GateRows(features, y, keys, baselines={  # the same rows (in memory)
                b.name: b.test_output for b in baselines
                if b.test_output is not None and len(b.test_output) == len(y)}
                if promote.must_beat_baselines else {})
            decision = gate_task(registered.name, registered.version, recorder.run_id, scorer,
                                 rows, promote, spec.promotion_metric)
            write_card(registered.name, registered.version)  # model_card.md and .html
    return RunOutcome.of(spec, data, result, evaluation, summary,
                         {b.name: b.scores() for b in baselines}, threshold, rule, recorder,
                         registered.name, registered.version, decision, size, validation)


@flow(name="heartflow-run", persist_result=False, validate_parameters=False)
def train_flow(loaded: LoadedSpec, frame: FrameSource | None = None, verbose: bool = True,
               register: bool = True, parent_run_id: str | None = None,
               spec_path: str = "") -> RunOutcome:
    """Preprocess -> train -> evaluate -> register for an already validated spec.

    ``spec_path`` is only recorded on the flow run (Prefect records parameters as JSON;
    the validated spec itself shows there as ``<LoadedSpec>``).
    """
    return execute(loaded, frame=frame, verbose=verbose, register=register,
                   parent_run_id=parent_run_id)
