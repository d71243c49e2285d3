"""What a training run records, step by step, written once for in-memory and streamed data:

- at its start: parameters flattened from the resolved spec, tags (data fingerprint, split
  sizes, seed, devices, versions), the data as an MLflow dataset input, the spec as given
  and as resolved, the encoder, the population summary (small cells suppressed), the split
  manifest (keyed row keys, with their key format and key id as tags), swept values;
- after training: the per-epoch history, epochs run and parameters;
- the settled decision threshold and how it was set;
- the test evaluation (metrics, plots, report, subgroups; undefined figures and why);
- cross-validation (fold summaries, the pooled out-of-fold report);
- each baseline as a sibling run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import yaml

from heartflow.data.summary import population_summary
from heartflow.evaluation.drift import MonitorReport, Reference
from heartflow.evaluation.heldout import UNDEFINED_REASON, Evaluation
from heartflow.evaluation.optimism import Optimism
from heartflow.evaluation.sample_size import DevelopmentCheck
from heartflow.evaluation.subgroups import subgroup_table
from heartflow.model.builder import count_parameters
from heartflow.model.devices import device_facts
from heartflow.model.training import TrainResult
from heartflow.spec.loading import LoadedSpec
from heartflow.tracking import names as N
from heartflow.tracking.recorder import Recorder, environment_tags, flatten, tracked_run
from heartflow.tracking.store import set_default_view


def spec_hash(loaded: LoadedSpec) -> str:
    """sha256 of the resolved spec (defaults filled in), as canonical JSON."""
    resolved = json.dumps(loaded.spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(resolved.encode()).hexdigest()


def run_tags(loaded: LoadedSpec, data: Any) -> dict[str, object]:
    """Run tags: data fingerprint, split sizes, versions, seed, devices."""
    spec = loaded.spec
    devices = device_facts(spec.train.device, count_parameters(spec, data.width))
    return {N.SPEC_NAME: spec.name, N.SPEC_PATH: loaded.path, N.SPEC_HASH: spec_hash(loaded),
            N.DATA_SHA256: data.sha256, N.DATA_SOURCE: data.source, N.ROWS: data.rows,
            N.STREAMING: "true" if data.streaming else "false",
            **{N.split_size(k): v for k, v in data.sizes().items()},
            N.SEED: spec.train.seed, N.INPUT_WIDTH: data.width,
            N.MISSING_RULE: "see preprocessing/encoder.json (median/mode/unseen=zeros)",
            "mlflow.note.content": spec.description or "",
            "mlflow.source.name": loaded.path, "mlflow.source.type": "LOCAL",
            **environment_tags(), **{N.device(k): v for k, v in devices.items()}}


def dataset_input(loaded: LoadedSpec, data: Any) -> tuple[str, str, str, dict[str, Any], int]:
    """(name, digest, source, schema, rows) of the run's data for MLflow's dataset input:
    named after the file, its digest the data sha256, its schema the spec's typed columns."""
    feats = loaded.spec.data.features
    target = loaded.spec.data.target_spec.column
    schema = {"mlflow_colspec": [
        *({"name": c, "type": "double"} for c in feats.numeric),
        *({"name": c, "type": "string"} for c in feats.categorical),
        {"name": target, "type": "string"}]}
    name = os.path.basename(str(data.source)) or loaded.spec.data.source
    return name, data.sha256, str(data.source), schema, int(data.rows)


def record_run_inputs(recorder: Recorder, loaded: LoadedSpec, data: Any,
                      extra_tags: dict[str, str] | None = None) -> None:
    """Parameters, tags and input artifacts of one run."""
    spec = loaded.spec
    recorder.params(flatten(spec.model_dump(mode="json", by_alias=True)))
    recorder.tags({**run_tags(loaded, data), **(extra_tags or {})})
    recorder.dataset(*dataset_input(loaded, data))
    set_default_view(recorder.experiment_id, spec.promotion_metric)
    recorder.text(loaded.text, N.SPEC_ARTIFACT)
    recorder.text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False),
                  N.RESOLVED_SPEC_ARTIFACT)
    recorder.text(json.dumps(data.encoder.to_dict(), indent=1, sort_keys=True),
                  N.ENCODER_ARTIFACT)
    dataset = getattr(data, "dataset", None)
    if dataset is not None:  # in memory: who the rows are (read by the model card)
        feats = spec.data.features
        parts = {name: getattr(data.split, name) for name in ("train", "validation", "test")}
        recorder.text(json.dumps(population_summary(dataset.features, dataset.y,
                                                    list(feats.numeric),
                                                    list(feats.categorical), parts,
                                                    spec.task == "binary"), indent=1),
                      N.POPULATION_ARTIFACT)
    manifest = data.manifest()
    if manifest is not None:  # which rows trained, validated and tested (the fair gate);
        recorder.tags({N.SPLIT_KEY_FORMAT: data.keyer.key_format,  # keyed keys (no row's
                       N.SPLIT_KEY_ID: data.keyer.key_id})  # key can be recomputed from it)
        recorder.text(manifest.to_csv(index=False), N.MANIFEST_ARTIFACT)
    if loaded.overrides:
        shown = dict(loaded.overrides)
        recorder.tags({N.OVERRIDES: json.dumps(shown)})
        # The swept values as their own params, so MLflow's compare view and its
        # parallel-coordinates chart show them first (0 units = no hidden layer).
        recorder.params({f"axis.{k}": json.dumps(v) if isinstance(v, (list, dict))
                         else str(v) for k, v in shown.items()})


def record_sample_size(recorder: Recorder, check: DevelopmentCheck | None) -> None:
    """Riley's minimum sample size against the development rows (binary models)."""
    if check is None:
        return
    recorder.metrics(check.as_metrics())
    recorder.tags({N.SAMPLE_SIZE_ANTICIPATED: check.anticipated,
                   N.SAMPLE_SIZE_WARNING: check.warning() or "none: the rows meet both counts"})


def record_training(recorder: Recorder, result: TrainResult) -> None:
    """Per-epoch metrics and training facts."""
    recorder.history(result.history)
    recorder.tags({N.EPOCHS_RUN: result.epochs_run, N.BEST_EPOCH: result.best_epoch or "",
                   N.PARAMETERS: result.model.count_params()})
    recorder.metrics({"train_seconds": result.seconds, "epochs_run": result.epochs_run})


def record_threshold(recorder: Recorder, threshold: float | None, rule: str) -> None:
    """The decision threshold in force and how it was set (binary models)."""
    if threshold is not None:
        recorder.tags({N.THRESHOLD: repr(float(threshold)), N.THRESHOLD_RULE: rule})


def record_evaluation(recorder: Recorder, evaluation: Evaluation, plots_folder: str,
                      report_html: str | None) -> None:
    """Test metrics (NaN ones as tags saying why), plots, the clinical report and subgroups."""
    recorder.directory(plots_folder, N.PLOTS_FOLDER)
    if report_html is not None:
        recorder.text(report_html, N.REPORT_ARTIFACT)
    if evaluation.subgroups:
        recorder.text(subgroup_table(evaluation.subgroups).to_csv(index=False),
                      N.SUBGROUPS_ARTIFACT)
        recorder.metrics(subgroup_metrics(evaluation))
    recorder.metrics(evaluation.as_metrics())
    undefined = evaluation.as_undefined()  # test_<figure> -> why (metrics, clinical figures)
    for k, v in evaluation.metrics.items():  # an Evaluation that gave no reason
        if v != v:
            undefined.setdefault(f"test_{k}", UNDEFINED_REASON.get(k, "undefined"))
    if undefined:  # NaN is not logged as a metric: say so, and why
        recorder.tags({N.undefined(k): why for k, why in undefined.items()})


def subgroup_metrics(evaluation: Evaluation) -> dict[str, float]:
    """``subgroup/<column>/<level>/<figure>`` metrics (MLflow-safe names)."""
    out = {}
    for g in evaluation.subgroups:
        level = re.sub(r"[^A-Za-z0-9_.-]+", "_", g.level).strip("_") or "level"
        key = f"subgroup/{g.column}/{level}"
        out[f"{key}/rows"], out[f"{key}/cases"] = float(g.rows), float(g.cases)
        for name in ("roc_auc", "calibration_slope", "calibration_intercept"):
            out[f"{key}/{name}"] = g.report.values[name]
    return out


def record_cv(recorder: Recorder, summary: Any, pooled_html: str | None,
              plots_folder: str | None) -> None:
    """Fold summaries (cv_<metric>_mean/_ci95/_std) as metrics, each fold's figures as one
    table (``evaluation/cv_folds.csv``, not dozens of one-point charts on the run page),
    and the pooled out-of-fold report."""
    recorder.metrics(summary.as_metrics())
    recorder.text(summary.fold_table().to_csv(index=False), N.CV_FOLDS_ARTIFACT)
    pooled = summary.pooled_report
    if pooled is not None:
        recorder.metrics(pooled.as_metrics("cv_pooled_"))
        if pooled.undefined:  # NaN is not logged as a metric: say why
            recorder.tags({N.undefined("cv_pooled_" + k.replace("@", "_at_")): why
                           for k, why in pooled.undefined.items()})
    if pooled_html is not None:
        recorder.text(pooled_html, N.CV_REPORT_ARTIFACT)
    if plots_folder is not None:
        recorder.directory(plots_folder, N.PLOTS_FOLDER)


def record_optimism(recorder: Recorder, result: Optimism, plots_folder: str) -> None:
    """Optimism-corrected figures, the instability plot and each patient's instability (a
    table without patient values: row position, mean absolute difference)."""
    recorder.metrics(result.as_metrics())
    recorder.directory(plots_folder, N.PLOTS_FOLDER)
    recorder.text(pd.DataFrame({"figure": list(result.corrected),
                                "apparent": list(result.apparent.values()),
                                "optimism": list(result.optimism.values()),
                                "optimism_sd": list(result.optimism_sd.values()),
                                "corrected": list(result.corrected.values()),
                                "undefined_refits": list(result.failed.values())}
                               ).to_csv(index=False), N.OPTIMISM_ARTIFACT)


@contextlib.contextmanager
def baseline_run(spec_name: str, name: str, parent: Recorder, data: Any,
                 parent_run_id: str | None) -> Iterator[Recorder]:
    """A sibling run for one baseline fitted on the run's identical split and encoding."""
    tags = {N.BASELINE: name, N.BASELINE_FOR: parent.run_id, N.SPEC_NAME: spec_name,
            N.DATA_SHA256: data.sha256, **{N.split_size(k): str(v)
                                           for k, v in data.sizes().items()}}
    with tracked_run(spec_name, f"baseline-{name}", tags=tags,
                     parent_run_id=parent_run_id) as recorder:
        yield recorder


def record_baseline(recorder: Recorder, name: str, result: Any) -> None:
    """A baseline's parameters, test and validation figures, time and CV."""
    recorder.params({"baseline": name, **{f"estimator.{k}": v
                                          for k, v in result.params.items()}})
    recorder.metrics({f"test_{k}": v for k, v in result.metrics.items()})
    recorder.metrics({f"validation_{k}": v for k, v in (result.validation or {}).items()})
    recorder.metrics({"train_seconds": result.seconds})
    if result.cv is not None:
        recorder.metrics(result.cv.as_metrics())


def record_registration(recorder: Recorder, name: str, version: str) -> None:
    """Which registered version this run became."""
    recorder.tags({N.REGISTERED_MODEL: name, N.REGISTERED_VERSION: version})


def record_reference(recorder: Recorder, reference: Reference | None, note: str = "") -> None:
    """The monitoring reference of the development rows (``monitoring/reference.json``),
    or why the run has none."""
    if reference is None:
        recorder.tags({N.MONITORING_REFERENCE: note or "none"})
    else:
        recorder.text(reference.to_json(), N.MONITORING_REFERENCE_ARTIFACT)


def record_monitoring(recorder: Recorder, report: MonitorReport) -> None:
    """A monitoring run's checks (``monitor/<check>`` with ``.p_value`` and ``.drift``),
    the batch's figures, the report as JSON and the HTML page."""
    values: dict[str, float] = {"rows": float(report.rows),
                                "rows_with_outcome": float(report.rows_with_outcome),
                                "events": float(report.events),
                                "drift": float(report.drift),
                                "failed_checks": float(len(report.failed))}
    for check in report.checks:
        key = N.check_metric(check.name)
        if check.value is not None:
            values[key] = check.value
            values[f"{key}.drift"] = float(check.drift)
        if check.p_value is not None:
            values[f"{key}.p_value"] = check.p_value
    for name, figure in report.figures.items():
        key = "batch_" + name.replace("@", "_at_")
        values[key], values[f"{key}_ci_low"], values[f"{key}_ci_high"] = (
            figure.value, figure.low, figure.high)
    recorder.metrics(values)  # (NaN values are not logged)
    recorder.text(report.to_json(), N.MONITORING_REPORT_ARTIFACT)
    if report.page:
        recorder.text(report.page, N.MONITORING_HTML_ARTIFACT)
