"""Log the trained network and its preprocessing as one MLflow pyfunc model."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import tempfile
import warnings

import pandas as pd

from heartflow.preprocess import TabularEncoder
from heartflow.serving import ENCODER_ARTIFACT, KERAS_ARTIFACT, META_ARTIFACT
from heartflow.spec.models import Spec

ENTRY = os.path.join(os.path.dirname(__file__), "model_entry.py")


def model_meta(spec: Spec, encoder: TabularEncoder, classes: list[str]) -> dict:
    """What the scorer needs besides weights and encoder: columns, task, threshold."""
    return {"format": "heartflow.meta/1", "spec_name": spec.name, "task": spec.task,
            "numeric": encoder.numeric, "categorical": encoder.categorical,
            "na_values": encoder.na_values, "threshold": spec.evaluate.threshold,
            "classes": classes, "target": spec.data.target_spec.column,
            "input_width": encoder.width}


def _requirements() -> list[str]:
    reqs = []
    for dist in ("mlflow", "tensorflow", "keras", "pandas", "numpy"):
        try:
            reqs.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def signature(meta: dict):
    """Input: the raw feature columns (any type, scored by the training rules)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), name) for name in [*meta["numeric"],
                                                           *meta["categorical"]]])
    if meta["task"] == "binary":
        outputs = Schema([ColSpec("double", "probability"), ColSpec("long", "prediction")])
    elif meta["task"] == "multiclass":
        outputs = Schema([*(ColSpec("double", f"probability_{c}") for c in meta["classes"]),
                          ColSpec("string", "prediction")])
    else:
        outputs = Schema([ColSpec("double", "prediction")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_model(run_id: str, experiment_id: str, spec: Spec, encoder: TabularEncoder, network,
              classes: list[str],
              example: pd.DataFrame) -> str:
    """Save network (.keras), encoder and meta (JSON) and log them as a pyfunc; returns URI."""
    import mlflow.pyfunc
    from mlflow.models import Model

    meta = model_meta(spec, encoder, classes)
    with tempfile.TemporaryDirectory(prefix="heartflow-model-") as tmp:
        keras_path = os.path.join(tmp, "network.keras")
        network.save(keras_path)
        encoder_path = os.path.join(tmp, "encoder.json")
        encoder.save(encoder_path)
        meta_path = os.path.join(tmp, "meta.json")
        with open(meta_path, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)
        example = example.astype(object).where(example.notna(), None)
        logged = mlflow.initialize_logged_model(name="model", source_run_id=run_id,
                                                experiment_id=experiment_id)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*type hints.*")
            info = Model.log(
            artifact_path=None, name="model", flavor=mlflow.pyfunc, run_id=run_id,
            model_id=logged.model_id,
            python_model=ENTRY,
            artifacts={KERAS_ARTIFACT: keras_path, ENCODER_ARTIFACT: encoder_path,
                       META_ARTIFACT: meta_path},
            signature=signature(meta), input_example=example,
            pip_requirements=_requirements())
    return info.model_uri
