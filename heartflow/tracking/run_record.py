"""What every training run records at its start, written once for in-memory and streamed data:
parameters flattened from the resolved spec, tags (data fingerprint, split sizes, seed,
devices, versions), the spec as given and as resolved, the encoder, the swept values."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from heartflow.spec.loading import LoadedSpec
from heartflow.tracking.registry import MANIFEST_ARTIFACT
from heartflow.tracking.runs import Recorder, environment_tags, flatten, set_default_view

POPULATION_ARTIFACT = "data/population.json"


def spec_hash(loaded: LoadedSpec) -> str:
    """sha256 of the resolved spec (defaults filled in), as canonical JSON."""
    resolved = json.dumps(loaded.spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(resolved.encode()).hexdigest()


def run_tags(loaded: LoadedSpec, data: Any) -> dict[str, object]:
    """Run tags: data fingerprint, split sizes, versions, seed, devices."""
    from heartflow.model.builder import count_parameters
    from heartflow.model.devices import device_tags

    return {"heartflow.spec_name": loaded.spec.name, "heartflow.spec_path": loaded.path,
            "heartflow.spec_hash": spec_hash(loaded),
            "heartflow.data_sha256": data.sha256, "heartflow.data_source": data.source,
            "heartflow.rows": data.rows,
            "heartflow.streaming": "true" if data.streaming else "false",
            **{f"heartflow.split.{k}": v for k, v in data.sizes().items()},
            "heartflow.seed": loaded.spec.train.seed,
            "heartflow.input_width": data.width,
            "heartflow.missing_rule": "see preprocessing/encoder.json (median/mode/unseen=zeros)",
            "mlflow.note.content": loaded.spec.description or "",
            "mlflow.source.name": loaded.path, "mlflow.source.type": "LOCAL",
            **environment_tags(), **device_tags(loaded.spec.train.device,
                                                  count_parameters(loaded.spec, data.width))}


def dataset_input(loaded: LoadedSpec, data: Any) -> tuple[str, str, str, dict[str, Any], int]:
    """(name, digest, source, schema, rows) of the run's data for MLflow's dataset input:
    named after the file, its digest the data sha256, its schema the spec's typed columns."""
    import os

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
    recorder.text(loaded.text, "spec/spec.yaml")
    recorder.text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False),
                  "spec/resolved.yaml")
    recorder.text(json.dumps(data.encoder.to_dict(), indent=1, sort_keys=True),
                  "preprocessing/encoder.json")
    dataset = getattr(data, "dataset", None)
    if dataset is not None:  # in memory: who the rows are (read by the model card)
        from heartflow.data.summary import population_summary

        feats = spec.data.features
        parts = {name: getattr(data.split, name) for name in ("train", "validation", "test")}
        recorder.text(json.dumps(population_summary(dataset.features, dataset.y,
                                                    list(feats.numeric),
                                                    list(feats.categorical), parts,
                                                    spec.task == "binary"), indent=1),
                      POPULATION_ARTIFACT)
    manifest = data.manifest()
    if manifest is not None:  # which rows trained, validated and tested (the fair gate)
        recorder.text(manifest.to_csv(index=False), MANIFEST_ARTIFACT)
    if loaded.overrides:
        shown = {k: v for k, v in loaded.overrides.items() if k != "register.enabled"}
        recorder.tags({"heartflow.overrides": json.dumps(shown)})
        # The swept values as their own params, so MLflow's compare view and its
        # parallel-coordinates chart show them first (0 units = no hidden layer).
        recorder.params({f"axis.{k}": json.dumps(v) if isinstance(v, (list, dict))
                         else str(v) for k, v in shown.items()})
