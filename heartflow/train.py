"""Fit a compiled network on encoded arrays, efficiently and reproducibly.

Keras spends most of a small model's time in per-step overhead, so the input is
a cached ``tf.data`` pipeline and one compiled call runs a whole epoch
(``steps_per_execution``). Seeds make a run repeatable on the same machine.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from heartflow.spec.models import Spec, TrainSpec


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


def sample_weights(y: np.ndarray, class_weight: object) -> np.ndarray | None:
    """Per-row weights from ``train.class_weight`` (None, 'balanced' or {class: weight})."""
    if class_weight is None:
        return None
    labels = y.astype(np.int64)
    if class_weight == "balanced":
        classes, counts = np.unique(labels, return_counts=True)
        weights = {int(c): len(labels) / (len(classes) * n)
                   for c, n in zip(classes, counts, strict=True)}
    else:
        weights = {int(k): float(v) for k, v in dict(class_weight).items()}
    return np.array([weights.get(int(c), 1.0) for c in labels], dtype=np.float32)


def make_optimizer(train: TrainSpec):
    """The Keras optimizer the spec names."""
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
    import keras

    if task == "binary":
        # Training-set AUC would cost ~30% of a small model's fit time; the validation
        # callback reports the exact val_auc each epoch instead.
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    if task == "multiclass":
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]
    return [keras.metrics.RootMeanSquaredError(name="rmse"),
            keras.metrics.MeanAbsoluteError(name="mae")]


def _targets(y: np.ndarray, spec: Spec) -> np.ndarray:
    if spec.task == "multiclass":
        return np.eye(spec.model.output.units, dtype=np.float32)[y.astype(np.int64)]
    return y.astype(np.float32).reshape(-1, 1)


def dataset(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None, batch_size: int,
            shuffle_seed: int | None):
    """A cached, shuffled, batched tf.data pipeline over in-memory arrays."""
    import tensorflow as tf

    parts = (x, y) if weights is None else (x, y, weights)
    ds = tf.data.Dataset.from_tensor_slices(parts).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(2).with_options(_serial_options())


def _serial_options():
    """tf.data options for a pipeline over cached in-memory arrays: no thread pool of its own.

    There is nothing to parallelise in slicing cached arrays, and tf.data's autotuner and
    private threads otherwise wake up every step. On its own that costs little, but two
    trainings side by side (sweep workers on a 2-core machine) then spend a third of their
    time waiting for each other's threads; with these options they run at full speed each.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.inject_prefetch = False
    return options


def _validation_callback(model, x_val: np.ndarray, y_val: np.ndarray, task: str, loss):
    """Validation metrics computed at each epoch end by one compiled forward pass.

    Keras' own validation (``validation_data=``) runs a full evaluation loop per epoch,
    which for small data costs as much as the training epoch itself. This callback
    adds the same ``val_*`` entries to the epoch logs, before early stopping reads them.
    """
    import keras
    import tensorflow as tf

    from heartflow import metrics as M

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
            p = np.asarray(pred)
            truth = np.asarray(y_val)
            if task == "binary":
                logs["val_auc"] = M.roc_auc(truth.ravel() > 0.5, p.ravel())
                logs["val_accuracy"] = float(np.mean((p.ravel() >= 0.5) == (truth.ravel() > 0.5)))
            elif task == "multiclass":
                logs["val_accuracy"] = float(np.mean(p.argmax(1) == truth.argmax(1)))
            else:
                err = p.ravel() - truth.ravel()
                logs["val_rmse"] = float(np.sqrt(np.mean(err ** 2)))
                logs["val_mae"] = float(np.mean(np.abs(err)))

    return Validation()


def train_model(spec: Spec, input_width: int, x_train: np.ndarray, y_train: np.ndarray,
                x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Build, compile and fit the spec's network; returns the (best) model and history."""
    import keras

    t = spec.train
    keras.utils.set_random_seed(t.seed)
    train_ds = dataset(x_train, _targets(y_train, spec),
                       sample_weights(y_train, t.class_weight), t.batch_size, t.seed)
    steps = max(1, math.ceil(len(x_train) / t.batch_size))
    return fit_dataset(spec, input_width, train_ds, steps, x_val,
                       None if y_val is None else _targets(y_val, spec), on_epoch)


def fit_dataset(spec: Spec, input_width: int, train_ds, steps: int,
                x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Build, compile and fit on a tf.data pipeline of (x, y[, weight]) batches.

    ``y_val`` is already in the network's target shape.
    """
    import keras

    from heartflow.builder import build_model

    t = spec.train
    keras.utils.set_random_seed(t.seed)
    if t.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    model = build_model(spec, input_width)
    loss = {"huber": keras.losses.Huber()}.get(t.loss, t.loss)
    model.compile(optimizer=make_optimizer(t), loss=loss, metrics=_metrics(spec.task),
                  steps_per_execution=min(steps, 1000), jit_compile=False)
    has_val = x_val is not None and len(x_val) > 0
    callbacks: list = []
    if has_val:
        callbacks.append(_validation_callback(model, x_val, y_val, spec.task, loss))
    es = t.early_stopping
    stopper = None
    if es is not None:
        monitor = es.monitor if has_val else es.monitor.removeprefix("val_")
        mode = "max" if monitor.endswith(("auc", "accuracy")) else "min"
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=es.patience,
                                                min_delta=es.min_delta, mode=mode,
                                                restore_best_weights=es.restore_best)
        callbacks.append(stopper)
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, dict(logs or {}))))
    start = time.perf_counter()
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    history = model.fit(train_ds, epochs=t.epochs, verbose=0, shuffle=False,
                        callbacks=callbacks)
    seconds = time.perf_counter() - start
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    epochs_run = len(hist.get("loss", []))
    best = None
    if stopper is not None and stopper.best_weights is not None and epochs_run:
        series = hist.get(stopper.monitor, [])
        if series:
            best = int(np.argmax(series) if stopper.mode == "max" else np.argmin(series)) + 1
    return TrainResult(model=model, history=hist, epochs_run=epochs_run, best_epoch=best,
                       seconds=seconds, epochs_planned=t.epochs)
