"""The `heartflow run` flow: preprocess -> train -> evaluate -> register, recorded in MLflow."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from heartflow import tracking
from heartflow.evaluate import Evaluation, evaluate
from heartflow.prepare import Prepared, prepare
from heartflow.reporting import EpochReporter
from heartflow.spec.loading import LoadedSpec, load_spec, load_spec_text
from heartflow.train import TrainResult, train_model

TASK_OPTIONS = {"cache_policy": NO_CACHE, "persist_result": False}


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
    model_name: str | None = None
    version: str | None = None
    promoted: bool | None = None
    decision: str = ""
    data_sha256: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Plain data."""
        return asdict(self)


@task(name="preprocess", **TASK_OPTIONS)
def preprocess_task(loaded: LoadedSpec) -> Prepared:
    """Read, check, split and encode the data."""
    return prepare(loaded)


@task(name="train", **TASK_OPTIONS)
def train_task(loaded: LoadedSpec, prepared: Prepared, recorder: tracking.Recorder,
               verbose: bool) -> TrainResult:
    """Fit the network; log per-epoch metrics."""
    spec = loaded.spec
    x_train, y_train = prepared.part("train")
    x_val, y_val = prepared.part("validation")
    reporter = EpochReporter(spec.train.epochs, enabled=verbose)
    try:
        result = train_model(spec, prepared.width, x_train, y_train, x_val, y_val,
                             on_epoch=reporter)
    finally:
        reporter.close()
    recorder.history(result.history)
    recorder.tags({"heartflow.epochs_run": result.epochs_run,
                   "heartflow.best_epoch": result.best_epoch or "",
                   "heartflow.parameters": result.model.count_params()})
    recorder.metrics({"train_seconds": result.seconds, "epochs_run": result.epochs_run})
    return result


@task(name="evaluate", **TASK_OPTIONS)
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


@task(name="register", **TASK_OPTIONS)
def register_task(loaded: LoadedSpec, prepared: Prepared, result: TrainResult,
                  recorder: tracking.Recorder) -> dict[str, object]:
    """Log the model (preprocessing + network), register a version, run the promotion gate."""
    from heartflow import packaging, registry
    from heartflow.serving import Scorer

    spec = loaded.spec
    features = prepared.dataset.features
    uri = packaging.log_model(recorder.run_id, recorder.experiment_id, spec, prepared.encoder,
                              result.model, prepared.dataset.classes, features.head(5))
    if not spec.register.enabled:
        return {"model_uri": uri}
    name = spec.model_name
    version = registry.register_version(uri, name, recorder.run_id,
                                        {"heartflow.spec_name": spec.name,
                                         "heartflow.data_sha256": prepared.dataset.sha256})
    scorer = Scorer(prepared.encoder, result.model,
                    packaging.model_meta(spec, prepared.encoder, prepared.dataset.classes))
    test = prepared.split.test
    promote = spec.register.promote
    decision = registry.decide_and_promote(
        name, version, recorder.run_id, scorer, features.iloc[test], prepared.dataset.y[test],
        spec.task, spec.promotion_metric, promote.min_improvement, spec.evaluate.threshold)
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


def execute(loaded: LoadedSpec, *, verbose: bool = True,
            parent_run_id: str | None = None) -> RunOutcome:
    """The flow body: also callable directly (tests, sweeps) without Prefect's engine."""
    from heartflow.builder import count_parameters
    from heartflow.devices import check_device

    spec = loaded.spec
    check_device(spec.train.device)
    tracking.check_reachable()
    prepared = preprocess_task(loaded)
    run_name = f"{spec.name}-{os.getpid()}"
    with tracking.tracked_run(spec.name, run_name, parent_run_id=parent_run_id) as recorder:
        recorder.params(tracking.flatten(spec.model_dump(mode="json", by_alias=True)))
        recorder.tags(run_tags(loaded, prepared))
        recorder.text(loaded.text, "spec/spec.yaml")
        import yaml

        recorder.text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False),
                      "spec/resolved.yaml")
        recorder.text(_encoder_json(prepared), "preprocessing/encoder.json")
        result = train_task(loaded, prepared, recorder, verbose)
        evaluation = evaluate_task(loaded, prepared, result, recorder)
        registered = register_task(loaded, prepared, result, recorder)
    return RunOutcome(
        spec_name=spec.name, run_id=recorder.run_id, experiment_id=recorder.experiment_id,
        input_width=prepared.width, parameters=count_parameters(spec, prepared.width),
        metrics=evaluation.metrics, test_rows=evaluation.test_rows,
        split=prepared.split.sizes(), epochs_run=result.epochs_run,
        best_epoch=result.best_epoch, train_seconds=result.seconds,
        model_name=registered.get("model_name"), version=registered.get("version"),
        promoted=registered.get("promoted"), decision=str(registered.get("decision", "")),
        data_sha256=prepared.dataset.sha256)


def _encoder_json(prepared: Prepared) -> str:
    import json

    return json.dumps(prepared.encoder.to_dict(), indent=1, sort_keys=True)


@flow(name="heartflow-run", persist_result=False, validate_parameters=False)
def train_flow(spec_path: str, spec_text: str | None = None, verbose: bool = True,
               parent_run_id: str | None = None) -> dict[str, object]:
    """Validate the spec, then preprocess -> train -> evaluate -> register."""
    loaded = (load_spec_text(spec_text, spec_path, check_files=True) if spec_text is not None
              else load_spec(spec_path))
    return execute(loaded, verbose=verbose, parent_run_id=parent_run_id).as_dict()
