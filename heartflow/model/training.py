"""Fit a compiled network on a tf.data pipeline of batches, efficiently and reproducibly.

In-memory and streamed data differ only in where the batches come from
(:mod:`heartflow.data.prepare`). One compiled call runs a whole epoch
(``steps_per_execution``); validation is one compiled forward pass per epoch. Seeds
make a run repeatable on the same machine.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heartflow.data.batches import (
    array_batches,
    class_counts,
    class_weight_map,
    sample_weights,
    target_array,
)
from heartflow.errors import TrainingError
from heartflow.model.builder import build_model, count_parameters
from heartflow.model.devices import device_for, device_scope
from heartflow.model.progress import EpochReporter
from heartflow.spec.schema import Spec, TrainSpec
from heartflow.spec.vocabulary import monitor_mode

# (labels in the output's shape, network output) -> {"auc": ..., "accuracy": ...}
EpochMetrics = Callable[[np.ndarray, np.ndarray], dict[str, float]]


@dataclass
class TrainResult:
    """What training produced."""

    model: object
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int | None = None
    seconds: float = 0.0
    epochs_planned: int = 0

    @property
    def stopped_early(self) -> bool:
        """True when early stopping ended training before the last planned epoch."""
        return 0 < self.epochs_run < self.epochs_planned


def make_optimizer(train: TrainSpec):
    """The Keras optimizer the spec names."""
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    opt = train.optimizer
    if opt.name == "sgd":
        return keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum)
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=opt.learning_rate)
    if opt.name == "adamw":
        return keras.optimizers.AdamW(learning_rate=opt.learning_rate,
                                      weight_decay=opt.weight_decay or 0.004)
    return keras.optimizers.RMSprop(learning_rate=opt.learning_rate)


def _metrics(task: str) -> list:
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    if task == "binary":
        # Training-set AUC would cost ~30% of a small model's fit time; the validation
        # callback reports the exact val_auc each epoch instead.
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    if task == "multiclass":
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]
    return [keras.metrics.RootMeanSquaredError(name="rmse"),
            keras.metrics.MeanAbsoluteError(name="mae")]


def _validation_callback(model, x_val: np.ndarray, y_val: np.ndarray, loss,
                         validation_metrics: EpochMetrics | None):
    """Validation metrics computed at each epoch end by one compiled forward pass.

    Keras' own validation (``validation_data=``) runs a full evaluation loop per epoch,
    which for small data costs as much as the training epoch itself. This callback
    adds the same ``val_*`` entries to the epoch logs, before early stopping reads them:
    ``val_loss``, and whatever ``validation_metrics`` (from the evaluation layer, e.g.
    :func:`heartflow.evaluation.metrics.epoch_metrics`) computes from labels and output.
    """
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras
    import tensorflow as tf

    x = tf.constant(x_val)
    y = tf.constant(y_val)
    loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    forward = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)

    class Validation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            pred = forward(x)
            value = float(keras.ops.mean(loss_fn(y, pred)))
            if model.losses:
                value += float(keras.ops.sum(keras.ops.stack(model.losses)))
            logs["val_loss"] = value
            if validation_metrics is not None:
                scores = validation_metrics(np.asarray(y_val), np.asarray(pred))
                logs.update({f"val_{k}": v for k, v in scores.items()})

    return Validation()


def check_finite(losses: list[float], train: TrainSpec) -> None:
    """A TrainingError when the training loss became NaN or infinite (the network diverged):
    such a network's outputs mean nothing, so the run must fail rather than be scored."""
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is None:
        return
    opt = train.optimizer
    raise TrainingError(
        f"training diverged: the loss became {losses[bad]} in epoch {bad + 1} "
        f"(optimizer {opt.name}, learning_rate {opt.learning_rate}). Nothing was scored or "
        "registered. Try a lower learning rate (e.g. 0.001), Adam instead of SGD, or "
        "standardised inputs")


def train_prepared(spec: Spec, data: Any, verbose: bool,
                   validation_metrics: EpochMetrics | None = None) -> TrainResult:
    """Fit the spec's network on prepared data (in memory or streamed), on the device its
    size calls for, with per-epoch progress on the terminal when ``verbose``."""
    import keras  # lazy: TensorFlow

    keras.utils.set_random_seed(spec.train.seed)  # before the batches: their shuffle is seeded
    weights = (class_weight_map(spec.train.class_weight, data.train_class_counts())
               if spec.task != "regression" else None)
    batches, steps = data.train_batches(spec, weights)
    x_val, y_val = data.validation()
    reporter = EpochReporter(spec.train.epochs, enabled=verbose)
    try:
        with device_scope(device_for(spec.train.device, count_parameters(spec, data.width))):
            return fit_dataset(spec, data.width, batches, steps, x_val, y_val, reporter,
                               validation_metrics)
    finally:
        reporter.close()


def train_model(spec: Spec, input_width: int, x_train: np.ndarray, y_train: np.ndarray,
                x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                validation_metrics: EpochMetrics | None = None) -> TrainResult:
    """Build, compile and fit the spec's network; returns the (best) model and history."""
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    t = spec.train
    keras.utils.set_random_seed(t.seed)
    weights = None
    if spec.task != "regression":
        weights = class_weight_map(t.class_weight, class_counts(y_train))
    train_ds = array_batches(x_train, target_array(y_train, spec),
                             sample_weights(y_train, weights), t.batch_size, t.seed)
    steps = max(1, math.ceil(len(x_train) / t.batch_size))
    return fit_dataset(spec, input_width, train_ds, steps, x_val, y_val, on_epoch,
                       validation_metrics)


def fit_dataset(spec: Spec, input_width: int, train_ds, steps: int,
                x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                validation_metrics: EpochMetrics | None = None) -> TrainResult:
    """Build, compile and fit on a tf.data pipeline of (x, y[, weight]) batches.

    ``y_val`` holds plain labels (as the data gives them); the mixed-precision policy,
    if the spec asks for it, holds for this fit only.
    """
    import keras  # lazy: TensorFlow's 4 s import, only when training

    t = spec.train
    keras.utils.set_random_seed(t.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if t.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(spec, input_width)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    if y_val is not None:
        y_val = target_array(np.asarray(y_val), spec)
    loss = {"huber": keras.losses.Huber()}.get(t.loss, t.loss)
    model.compile(optimizer=make_optimizer(t), loss=loss, metrics=_metrics(spec.task),
                  steps_per_execution=min(steps, 1000), jit_compile=False)
    has_val = x_val is not None and len(x_val) > 0
    callbacks: list = []
    if has_val:
        callbacks.append(_validation_callback(model, x_val, y_val, loss, validation_metrics))
    es = t.early_stopping
    stopper = None
    if es is not None:
        monitor = es.monitor if has_val else es.monitor.removeprefix("val_")
        mode = monitor_mode(monitor)
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=es.patience,
                                                min_delta=es.min_delta, mode=mode,
                                                restore_best_weights=es.restore_best)
        callbacks.append(stopper)
    callbacks.append(keras.callbacks.TerminateOnNaN())
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, dict(logs or {}))))
    start = time.perf_counter()
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    history = model.fit(train_ds, epochs=t.epochs, verbose=0, shuffle=False,
                        callbacks=callbacks)
    seconds = time.perf_counter() - start
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    check_finite(hist.get("loss", []), t)
    epochs_run = len(hist.get("loss", []))
    best = None
    if stopper is not None and stopper.best_weights is not None and epochs_run:
        series = hist.get(stopper.monitor, [])
        if series:
            best = int(np.argmax(series) if stopper.mode == "max" else np.argmin(series)) + 1
    return TrainResult(model=model, history=hist, epochs_run=epochs_run, best_epoch=best,
                       seconds=seconds, epochs_planned=t.epochs)
