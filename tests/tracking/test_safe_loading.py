"""Security: nothing executes from a spec unless opted in; models load in Keras safe mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.errors import SpecError
from heartflow.spec import load_spec_text
from tests.conftest import cli

SPEC = """\
name: plugin_test
data:
  source: heart-csv
  target: target
  features: {numeric: [age]}
model:
  hidden:
    - {units: 4, activation: my_swish}
"""

PLUGIN = """\
from keras import ops
from heartflow.model.activations import register_activation


@register_activation("my_swish")
def my_swish(x):
    return x * ops.sigmoid(x)
"""


def test_unknown_activation_needs_an_explicit_plugin(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown activation 'my_swish'"):
        load_spec_text(SPEC, "s.yaml")
    (tmp_path / "s.yaml").write_text(SPEC)
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    refused = cli("validate", str(tmp_path / "s.yaml"), env=env)
    assert refused.returncode == 2 and "my_swish" in refused.stderr
    allowed = cli("validate", "--plugin", "my_plugin", str(tmp_path / "s.yaml"), env=env)
    assert allowed.returncode == 0, allowed.stderr
    missing = cli("validate", "--plugin", "no_such_module", str(tmp_path / "s.yaml"))
    assert missing.returncode == 1 and "cannot import plugin" in missing.stderr


def test_scorer_refuses_a_model_with_a_lambda_layer(tmp_path: Path) -> None:
    import keras

    from heartflow.data.encoder import TabularEncoder
    from heartflow.model.meta import ModelMeta
    from heartflow.model.scorer import Scorer

    inputs = keras.Input(shape=(1,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "evil.keras")
    TabularEncoder(["age"], []).save(str(tmp_path / "encoder.json"))
    (tmp_path / "meta.json").write_text(ModelMeta(
        spec_name="evil", task="binary", numeric=("age",), categorical=(), na_values=(),
        threshold=0.5, classes=("0", "1"), target="y").to_json())  # a valid meta: the network
    with pytest.raises(ValueError, match=r"(?i)lambda|safe"):  # is what must be refused
        Scorer.load(str(tmp_path / "evil.keras"), str(tmp_path / "encoder.json"),
                    str(tmp_path / "meta.json"))


@pytest.mark.slow
def test_registered_models_hold_no_lambda_and_load_in_safe_mode(tmp_path: Path,
                                                                prefect_server) -> None:
    import keras
    import mlflow

    import heartflow as hf
    from tests.conftest import heart_csv, heart_spec

    heart_csv(tmp_path / "heart.csv", rows=120)
    spec = heart_spec(tmp_path / "s.yaml", epochs=2)
    spec.write_text(spec.read_text().replace("activation: relu", "activation: squareplus"))
    hf.run(str(spec))
    local = mlflow.artifacts.download_artifacts("models:/heart-test/1", dst_path=str(tmp_path))
    network = next(Path(local).rglob("network.keras"))
    with zipfile.ZipFile(network) as archive:
        config = archive.read("config.json").decode()
    assert "Lambda" not in config and "squareplus" in config
    model = keras.saving.load_model(network, safe_mode=True, compile=False)
    width = model.input_shape[-1]
    assert np.asarray(model(np.zeros((1, width), dtype=np.float32))).shape == (1, 1)
    pickles = [p for p in Path(local).rglob("*") if p.suffix in (".pkl", ".pickle")]
    assert pickles == []
    # Scoring goes through the ONNX graph logged beside the network, without TensorFlow.
    assert next(Path(local).rglob("network.onnx")).is_file()
    run_id = mlflow.MlflowClient().get_model_version("heart-test", "1").run_id
    assert mlflow.get_run(run_id).data.tags["heartflow.scoring.runtime"] == "onnxruntime"
    code = ("import json, sys; import heartflow as hf\n"
            "out = hf.load_model('models:/heart-test/1').predict(hf.read_records('heart.csv'))\n"
            "print(json.dumps({'p': out['probability'].tolist(), 'tf': 'tensorflow' in "
            "sys.modules or 'keras' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    scored = json.loads(done.stdout.strip().splitlines()[-1])
    assert scored["tf"] is False
    # The same rows through the Keras network (Keras' own predict on the same encoding).
    scorer = hf.load_model("models:/heart-test/1").scorer
    encoded = scorer.encoder.transform(scorer.typed(pd.read_csv(tmp_path / "heart.csv")))
    expected = model.predict(encoded, verbose=0).reshape(-1)
    assert np.max(np.abs(np.asarray(scored["p"]) - expected)) <= 1e-6
    # A downloaded model folder scores the same, without the registry and without MLflow.
    folder = ("import json, sys; import heartflow as hf\n"
              "out = hf.load_model(sys.argv[1]).predict(hf.read_records('heart.csv'))\n"
              "print(json.dumps({'p': out['probability'].tolist(), 'loaded': sorted(m for m "
              "in ('mlflow', 'tensorflow', 'keras', 'prefect') if m in sys.modules)}))")
    done = subprocess.run([sys.executable, "-c", folder, str(local)], capture_output=True,
                          text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    from_folder = json.loads(done.stdout.strip().splitlines()[-1])
    assert from_folder["loaded"] == []
    assert np.max(np.abs(np.asarray(from_folder["p"]) - expected)) <= 1e-6
    import heartflow.model.scorer as scoring

    os.environ[scoring.RUNTIME_SWITCH] = "keras"  # the old path, kept as a switch
    try:
        keras_scorer = hf.load_model("models:/heart-test/1")
    finally:
        del os.environ[scoring.RUNTIME_SWITCH]
    assert keras_scorer.scorer.runtime == "keras" and "=keras" in keras_scorer.runtime_note


def test_a_folder_without_a_model_is_refused_with_how_to_make_one(tmp_path: Path) -> None:
    import heartflow as hf
    from heartflow.errors import DataError

    with pytest.raises(DataError, match=r"not a model folder.*mlflow artifacts download"):
        hf.load_model(str(tmp_path))
    (tmp_path / "MLmodel").write_text("flavors: {python_function: {artifacts: {}}}\n")
    with pytest.raises(DataError, match="is not a heartflow model"):
        hf.load_model(str(tmp_path))
    (tmp_path / "MLmodel").write_text(
        "flavors: {python_function: {artifacts: {keras_model: {path: ../x.keras}, "
        "encoder: {path: e.json}, meta: {path: m.json}}}}\n")
    with pytest.raises(DataError, match="outside the folder"):
        hf.load_model(str(tmp_path))
