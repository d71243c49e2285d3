"""The scorer: a fitted encoder and a Keras network, raw records in, predictions out.

It is what the logged MLflow model wraps (:mod:`heartflow.tracking.logged_model`), what
``heartflow predict`` and ``hf.load_model(uri).predict(df)`` use, and what the
promotion gate re-scores the champion with. Loading reads JSON and a ``.keras`` file in
Keras' ``safe_mode``; nothing is unpickled.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.dataset import prepare_features
from heartflow.data.encoder import TabularEncoder
from heartflow.errors import DataError
from heartflow.model.meta import ModelMeta
from heartflow.model.recalibration import apply_recalibration


def network_output(network: Any, x: np.ndarray) -> np.ndarray:
    """The network's output for an encoded matrix (a direct call for small inputs)."""
    if len(x) <= 4096:
        return np.asarray(network(x, training=False))
    return np.asarray(network.predict(x, batch_size=4096, verbose=0))


def missing_columns(frame: pd.DataFrame, meta: ModelMeta) -> list[str]:
    """Feature columns the model needs that ``frame`` lacks."""
    return [c for c in meta.columns if c not in frame.columns]


class Scorer:
    """Raw DataFrame in, predictions out."""

    def __init__(self, encoder: TabularEncoder, network: Any, meta: ModelMeta) -> None:
        self.encoder, self.network, self.meta = encoder, network, meta

    @classmethod
    def trained(cls, spec: Any, encoder: TabularEncoder, network: Any, classes: list[str],
                threshold: float) -> Scorer:
        """A freshly trained network with its meta; records the plugin modules (outside
        heartflow) whose activations it uses, so they ship with the logged model."""
        from heartflow.model.activations import plugin_modules  # lazy: imports Keras

        plugins = plugin_modules([layer.activation for layer in spec.model.hidden])
        return cls(encoder, network, ModelMeta.from_spec(spec, encoder, classes, threshold,
                                                         plugins))

    @classmethod
    def load(cls, keras_path: str, encoder_path: str, meta_path: str) -> Scorer:
        """Load from artifact files (safe mode, no pickle); imports the model's plugins first."""
        import keras  # lazy: TensorFlow's 4 s import, only when a model is loaded

        # lazy: registers Keras activations (imports Keras)
        import heartflow.model.activations  # noqa: F401  (registers custom activations; Keras)

        with open(meta_path, encoding="utf-8") as fh:
            meta = ModelMeta.from_json(fh.read())
        for module in meta.plugins:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise DataError(f"this model uses activations from the plugin module "
                                f"{module!r}, which cannot be imported ({exc}); install it or "
                                "put it on PYTHONPATH") from None
        network = keras.saving.load_model(keras_path, compile=False, safe_mode=True)
        return cls(TabularEncoder.load(encoder_path), network, meta)

    @property
    def task(self) -> str:
        """binary, multiclass or regression."""
        return self.meta.task

    def typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Raw records as typed feature columns (the training rules; errors name the row)."""
        missing = missing_columns(frame, self.meta)
        if missing:
            raise DataError(f"input lacks required column(s): {', '.join(missing)}")
        meta = self.meta
        return prepare_features(frame.reset_index(drop=True), list(meta.numeric),
                                list(meta.categorical), list(meta.na_values),
                                missing_codes=meta.missing_codes)

    def output(self, typed: pd.DataFrame) -> np.ndarray:
        """The network's output for typed feature columns (probabilities or values)."""
        out = network_output(self.network, self.encoder.transform(typed))
        if self.task == "multiclass":
            return out
        if self.meta.recalibration:  # a site's recalibration (heartflow recalibrate)
            return apply_recalibration(out.reshape(-1), self.meta.recalibration)
        return out.reshape(-1)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Probabilities and predicted class (or the predicted value for regression), and how
        many of each row's feature values were missing and imputed by the training rule."""
        typed = self.typed(frame)  # idempotent on frames that are typed already
        out = self.output(typed)
        imputed = typed[self.meta.columns].isna().sum(
            axis=1).to_numpy(np.int64)
        if self.task == "binary":
            proba = out.astype(np.float64)
            result = pd.DataFrame({"probability": proba,
                                   "prediction": (proba >= self.meta.threshold).astype(
                                       np.int64)})
        elif self.task == "multiclass":
            classes = list(self.meta.classes)
            result = pd.DataFrame(out.astype(np.float64),
                                  columns=[f"probability_{c}" for c in classes])
            result["prediction"] = [classes[i] for i in out.argmax(axis=1)]
        else:
            result = pd.DataFrame({"prediction": out.astype(np.float64)})
        result["imputed"] = imputed
        return result
