"""Scoring through the exported ONNX graph gives the Keras network's own outputs (binary,
multiclass softmax with dropout, heartflow's custom activations), and a network the export
cannot carry is scored by Keras with the reason said."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import heart_csv


def _trained(tmp_path: Path, target: str, output: dict, loss: str, hidden: list[dict]):
    """A heart-like network trained by heartflow (a few epochs), with its encoded rows."""
    import heartflow as hf
    from heartflow.data.prepare import prepare
    from heartflow.model.training import train_model

    csv = heart_csv(tmp_path / "heart.csv", rows=400)
    categorical = [c for c in ("sex", "cp", "fbs", "restecg", "exang", "ca", "thal")
                   if c != target]
    loaded = hf.load_spec({
        "name": "onnx", "data": {"source": str(csv), "target": target,
                                 "features": {"categorical": categorical,
                                              "numeric": ["age", "trestbps", "chol",
                                                          "thalach", "oldpeak", "slope"]}},
        "model": {"hidden": hidden, "output": output},
        "train": {"loss": loss, "epochs": 5, "batch_size": 32, "seed": 3}})
    data = prepare(loaded)
    x, y = data.part("train")
    network = train_model(loaded.spec, data.width, x, y).model
    return network, data.x


@pytest.mark.parametrize(("target", "output", "loss", "hidden"), [
    ("target", {"units": 1, "activation": "sigmoid"}, "binary_crossentropy",
     [{"units": 16, "activation": "relu"}]),
    ("thal", {"units": 3, "activation": "softmax"}, "categorical_crossentropy",
     [{"units": 16, "activation": "squareplus", "dropout": 0.3},
      {"units": 8, "activation": "leaky_relu_01"}]),
], ids=["binary-relu", "softmax-dropout-custom-activations"])
def test_onnx_outputs_equal_the_keras_models_predict(tmp_path: Path, target, output, loss,
                                                     hidden) -> None:
    from heartflow.model.scorer import OnnxNetwork, export_onnx

    network, x = _trained(tmp_path, target, output, loss, hidden)
    reference = network.predict(x, verbose=0)  # Keras' own inference (dropout off)
    path = str(tmp_path / "network.onnx")
    assert export_onnx(network, path) is None
    got = OnnxNetwork(path)(x)
    assert got.shape == reference.shape == (len(x), output["units"])
    assert np.max(np.abs(got.astype(np.float64) - reference)) <= 1e-6
    if output["activation"] == "softmax":
        assert np.allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_a_network_the_export_cannot_carry_is_scored_by_keras_and_says_why(
        tmp_path: Path) -> None:
    import keras

    from heartflow.data.encoder import TabularEncoder
    from heartflow.model.meta import ModelMeta
    from heartflow.model.scorer import Scorer, export_onnx

    inputs = keras.Input(shape=(1,))
    hidden = keras.layers.Dense(4, activation="gelu")(inputs)  # erfc: no ONNX converter
    network = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    why = export_onnx(network, str(tmp_path / "gelu.onnx"))
    assert why and not (tmp_path / "gelu.onnx").exists()
    network.save(tmp_path / "gelu.keras")
    frame = pd.DataFrame({"age": [40.0, 61.0, 55.0]})
    TabularEncoder(["age"], []).fit(frame).save(str(tmp_path / "encoder.json"))
    (tmp_path / "meta.json").write_text(ModelMeta(
        spec_name="gelu", task="binary", numeric=("age",), categorical=(), na_values=(),
        threshold=0.5, classes=("0", "1"), target="y").to_json())
    scorer = Scorer.load(str(tmp_path / "gelu.keras"), str(tmp_path / "encoder.json"),
                         str(tmp_path / "meta.json"), None, why)
    assert scorer.runtime == "keras" and why in scorer.runtime_note
    x = scorer.encoder.transform(scorer.typed(frame))
    expected = network.predict(x, verbose=0).reshape(-1)
    assert np.allclose(scorer.predict(frame)["probability"], expected, atol=1e-6)
