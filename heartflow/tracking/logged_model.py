"""The logged model: network (.keras, and .onnx), encoder and meta (JSON) as one MLflow pyfunc.

The pyfunc is logged "from code" (``heartflow/tracking/model_entry.py``), so loading it
needs the installed ``heartflow`` package and unpickles nothing. Plugin modules whose
activations the network uses travel with it as MLflow ``code_paths``.

The network is also exported to ONNX (checked against Keras on probe rows), and the pyfunc
scores with onnxruntime when that graph is there: ``heartflow predict``, ``evaluate``,
``monitor`` and ``mlflow models serve`` then start without TensorFlow. When the export
fails, the model is scored by Keras and the reason is kept (tag
``heartflow.scoring.runtime`` on the run and the logged model; an artifact the loader
reads to say it).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import tempfile
import warnings

import pandas as pd

from heartflow.errors import DataError
from heartflow.model.meta import ModelMeta
from heartflow.model.plugins import plugin_code_paths
from heartflow.model.scorer import Scorer, export_onnx
from heartflow.tracking import names as N
from heartflow.tracking.store import client

ENTRY = os.path.join(os.path.dirname(__file__), "model_entry.py")
KERAS_ARTIFACT, ENCODER_ARTIFACT, META_ARTIFACT = "keras_model", "encoder", "meta"
ONNX_ARTIFACT = "onnx_model"  # the network as an ONNX graph, when its export was checked
NO_ONNX_ARTIFACT = "no_onnx"  # why it has none (a text file), when the export failed


def _requirements() -> list[str]:
    reqs = []
    for dist in ("heartflow", "mlflow", "tensorflow", "keras", "onnxruntime", "pandas",
                 "numpy"):
        try:
            reqs.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def signature(meta: ModelMeta):
    """Input: the raw feature columns (any type, scored by the training rules)."""
    from mlflow.models import ModelSignature  # lazy: MLflow costs 1.3 s to import
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), name) for name in meta.columns])
    imputed = ColSpec("long", "imputed")  # feature values missing in the row, imputed
    if meta.task == "binary":
        outputs = Schema([ColSpec("double", "probability"), ColSpec("long", "prediction"),
                          imputed])
    elif meta.task == "multiclass":
        outputs = Schema([*(ColSpec("double", f"probability_{c}") for c in meta.classes),
                          ColSpec("string", "prediction"), imputed])
    else:
        outputs = Schema([ColSpec("double", "prediction"), imputed])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_scorer(run_id: str, experiment_id: str, scorer: Scorer, example: pd.DataFrame) -> str:
    """Log a Scorer (network, encoder, meta; plugin code) as a pyfunc; returns the model URI."""
    import mlflow.pyfunc  # lazy: MLflow
    from mlflow.models import Model

    encoder, network, meta = scorer.encoder, scorer.network, scorer.meta
    with tempfile.TemporaryDirectory(prefix="heartflow-model-") as tmp:
        keras_path = os.path.join(tmp, "network.keras")
        network.save(keras_path)
        encoder_path = os.path.join(tmp, "encoder.json")
        encoder.save(encoder_path)
        meta_path = os.path.join(tmp, "meta.json")
        with open(meta_path, "w", encoding="utf-8") as fh:
            fh.write(meta.to_json())
        artifacts = {KERAS_ARTIFACT: keras_path, ENCODER_ARTIFACT: encoder_path,
                     META_ARTIFACT: meta_path}
        onnx_path = os.path.join(tmp, "network.onnx")
        why_not = export_onnx(network, onnx_path)
        if why_not is None:
            artifacts[ONNX_ARTIFACT] = onnx_path
        else:
            artifacts[NO_ONNX_ARTIFACT] = os.path.join(tmp, "no_onnx.txt")
            with open(artifacts[NO_ONNX_ARTIFACT], "w", encoding="utf-8") as fh:
                fh.write(why_not)
        runtime = "onnxruntime" if why_not is None else f"keras: {why_not}"
        example = example.astype(object).where(example.notna(), None)
        logged = mlflow.initialize_logged_model(name=N.MODEL_ARTIFACT, source_run_id=run_id,
                                                experiment_id=experiment_id)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*type hints.*")
            info = Model.log(
                artifact_path=None, name=N.MODEL_ARTIFACT, flavor=mlflow.pyfunc, run_id=run_id,
                model_id=logged.model_id, python_model=ENTRY,
                artifacts=artifacts,
                code_paths=plugin_code_paths(list(meta.plugins)) or None,
                signature=signature(meta), input_example=example,
                pip_requirements=_requirements())
    mlflow.set_logged_model_tags(logged.model_id, {N.SCORING_RUNTIME: runtime})
    client().set_tag(run_id, N.SCORING_RUNTIME, runtime)
    return info.model_uri


def python_model_class():
    """The MLflow PythonModel class that wraps a :class:`Scorer` (used by model_entry)."""
    import mlflow.pyfunc  # lazy: MLflow

    class HeartflowModel(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc wrapper around :class:`Scorer`."""

        def load_context(self, context) -> None:
            a = context.artifacts
            why = ""
            if NO_ONNX_ARTIFACT in a:
                with open(a[NO_ONNX_ARTIFACT], encoding="utf-8") as fh:
                    why = fh.read().strip()
            self.scorer = Scorer.load(a[KERAS_ARTIFACT], a[ENCODER_ARTIFACT], a[META_ARTIFACT],
                                      a.get(ONNX_ARTIFACT), why)

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            if not isinstance(model_input, pd.DataFrame):
                model_input = pd.DataFrame(model_input)
            return self.scorer.predict(model_input)

    return HeartflowModel


def load_scorer_folder(folder: str) -> Scorer:
    """Load a heartflow model from a local MLflow model folder (``mlflow artifacts download
    -u models:/NAME@ALIAS -d FOLDER`` makes one) without importing MLflow: the folder's
    ``MLmodel`` file names the artifacts. A model that carries plugin code is loaded by
    MLflow, which puts that code on the import path."""
    import yaml  # lazy: only for a model folder

    where = os.path.join(folder, "MLmodel")
    try:
        with open(where, encoding="utf-8") as fh:
            described = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{folder}: not a model folder ({where} cannot be read: {exc}); "
                        "make one with `mlflow artifacts download -u "
                        "models:/NAME@ALIAS -d FOLDER`") from None
    pyfunc = (described.get("flavors") or {}).get("python_function") or {}
    files = {name: os.path.join(folder, entry["path"])
             for name, entry in (pyfunc.get("artifacts") or {}).items()}
    inside = os.path.realpath(folder) + os.sep
    outside = sorted(n for n, f in files.items() if not os.path.realpath(f).startswith(inside))
    if outside:
        raise DataError(f"{folder}: its MLmodel points artifact(s) {', '.join(outside)} "
                        "outside the folder; download the model again")
    if not {KERAS_ARTIFACT, ENCODER_ARTIFACT, META_ARTIFACT} <= set(files):
        raise DataError(f"{folder} is not a heartflow model (its MLmodel names no network, "
                        "encoder and meta artifacts)")
    if pyfunc.get("code"):
        return load_scorer(folder)  # plugin code: MLflow's loader imports it
    why = ""
    if NO_ONNX_ARTIFACT in files:
        with open(files[NO_ONNX_ARTIFACT], encoding="utf-8") as fh:
            why = fh.read().strip()
    return Scorer.load(files[KERAS_ARTIFACT], files[ENCODER_ARTIFACT], files[META_ARTIFACT],
                       files.get(ONNX_ARTIFACT), why)


def load_scorer(model_uri: str) -> Scorer:
    """Load a logged or registered heartflow model (``models:/name@champion``) as a Scorer."""
    import mlflow.pyfunc  # lazy: MLflow

    # suppress_warnings: MLflow's check of the logged requirements scans every installed
    # distribution (0.3-1 s) on each load; heartflow loads its own models with itself.
    model = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)
    scorer = getattr(model.unwrap_python_model(), "scorer", None)
    if scorer is None:
        raise DataError(f"{model_uri} is not a heartflow model")
    return scorer
