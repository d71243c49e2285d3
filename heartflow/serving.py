"""The registered model: preprocessing + Keras network as one MLflow pyfunc.

It scores raw records (the data file's own columns). Loading reads JSON and a
``.keras`` file with Keras ``safe_mode=True``; nothing is unpickled. The model is
logged "from code" (``heartflow/model_entry.py``), so only the installed
``heartflow`` package is needed to load it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from heartflow.errors import DataError

KERAS_ARTIFACT = "keras_model"
ENCODER_ARTIFACT = "encoder"
META_ARTIFACT = "meta"


def missing_columns(frame: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Feature columns the model needs that ``frame`` lacks."""
    needed = [*meta["numeric"], *meta["categorical"]]
    return [c for c in needed if c not in frame.columns]


class Scorer:
    """Raw DataFrame in, predictions out. Used by the pyfunc and `heartflow predict`."""

    def __init__(self, encoder, network, meta: dict[str, Any]) -> None:
        self.encoder, self.network, self.meta = encoder, network, meta

    @classmethod
    def load(cls, keras_path: str, encoder_path: str, meta_path: str) -> Scorer:
        """Load from artifact files (safe mode, no pickle)."""
        import keras

        import heartflow.activations  # noqa: F401  (registers custom activations)
        from heartflow.preprocess import TabularEncoder

        network = keras.saving.load_model(keras_path, compile=False, safe_mode=True)
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
        return cls(TabularEncoder.load(encoder_path), network, meta)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Typed, encoded input matrix for raw records."""
        from heartflow.data.dataset import prepare_features

        missing = missing_columns(frame, self.meta)
        if missing:
            raise DataError(f"input lacks required column(s): {', '.join(missing)}")
        frame = frame.reset_index(drop=True)
        typed = prepare_features(frame, self.meta["numeric"], self.meta["categorical"],
                                 self.meta["na_values"])
        return self.encoder.transform(typed)

    def raw_output(self, x: np.ndarray) -> np.ndarray:
        """The network's output for an encoded matrix."""
        if len(x) <= 4096:
            return np.asarray(self.network(x, training=False))
        return np.asarray(self.network.predict(x, batch_size=4096, verbose=0))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Probabilities and predicted class (or the predicted value for regression)."""
        out = self.raw_output(self.encode(frame))
        task = self.meta["task"]
        if task == "binary":
            proba = out.reshape(-1).astype(np.float64)
            threshold = self.meta["threshold"]
            return pd.DataFrame({"probability": proba,
                                 "prediction": (proba >= threshold).astype(np.int64)})
        if task == "multiclass":
            classes = self.meta["classes"]
            result = pd.DataFrame(out.astype(np.float64),
                                  columns=[f"probability_{c}" for c in classes])
            result["prediction"] = [classes[i] for i in out.argmax(axis=1)]
            return result
        return pd.DataFrame({"prediction": out.reshape(-1).astype(np.float64)})


def _python_model_class():
    import mlflow.pyfunc

    class HeartflowModel(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc wrapper around :class:`Scorer`."""

        def load_context(self, context) -> None:
            a = context.artifacts
            self.scorer = Scorer.load(a[KERAS_ARTIFACT], a[ENCODER_ARTIFACT], a[META_ARTIFACT])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            if not isinstance(model_input, pd.DataFrame):
                model_input = pd.DataFrame(model_input)
            return self.scorer.predict(model_input)

    return HeartflowModel


def load_scorer(model_uri: str) -> Scorer:
    """Load a logged/registered heartflow model as a Scorer (for `heartflow predict`)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    python_model = model.unwrap_python_model()
    scorer = getattr(python_model, "scorer", None)
    if scorer is None:
        raise DataError(f"{model_uri} is not a heartflow model")
    return scorer
