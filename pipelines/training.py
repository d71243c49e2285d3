"""The `heartflow run` flow: preprocess -> train -> evaluate -> register, recorded in MLflow."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from heartflow import tracking
from heartflow.evaluate import Evaluation, evaluate
from heartflow.prepare import Prepared, prepare
from heartflow.reporting import EpochReporter
from heartflow.spec.loading import LoadedSpec, load_spec, load_spec_text
from heartflow.train import TrainResult, train_model
from heartflow.transient import retry_if_transient

TASK_OPTIONS = {"cache_policy": NO_CACHE, "persist_result": False}
# Steps that talk to the data source or the tracking server retry transient failures
# (network, server briefly down) with backoff, then fail clearly.
RETRYING = {**TASK_OPTIONS, "retries": 3, "retry_delay_seconds": [1, 3, 6],
            "retry_condition_fn": retry_if_transient}


@dataclass
class RunOutcome:
    """What one run produced (the CLI prints it; flows return it)."""

    spec_name: str
    run_id: str
    experiment_id: str
    input_width: int
    parameters: int
    metrics: dict[str, float]
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
    data_sha256: str = ""
    cv: dict[str, list[float]] = field(default_factory=dict)  # metric -> [mean, ci95]
    cv_folds: int = 0
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Plain data."""
        return asdict(self)


@task(name="preprocess", **RETRYING)
def preprocess_task(loaded: LoadedSpec) -> Prepared:
    """Read, check, split and encode the data."""
    return prepare(loaded)


@task(name="train", **TASK_OPTIONS)
def train_task(loaded: LoadedSpec, prepared: Prepared, verbose: bool) -> TrainResult:
    """Fit the network (per-epoch progress on the terminal)."""
    spec = loaded.spec
    x_train, y_train = prepared.part("train")
    x_val, y_val = prepared.part("validation")
    reporter = EpochReporter(spec.train.epochs, enabled=verbose)
    try:
        return train_model(spec, prepared.width, x_train, y_train, x_val, y_val,
                           on_epoch=reporter)
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
def evaluate_task(loaded: LoadedSpec, prepared: Prepared, result: TrainResult,
                  recorder: tracking.Recorder) -> Evaluation:
    """Score the test rows; log test metrics and plots."""
    x_test, y_test = prepared.part("test")
    with tempfile.TemporaryDirectory(prefix="heartflow-plots-") as folder:
        evaluation = evaluate(loaded.spec, result.model, x_test, y_test, result.history,
                              folder, prepared.dataset.classes)
        recorder.directory(folder, "plots")
    recorder.metrics({f"test_{k}": v for k, v in evaluation.metrics.items()})
    return evaluation


@task(name="cross-validate", **TASK_OPTIONS)
def cv_task(loaded: LoadedSpec, prepared: Prepared, recorder: tracking.Recorder):
    """Repeated stratified k-fold for the network; logs cv_<metric>_mean/_ci95."""
    import keras

    from heartflow import metrics as M
    from heartflow.cv import cross_validate
    from heartflow.evaluate import network_output

    spec = loaded.spec

    def fit_and_score(xtr, ytr, xval, yval, xte, yte):
        keras.backend.clear_session()
        fitted = train_model(spec, xtr.shape[1], xtr, ytr, xval if len(xval) else None,
                             yval if len(yval) else None)
        out = network_output(fitted.model, xte)
        return M.compute(spec.task, yte, out if spec.task == "multiclass" else out.reshape(-1),
                         spec.evaluate.threshold, spec.metrics)

    summary = cross_validate(spec, prepared.dataset, fit_and_score)
    recorder.metrics(summary.as_metrics())
    return summary


@task(name="baselines", **TASK_OPTIONS)
def baselines_task(loaded: LoadedSpec, prepared: Prepared, recorder: tracking.Recorder,
                   parent_run_id: str | None) -> dict[str, dict[str, float]]:
    """Fit each baseline on the identical split and encoding; log each as a sibling run."""
    from heartflow.baselines import fit_score

    spec = loaded.spec
    x_train, y_train = prepared.part("train")
    x_test, y_test = prepared.part("test")
    results: dict[str, dict[str, float]] = {}
    for name in spec.evaluate.baselines:
        tags = {"heartflow.baseline": name, "heartflow.baseline_for": recorder.run_id,
                "heartflow.spec_name": spec.name,
                "heartflow.data_sha256": prepared.dataset.sha256,
                **{f"heartflow.split.{k}": v for k, v in prepared.split.sizes().items()}}
        with tracking.tracked_run(spec.name, f"baseline-{name}", tags=tags,
                                  parent_run_id=parent_run_id) as base:
            result = fit_score(name, spec.task, spec.train.seed, x_train, y_train, x_test,
                               y_test, spec.evaluate.threshold, spec.metrics)
            base.params({"baseline": name, **{f"estimator.{k}": v
                                               for k, v in result.params.items()}})
            base.metrics({f"test_{k}": v for k, v in result.metrics.items()})
            base.metrics({"train_seconds": result.seconds})
            scores = dict(result.metrics)
            if spec.evaluate.cv is not None:
                from heartflow.baselines import fit_score as refit
                from heartflow.cv import cross_validate

                def fit_and_score(xtr, ytr, xval, yval, xte, yte, _name=name):
                    return refit(_name, spec.task, spec.train.seed, xtr, ytr, xte, yte,
                                 spec.evaluate.threshold, spec.metrics).metrics

                summary = cross_validate(spec, prepared.dataset, fit_and_score,
                                         use_validation=False)
                base.metrics(summary.as_metrics())
                scores.update({f"cv_{m}": summary.mean(m) for m in summary.scores})
                scores.update({f"cv_{m}_ci95": summary.ci95(m) for m in summary.scores})
        results[name] = scores
    recorder.tags({"heartflow.baselines": ",".join(spec.evaluate.baselines)})
    return results


@task(name="register", **RETRYING)
def register_task(loaded: LoadedSpec, prepared: Prepared, result: TrainResult,
                  recorder: tracking.Recorder,
                  baseline_scores: dict[str, float] | None = None,
                  version_tags: dict[str, str] | None = None) -> dict[str, object]:
    """Log the model (preprocessing + network), register a version, run the promotion gate."""
    test = prepared.split.test
    return register_from(loaded, prepared.encoder, result.model, prepared.dataset.classes,
                         prepared.dataset.features.iloc[test], prepared.dataset.y[test],
                         prepared.dataset.sha256, recorder,
                         {"heartflow.spec_hash": spec_hash(loaded), **(version_tags or {})},
                         baseline_scores)


def register_from(loaded: LoadedSpec, encoder, network, classes: list[str], test_features,
                  test_y, data_sha256: str, recorder: tracking.Recorder,
                  version_tags: dict[str, str],
                  baseline_scores: dict[str, float] | None = None) -> dict[str, object]:
    """Log the model, register a version, run the promotion gate on the test rows."""
    from heartflow import packaging, registry
    from heartflow.serving import Scorer

    spec = loaded.spec
    uri = packaging.log_model(recorder.run_id, recorder.experiment_id, spec, encoder, network,
                              classes, test_features.head(5))
    if not spec.register.enabled:
        return {"model_uri": uri}
    name = spec.model_name
    version = registry.register_version(uri, name, recorder.run_id,
                                        {"heartflow.spec_name": spec.name,
                                         "heartflow.data_sha256": data_sha256,
                                         **version_tags})
    scorer = Scorer(encoder, network, packaging.model_meta(spec, encoder, classes))
    promote = spec.register.promote
    decision = registry.decide_and_promote(
        name, version, recorder.run_id, scorer, test_features, test_y,
        spec.task, spec.promotion_metric, promote.min_improvement, spec.evaluate.threshold,
        baseline_scores if promote.must_beat_baselines else None)
    recorder.tags({"heartflow.registered_model": name, "heartflow.registered_version": version})
    return {"model_uri": uri, "model_name": name, "version": version,
            "promoted": decision.promoted, "decision": decision.reason}


def run_tags(loaded: LoadedSpec, prepared: Prepared) -> dict[str, object]:
    """Run tags: data fingerprint, split sizes, versions, seed, devices."""
    from heartflow.devices import device_tags

    sizes = prepared.split.sizes()
    return {"heartflow.spec_name": loaded.spec.name, "heartflow.spec_path": loaded.path,
            "heartflow.data_sha256": prepared.dataset.sha256,
            "heartflow.data_source": prepared.dataset.source,
            "heartflow.rows": len(prepared.dataset),
            **{f"heartflow.split.{k}": v for k, v in sizes.items()},
            "heartflow.seed": loaded.spec.train.seed,
            "heartflow.input_width": prepared.width,
            "heartflow.missing_rule": "see encoder.json (median/mode/unseen=zeros)",
            **tracking.environment_tags(), **device_tags(loaded.spec.train.device)}


def execute(loaded: LoadedSpec, *, verbose: bool = True, parent_run_id: str | None = None,
            run_name: str | None = None,
            extra_tags: dict[str, str] | None = None) -> RunOutcome:
    """The flow body: also callable directly (tests, sweeps) without Prefect's engine."""
    from heartflow.builder import count_parameters
    from heartflow.devices import check_device

    spec = loaded.spec
    check_device(spec.train.device)
    tracking.check_reachable()
    from heartflow.data.sources import resolve_source
    from heartflow.streaming import should_stream

    source = resolve_source(spec.data.source, loaded.base_dir, spec.data.sha256)
    if should_stream(spec, str(source.path)):
        from heartflow.pipelines.streaming import execute_streaming

        return execute_streaming(loaded, source, verbose=verbose, parent_run_id=parent_run_id,
                                 run_name=run_name, extra_tags=extra_tags)
    prepared = preprocess_task(loaded)
    run_name = run_name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracking.tracked_run(spec.name, run_name, parent_run_id=parent_run_id) as recorder:
        recorder.params(tracking.flatten(spec.model_dump(mode="json", by_alias=True)))
        recorder.tags({**run_tags(loaded, prepared), **(extra_tags or {})})
        recorder.text(loaded.text, "spec/spec.yaml")
        import yaml

        recorder.text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False),
                      "spec/resolved.yaml")
        recorder.text(_encoder_json(prepared), "preprocessing/encoder.json")
        if loaded.overrides:
            shown = {k: v for k, v in loaded.overrides.items() if k != "register.enabled"}
            recorder.tags({"heartflow.overrides": json.dumps(shown)})
            # The swept values as their own params, so MLflow's compare view and
            # parallel-coordinates chart show them first (0 units = no hidden layer).
            recorder.params({f"axis.{k}": json.dumps(v) if isinstance(v, (list, dict))
                             else str(v) for k, v in shown.items()})
        result = train_task(loaded, prepared, verbose)
        log_training_task(result, recorder)
        evaluation = evaluate_task(loaded, prepared, result, recorder)
        summary = cv_task(loaded, prepared, recorder) if spec.evaluate.cv else None
        baselines = (baselines_task(loaded, prepared, recorder, parent_run_id)
                     if spec.evaluate.baselines else {})
        metric = spec.promotion_metric
        registered = register_task(loaded, prepared, result, recorder,
                                   {b: s[metric] for b, s in baselines.items()},
                                   extra_tags or {})
    return RunOutcome(
        spec_name=spec.name, run_id=recorder.run_id, experiment_id=recorder.experiment_id,
        input_width=prepared.width, parameters=count_parameters(spec, prepared.width),
        metrics=evaluation.metrics, test_rows=evaluation.test_rows,
        split=prepared.split.sizes(), epochs_run=result.epochs_run,
        epochs_planned=spec.train.epochs,
        best_epoch=result.best_epoch, train_seconds=result.seconds,
        model_name=registered.get("model_name"), version=registered.get("version"),
        promoted=registered.get("promoted"), decision=str(registered.get("decision", "")),
        data_sha256=prepared.dataset.sha256,
        cv={m: [summary.mean(m), summary.ci95(m)] for m in summary.scores} if summary else {},
        cv_folds=summary.folds if summary else 0, baselines=baselines)


def spec_hash(loaded: LoadedSpec) -> str:
    import hashlib

    resolved = json.dumps(loaded.spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(resolved.encode()).hexdigest()


def _encoder_json(prepared: Prepared) -> str:
    return json.dumps(prepared.encoder.to_dict(), indent=1, sort_keys=True)


@flow(name="heartflow-run", persist_result=False, validate_parameters=False)
def train_flow(spec_path: str, spec_text: str | None = None, verbose: bool = True,
               parent_run_id: str | None = None,
               overrides: dict[str, object] | None = None) -> dict[str, object]:
    """Validate the spec, then preprocess -> train -> evaluate -> register."""
    if spec_text is None:
        spec_text = load_spec(spec_path).text
    loaded = load_spec_text(spec_text, spec_path, check_files=True, overrides=overrides)
    return execute(loaded, verbose=verbose, parent_run_id=parent_run_id).as_dict()
