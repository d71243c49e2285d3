"""The scorer: a fitted encoder and a Keras network, raw records in, predictions out.

It is what the logged MLflow model wraps (:mod:`heartflow.tracking.logged_model`), what
``heartflow predict`` and ``hf.load_model(uri).predict(df)`` use, and what the
promotion gate re-scores the champion with. Loading reads JSON and a ``.keras`` file in
Keras' ``safe_mode``; nothing is unpickled.

**Scoring without TensorFlow.** A logged model also carries its network exported to ONNX
(:func:`export_onnx`, Keras' own ``model.export(format="onnx")``), checked against the
Keras network on probe inputs before it is kept. A loaded scorer with that graph computes
its outputs with onnxruntime (imported in about 0.1 s, where TensorFlow takes seconds) and
loads the Keras network only when something needs it (updating, re-logging). A model
without the graph (logged before heartflow exported one, or one whose export failed) is
scored by Keras, and :attr:`Scorer.runtime_note` says so.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import warnings
from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.dataset import prepare_features
from heartflow.data.encoder import TabularEncoder
from heartflow.errors import DataError
from heartflow.model.meta import ModelMeta
from heartflow.model.recalibration import apply_recalibration

ONNX_TOLERANCE = 1e-5  # largest difference from the Keras network allowed on probe inputs
RUNTIME_SWITCH = "HEARTFLOW_SCORING_RUNTIME"  # "keras": ignore a model's ONNX graph
ONNX_CHUNK = 65_536  # rows per onnxruntime call: bounded memory on large batches


class OnnxNetwork:
    """A network exported to ONNX, run by onnxruntime on the CPU: encoded matrix in, the
    network's output (float32, same shape as the Keras model's) out."""

    def __init__(self, model: str | bytes) -> None:
        import onnxruntime as ort  # lazy: 0.1 s, only when a model with a graph is loaded

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a small network: threads cost more than they give
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) <= ONNX_CHUNK:
            return self.session.run(None, {self.input: x})[0]
        return np.concatenate([self.session.run(None, {self.input: x[i:i + ONNX_CHUNK]})[0]
                               for i in range(0, len(x), ONNX_CHUNK)])


def export_onnx(network: Any, path: str, seed: int = 0) -> str | None:
    """Export a Keras ``network`` to an ONNX file at ``path`` (Keras' ``model.export``,
    tf2onnx underneath) and check it: onnxruntime's outputs on 256 probe rows must equal
    the network's to :data:`ONNX_TOLERANCE`. Returns None when the graph is kept, else why
    it is not (the file is then removed): an operation the converter does not support (a
    plugin activation, ``gelu``'s erfc), a graph onnxruntime refuses, or different outputs."""
    width = int(network.input_shape[-1])
    probe = np.random.default_rng(seed).normal(size=(256, width)).astype(np.float32)
    probe[:128] = probe[:128] > 0  # one-hot-like rows beside standardised ones
    try:
        expected = np.asarray(network(probe, training=False))  # also builds a loaded model
        logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # the reason is returned
        with warnings.catch_warnings():  # tf2onnx's NumPy deprecation notes on import
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            network.export(path, format="onnx", verbose=False)
        got = OnnxNetwork(path)(probe)
    except Exception as exc:  # the converter's and onnxruntime's errors are many and varied
        if os.path.exists(path):
            os.remove(path)
        text = " ".join(str(exc).split())[:300]
        return f"the ONNX export or its check failed: {type(exc).__name__}: {text}"
    diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.shape == \
        expected.shape else np.inf
    if not diff <= ONNX_TOLERANCE:
        os.remove(path)
        return (f"the ONNX graph's outputs differ from the Keras network's by {diff:.3g} on "
                f"probe rows (allowed {ONNX_TOLERANCE:g})")
    return None


def network_output(network: Any, x: np.ndarray) -> np.ndarray:
    """The network's output for an encoded matrix (a direct call for small inputs)."""
    if isinstance(network, OnnxNetwork):
        return network(x)
    if len(x) <= 4096:
        return np.asarray(network(x, training=False))
    return np.asarray(network.predict(x, batch_size=4096, verbose=0))


def missing_columns(frame: pd.DataFrame, meta: ModelMeta) -> list[str]:
    """Feature columns the model needs that ``frame`` lacks."""
    return [c for c in meta.columns if c not in frame.columns]


class Scorer:
    """Raw DataFrame in, predictions out. ``network`` is the Keras model; a scorer loaded
    with an ONNX graph (``onnx``) computes outputs with it and loads the Keras network
    (``keras_file``, the ``.keras`` file's bytes) only when :attr:`network` is asked for."""

    def __init__(self, encoder: TabularEncoder, network: Any, meta: ModelMeta, *,
                 onnx: OnnxNetwork | None = None, keras_file: bytes | None = None,
                 runtime_note: str = "") -> None:
        self.encoder, self.meta, self.onnx = encoder, meta, onnx
        self._network, self._keras_file = network, keras_file
        self.runtime_note = runtime_note

    @property
    def network(self) -> Any:
        """The Keras network (loaded now, in safe mode, when the scorer was loaded with an
        ONNX graph and nothing asked for it before)."""
        if self._network is None and self._keras_file is not None:
            self._network = _load_keras(self._keras_file, self.meta)
        return self._network

    @property
    def runtime(self) -> str:
        """What computes the network's outputs: ``onnxruntime`` or ``keras``."""
        return "onnxruntime" if self.onnx is not None else "keras"

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
    def load(cls, keras_path: str, encoder_path: str, meta_path: str,
             onnx_path: str | None = None, why_keras: str = "") -> Scorer:
        """Load from artifact files (safe mode, no pickle). With ``onnx_path`` the outputs
        come from onnxruntime and neither TensorFlow nor the plugins are imported until the
        Keras network is needed; without it the Keras network is loaded now, and
        ``why_keras`` (or a default) becomes the :attr:`runtime_note`."""
        with open(meta_path, encoding="utf-8") as fh:
            meta = ModelMeta.from_json(fh.read())
        encoder = TabularEncoder.load(encoder_path)
        with open(keras_path, "rb") as fh:
            keras_file = fh.read()
        if onnx_path and os.environ.get(RUNTIME_SWITCH, "").strip().lower() == "keras":
            onnx_path, why_keras = None, f"{RUNTIME_SWITCH}=keras"
        if onnx_path:
            try:
                onnx = OnnxNetwork(onnx_path)
            except Exception as exc:  # no onnxruntime, or one too old for the graph's opset
                why_keras = (f"its ONNX graph cannot be loaded here ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})")
            else:
                return cls(encoder, None, meta, onnx=onnx, keras_file=keras_file)
        why = why_keras or "it holds no ONNX graph (logged before heartflow exported one)"
        note = f"this model is scored through Keras and TensorFlow (slower start): {why}"
        return cls(encoder, _load_keras(keras_file, meta), meta, runtime_note=note)

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
        """The network's output for typed feature columns (probabilities or values), encoded
        and scored :data:`ONNX_CHUNK` rows at a time (the encoding of a large batch is never
        held whole)."""
        network = self.onnx or self.network
        out = np.concatenate([
            network_output(network, self.encoder.transform(typed.iloc[i:i + ONNX_CHUNK]))
            for i in range(0, len(typed), ONNX_CHUNK)]) if len(typed) > ONNX_CHUNK else \
            network_output(network, self.encoder.transform(typed))
        if self.task == "multiclass":
            return out
        if self.meta.recalibration:  # a site's recalibration (heartflow recalibrate)
            return apply_recalibration(out.reshape(-1), self.meta.recalibration)
        return out.reshape(-1)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Probabilities and predicted class (or the predicted value for regression), and how
        many of each row's feature values were missing and imputed by the training rule."""
        return self.predict_typed(self.typed(frame))  # idempotent on typed frames

    def predict_typed(self, typed: pd.DataFrame) -> pd.DataFrame:
        """:meth:`predict` of feature columns typed already (by :meth:`typed`, or by
        :func:`heartflow.data.batches.typed_chunks` for a large file)."""
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


def _load_keras(keras_file: bytes, meta: ModelMeta) -> Any:
    """The Keras network of a ``.keras`` file's bytes (safe mode), its plugins imported
    first."""
    from heartflow.runtime.quiet_import import import_tensorflow  # lazy: TensorFlow

    import_tensorflow()
    import keras  # lazy: TensorFlow's 4 s import, only when the Keras network is needed

    # lazy: registers Keras activations (imports Keras)
    import heartflow.model.activations  # noqa: F401  (registers custom activations; Keras)

    for module in meta.plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise DataError(f"this model uses activations from the plugin module "
                            f"{module!r}, which cannot be imported ({exc}); install it or "
                            "put it on PYTHONPATH") from None
    with tempfile.TemporaryDirectory(prefix="heartflow-keras-") as tmp:
        path = os.path.join(tmp, "network.keras")
        with open(path, "wb") as fh:
            fh.write(keras_file)
        return keras.saving.load_model(path, compile=False, safe_mode=True)
