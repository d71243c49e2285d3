"""Many copies of a spec's network trained at once, in one compiled program.

Cross-validation fits K = folds x repeats networks on K different sets of rows. Fitted
one after another, each pays Keras' per-fit overhead (building, compiling, tracing, a
Python loop per epoch) and a 29-16-1 network keeps the CPU mostly idle. Here the K
networks are one set of stacked weights, ``(K, inputs, units)`` per layer, and each
step trains all of them on a batch of their own rows:

- **independent models**: model k's loss depends only on its own weights, so the
  gradient of the summed loss with respect to them is model k's own gradient; Adam,
  RMSprop, SGD and AdamW act element by element, so each model's optimiser state is its
  own too;
- **its own rows**: every model draws batches of ``batch_size`` rows from its own
  training rows, reshuffled each epoch (padding rows, where one model has fewer rows than
  another, carry zero weight); the loss is the batch mean, as in ``model.fit``;
- **its own early stopping**: each model's validation loss (or AUC, accuracy) is
  computed on its own validation rows every epoch; each has its own patience, best epoch
  and best weights (Keras' rules, :class:`~heartflow.model.stopping.ManyEarlyStopping`),
  and stops on its own (its later updates are discarded); training ends when every model
  has stopped or the epochs run out.

The result is statistically equivalent to separate fits, not bit-identical: initial
weights and batch orders come from different random draws (a test compares per-fold
metrics against sequential fits on the same folds).

A run with cross-validation trains its own network in the same program, as one more model
with its own rows, input width and seed (:func:`heartflow.evaluation.cv.fit_with_folds`).

The seeds of a sweep train together the same way (``seeds=``): the K models share the
rows, and model k draws its initial weights and batch order from its own seed only, so
its result does not depend on which other seeds train beside it (dropout masks aside).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heartflow.data.batches import class_counts, class_weight_map, sample_weights, target_array
from heartflow.model.builder import build_model, count_parameters
from heartflow.model.devices import device_for
from heartflow.model.stopping import ManyEarlyStopping
from heartflow.model.training import TrainResult, make_optimizer
from heartflow.spec.schema import Spec

MAX_STACKED_VALUES = 150_000_000  # K x rows x inputs above this: fit one model at a time


@dataclass
class TogetherResult:
    """Each model's output for every row, and its training facts."""

    outputs: np.ndarray  # (K, rows, units)
    epochs_run: list[int]
    best_epochs: list[int | None]
    seconds: float
    weights: list[list[np.ndarray]] = field(default_factory=list)  # per model, Keras order
    histories: list[dict[str, list[float]]] = field(default_factory=list)  # per model
    widths: list[int] = field(default_factory=list)  # per model: its own input width

    def keras_model(self, spec: Spec, m: int):
        """Model m as the spec's own Keras network (:func:`build_model`), ready to save
        (a model narrower than the stacked inputs keeps its own first rows of weights)."""
        weights = list(self.weights[m])
        width = self.widths[m] if self.widths else weights[0].shape[0]
        weights[0] = weights[0][:width]
        model = build_model(spec, width)
        model.set_weights(weights)
        return model


def fits_together(models: int, rows: int, width: int) -> bool:
    """Whether K models' inputs fit in memory as one stacked array."""
    return models * rows * width <= MAX_STACKED_VALUES


def _activation(name: str):
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    # lazy: registers Keras activations (imports Keras)
    from heartflow.model.activations import resolve

    return keras.activations.get(resolve(name))


def _loss_fn(name: str):
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    return keras.losses.huber if name == "huber" else keras.losses.get(name)


def train_metric_names(task: str) -> tuple[str, ...]:
    """The training metrics Keras' fit reports for a task (``heartflow.model.training``)."""
    return {"binary": ("accuracy",), "multiclass": ("accuracy",)}.get(task, ("rmse", "mae"))


def _batch_plan(train_rows: list[np.ndarray], batch_size: int,
                rngs: list[np.random.Generator]) -> tuple[np.ndarray, np.ndarray, int]:
    """(indices (steps, K, B), valid mask (steps, K, B), steps) for one epoch; each model
    shuffles its own rows with its own generator."""
    k = len(train_rows)
    steps = max(math.ceil(len(r) / batch_size) for r in train_rows)
    index = np.zeros((k, steps * batch_size), dtype=np.int32)
    valid = np.zeros((k, steps * batch_size), dtype=np.float32)
    for m, rows in enumerate(train_rows):
        order = rngs[m].permutation(rows)
        index[m, :len(order)] = order
        valid[m, :len(order)] = 1.0
    shape = (k, steps, batch_size)
    return (index.reshape(shape).transpose(1, 0, 2), valid.reshape(shape).transpose(1, 0, 2),
            steps)


def _row_weights(spec: Spec, y: np.ndarray, train_rows: list[np.ndarray], rows: int
                 ) -> np.ndarray:
    """(K, rows) weights: each model's class weights from its own training rows."""
    row_weight = np.ones((len(train_rows), rows), dtype=np.float32)
    if spec.task != "regression":
        for m, own in enumerate(train_rows):
            weights = class_weight_map(spec.train.class_weight, class_counts(y[own]))
            if weights is not None:
                row_weight[m] = sample_weights(y, weights)
    return row_weight


@dataclass
class _Programs:
    """The stacked network's variables and its compiled programs."""

    variables: list
    # (index, valid) -> (K,) summed training loss of the epoch, (K, metrics + 1) weighted
    # sums of the training metrics then of the weights, (K,) loss on each model's
    # validation rows and (K, rows, units) outputs for every row, both after the epoch
    train_epoch: Callable
    predict: Callable  # () -> (K, rows, units) outputs for every row
    unpack: Callable  # the variables' (K, all weights) -> each layer's kernel, bias (K, ...)


def _compile(spec: Spec, x: np.ndarray, y_out: np.ndarray, row_weight: np.ndarray,
             val_rows: list[np.ndarray], seeds: list[int | None] | None,
             widths: list[int] | None = None, train_metrics: bool = False) -> _Programs:
    """K stacked copies of the spec's network, its optimiser and its compiled programs.

    A model with a seed draws its initial kernels from that seed alone, for its own input
    width (``widths``; the rows of the stacked inputs beyond it are zeros, and so are its
    kernel's rows for them); the others draw in turn after ``train.seed``, for the widest
    of their own widths. With ``train_metrics`` an epoch also sums each model's training
    metrics, as Keras' fit reports them (:func:`train_metric_names`)."""
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras
    import tensorflow as tf

    t = spec.train
    k, n, width = x.shape
    specs = [(h.units, h.activation, h.initializer, h.dropout, h.l2) for h in spec.model.hidden]
    out = spec.model.output
    specs.append((out.units, out.activation, out.initializer, 0.0, 0.0))
    fan_ins = [width] + [units for units, *_ in specs[:-1]]
    initial: dict[int, list[np.ndarray]] = {}
    for m, seed in enumerate(seeds or []):
        if seed is not None:
            own = widths[m] if widths else width
            kernels = _initial_kernels(specs, [own, *fan_ins[1:]], seed)
            kernels[0] = np.pad(kernels[0], ((0, width - own), (0, 0)))
            initial[m] = kernels
    unseeded = [widths[m] for m in range(k) if m not in initial] if widths else []
    shared = max(unseeded, default=width)  # the others' fan-in
    keras.utils.set_random_seed(t.seed)
    starts = []  # each layer's kernel (K, inputs, units) and bias (K, 1, units)
    layers = []  # (activation, dropout, l2)
    for i, (units, activation, initializer, dropout, l2) in enumerate(specs):
        init = keras.initializers.get(initializer)
        fan_in = shared if i == 0 else fan_ins[i]
        kernels = [initial[m][i] if m in initial else
                   np.pad(np.asarray(init((fan_in, units))), ((0, fan_ins[i] - fan_in), (0, 0)))
                   for m in range(k)]
        starts += [np.stack(kernels).astype(np.float32), np.zeros((k, 1, units), np.float32)]
        layers.append((_activation(activation), dropout, l2))
    # All of a model's weights in one row of one variable: the optimiser (element by
    # element, so the same arithmetic) updates one tensor a step instead of one per layer.
    shapes = [w.shape[1:] for w in starts]
    ends = np.cumsum([int(np.prod(shape)) for shape in shapes]).tolist()
    flat = keras.Variable(np.concatenate([w.reshape(k, -1) for w in starts], axis=1))
    variables = [flat]

    def unpack(weights):
        """(K, all weights) -> each layer's kernel and bias, (K, ...) each, Keras' order."""
        pieces = zip(shapes, [0, *ends[:-1]], ends, strict=True)
        if isinstance(weights, np.ndarray):
            return [weights[:, a:b].reshape(k, *shape) for shape, a, b in pieces]
        return [tf.reshape(weights[:, a:b], (k, *shape)) for shape, a, b in pieces]

    optimizer = make_optimizer(t)
    optimizer.build(variables)
    loss_fn = _loss_fn(t.loss)
    x_all = tf.constant(x.astype(np.float32))
    y_all = tf.constant(np.broadcast_to(y_out, (k, n, y_out.shape[1])).astype(np.float32))
    w_all = tf.constant(row_weight)
    dropout_seed = keras.random.SeedGenerator(t.seed)

    def forward(inputs, weights, training: bool):
        h = inputs
        for i, (activation, dropout, _l2) in enumerate(layers):
            h = activation(tf.einsum("kbi,kio->kbo", h, weights[2 * i]) + weights[2 * i + 1])
            if training and dropout:
                h = keras.random.dropout(h, dropout, seed=dropout_seed)
        return h

    def penalty(weights):
        total = tf.zeros((k,))
        for i, (_act, _dropout, l2) in enumerate(layers):
            if l2:
                total += l2 * tf.reduce_sum(tf.square(weights[2 * i]), axis=[1, 2])
        return total

    names = train_metric_names(spec.task) if train_metrics else ()

    def metric_sums(yb, pred, wb):  # (K, metrics): weighted sums over the batch's rows
        if spec.task == "regression":
            err = pred - yb
            rows = [tf.reduce_mean(tf.square(err), -1), tf.reduce_mean(tf.abs(err), -1)]
        elif spec.task == "multiclass":
            rows = [tf.cast(tf.equal(tf.argmax(yb, -1), tf.argmax(pred, -1)), tf.float32)]
        else:  # keras.metrics.BinaryAccuracy (threshold 0.5)
            rows = [tf.reduce_mean(tf.cast(tf.equal(yb, tf.cast(pred > 0.5, yb.dtype)),
                                           tf.float32), -1)]
        return tf.stack([tf.reduce_sum(r * wb, axis=1) for r in rows], axis=1)

    val_weight = np.zeros((k, n), dtype=np.float32)
    for m, rows in enumerate(val_rows):
        val_weight[m, rows] = 1.0
    val_all = tf.constant(val_weight)

    def step(s, totals, sums, index, valid):
        rows, mask = index[s], valid[s]
        xb = tf.gather(x_all, rows, batch_dims=1)
        yb = tf.gather(y_all, rows, batch_dims=1)
        wb = tf.gather(w_all, rows, batch_dims=1) * mask
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        with tf.GradientTape() as tape:
            weights = unpack(flat)
            pred = forward(xb, weights, True)
            per_row = loss_fn(yb, pred)  # (K, B)
            per_model = tf.reduce_sum(per_row * wb, axis=1) / count + penalty(weights)
            total = tf.reduce_sum(per_model)
        grads = tape.gradient(total, variables)
        optimizer.apply(grads, variables)
        totals += per_model * count
        if names:
            sums += tf.concat([metric_sums(yb, pred, wb),
                               tf.reduce_sum(wb, axis=1, keepdims=True)], axis=1)
        return s + 1, totals, sums, index, valid

    # Traced without AutoGraph (a plain while loop; Keras' own code needs no conversion),
    # which halves the tracing each new network pays.
    @tf.function(reduce_retracing=True, autograph=False)
    def epoch(index, valid):
        start = (tf.constant(0), tf.zeros((k,)), tf.zeros((k, len(names) + 1)), index, valid)
        _s, totals, sums, _i, _v = tf.while_loop(  # sums: the metrics', then the weights
            lambda s, *_: s < tf.shape(index)[0], step, start)
        weights = unpack(flat)
        outputs = forward(x_all, weights, False)  # after the epoch: every row, to validate
        per_row = loss_fn(y_all, outputs)  # (K, rows)
        val_count = tf.maximum(tf.reduce_sum(val_all, axis=1), 1.0)
        val_loss = tf.reduce_sum(per_row * val_all, axis=1) / val_count + penalty(weights)
        return totals, sums, val_loss, outputs

    @tf.function(reduce_retracing=True, autograph=False)
    def predict_all():
        return forward(x_all, unpack(flat), False)

    def train_epoch(index: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(v.numpy() for v in epoch(tf.constant(index), tf.constant(valid)))

    return _Programs(variables, train_epoch, lambda: predict_all().numpy(), unpack)


class _Kept:
    """The weights each model ends with once they are fixed: its best, or those at its stop
    (training goes on for all K models, so a stopped model's later updates are discarded)."""

    def __init__(self, models: int):
        self.fixed = np.zeros(models, dtype=bool)
        self.weights: list[np.ndarray] = []

    def take(self, models: np.ndarray, variables: list) -> None:
        """Fix these models' current weights."""
        if not models.any():
            return
        now = [np.array(v.numpy()) for v in variables]
        if not self.weights:
            self.weights = now
        for kept, current in zip(self.weights, now, strict=True):
            kept[models] = current[models]
        self.fixed |= models

    def restore(self, variables: list) -> list[np.ndarray]:
        """Set the variables to each model's final weights, and return them."""
        final = [np.array(v.numpy()) for v in variables]
        for w, kept in zip(final, self.weights, strict=False):  # none, if none was fixed
            w[self.fixed] = kept[self.fixed]
        for v, w in zip(variables, final, strict=True):
            v.assign(w)
        return final


def fit_together(spec: Spec, x: np.ndarray, y: np.ndarray, train_rows: list[np.ndarray],
                 val_rows: list[np.ndarray], validation_metrics=None,
                 seeds: list[int | None] | None = None, widths: list[int] | None = None,
                 report: int | None = None,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None
                 ) -> TogetherResult:
    """Train one network per entry of ``train_rows`` on ``x[k]`` (K, rows, inputs).

    ``y`` holds the labels of all rows; ``val_rows[k]`` are model k's validation rows
    (may be empty: then early stopping watches the training loss).
    ``validation_metrics(labels, output)`` gives ``{"auc": ..., "accuracy": ...}``.
    ``seeds[k]``, if given (not None), alone decides model k's initial weights and batch
    order (otherwise ``train.seed`` and k do); ``widths[k]`` is model k's own input width
    (its inputs are the first columns of ``x[k]``, zeros beyond).
    Model ``report``'s history is the one Keras' fit gives (training metrics, validation
    metrics every epoch), and ``on_epoch(epoch, logs)`` sees each of its epochs.
    """
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    t, (k, n, _width) = spec.train, x.shape
    keras.utils.set_random_seed(t.seed)
    rngs = [np.random.default_rng(seeds[m] if seeds and seeds[m] is not None else [t.seed, m])
            for m in range(k)]
    y_out = target_array(np.asarray(y), spec)  # (rows, units)
    row_weight = _row_weights(spec, np.asarray(y), train_rows, n)
    net = _compile(spec, x, y_out, row_weight, val_rows, seeds, widths,
                   train_metrics=report is not None)
    names = train_metric_names(spec.task)
    has_val = all(len(r) for r in val_rows)
    es = t.early_stopping
    stopper = None if es is None else ManyEarlyStopping(
        k, es.monitor if has_val else es.monitor.removeprefix("val_"),  # as fit_dataset
        es.min_delta, es.patience, restore_best_weights=es.restore_best)
    kept = _Kept(k)
    epochs_run = np.zeros(k, dtype=np.int64)
    histories: list[dict[str, list[float]]] = [{"loss": []} for _ in range(k)]
    train_sizes = np.array([len(r) for r in train_rows], dtype=np.float64)
    start = time.perf_counter()
    for e in range(1, t.epochs + 1):
        running = np.ones(k, dtype=bool) if stopper is None else ~stopper.stopped
        index, valid, _steps = _batch_plan(train_rows, t.batch_size, rngs)
        totals, sums, val_loss, outputs = net.train_epoch(index, valid)
        logs = {"loss": totals / train_sizes}
        if has_val:
            logs["val_loss"] = val_loss
        if stopper is not None and stopper.monitor not in logs:  # AUC or accuracy
            logs[stopper.monitor] = _validation_scores(
                stopper.monitor.removeprefix("val_"), outputs, y_out, val_rows,
                validation_metrics)
        epochs_run[running] = e
        for m in np.flatnonzero(running):
            if m == report:
                own = _report_logs(names, sums[m], {key: v[m] for key, v in logs.items()},
                                   val_rows[m], y_out, outputs, m, validation_metrics)
                for name, value in own.items():
                    histories[m].setdefault(name, []).append(value)
                if on_epoch is not None:
                    on_epoch(e, own)
                continue
            for name, values in logs.items():
                histories[m].setdefault(name, []).append(float(values[m]))
        if stopper is not None:
            improved = stopper.on_epoch_end(e - 1, logs[stopper.monitor])
            kept.take(stopper.to_keep(improved), net.variables)
            if stopper.stopped.all():
                break
    final = net.unpack(kept.restore(net.variables)[0])
    per_model = [[w[m].reshape(-1) if i % 2 else w[m] for i, w in enumerate(final)]
                 for m in range(k)]  # biases (K, 1, units) -> (units,)
    best_epochs = [int(b) + 1 for b in stopper.best_epoch] if stopper is not None else [None] * k
    return TogetherResult(net.predict(), epochs_run.tolist(), best_epochs,
                          time.perf_counter() - start, per_model, histories,
                          list(widths) if widths else [])


def _report_logs(names: tuple[str, ...], sums: np.ndarray, joint: dict[str, float],
                 val_rows: np.ndarray, y_out: np.ndarray, outputs: np.ndarray, m: int,
                 validation_metrics) -> dict[str, float]:
    """The reported model's epoch as Keras' fit logs it, in its order: loss, training
    metrics, val_loss, validation metrics (then any other value early stopping watched)."""
    logs = {"loss": float(joint["loss"])}
    weight = max(float(sums[-1]), 1e-12)
    for i, name in enumerate(names):
        value = float(sums[i]) / weight
        logs[name] = math.sqrt(value) if name == "rmse" else value
    if "val_loss" in joint:
        logs["val_loss"] = float(joint["val_loss"])
        if validation_metrics is not None:
            scores = validation_metrics(y_out[val_rows], outputs[m][val_rows])
            logs.update({f"val_{key}": float(v) for key, v in scores.items()})
    for name, value in joint.items():
        logs.setdefault(name, float(value))
    return logs


def fit_seeds(spec: Spec, seeds: list[int], x_train: np.ndarray, y_train: np.ndarray,
              x_val: np.ndarray | None, y_val: np.ndarray | None,
              validation_metrics=None) -> list[TrainResult]:
    """The spec's network trained once per seed, all at once on the same rows.

    Each result is what :func:`heartflow.model.training.train_model` gives for that seed
    (a Keras model, history, epochs run, best epoch), up to the random draws;
    ``seconds`` is the time of the joint fit.
    """
    n_train = len(x_train)
    x = x_train if x_val is None else np.concatenate([x_train, x_val])
    y = y_train if y_val is None else np.concatenate([y_train, y_val])
    val = np.arange(n_train, len(x))
    joint = fit_together(spec, np.broadcast_to(x, (len(seeds), *x.shape)), y,
                         [np.arange(n_train)] * len(seeds), [val] * len(seeds),
                         validation_metrics, seeds=list(seeds))
    return [TrainResult(model=joint.keras_model(spec, m), history=joint.histories[m],
                        epochs_run=joint.epochs_run[m], best_epoch=joint.best_epochs[m],
                        seconds=joint.seconds, epochs_planned=spec.train.epochs)
            for m in range(len(seeds))]


def _initial_kernels(specs: list[tuple], fan_ins: list[int], seed: int) -> list[np.ndarray]:
    """One model's initial kernels, drawn from its own seed only (an initializer made
    right after ``set_random_seed`` draws its seed from it)."""
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    keras.utils.set_random_seed(seed)
    return [np.asarray(keras.initializers.get(initializer)((fan_in, units)))
            for (units, _act, initializer, _d, _l2), fan_in in zip(specs, fan_ins, strict=True)]


def _validation_scores(name: str, outputs: np.ndarray, y_out: np.ndarray,
                       val_rows: list[np.ndarray], validation_metrics) -> np.ndarray:
    """Each model's validation AUC or accuracy (``validation_metrics`` of its own rows)."""
    if validation_metrics is None:
        return np.full(len(val_rows), np.nan)
    return np.array([validation_metrics(y_out[rows], outputs[m][rows])[name]
                     for m, rows in enumerate(val_rows)])


def seeds_train_together(spec: Spec, data: Any, seeds: int) -> bool:
    """Whether a sweep's seeds can share one program: in-memory rows that fit K times,
    full precision, and a CPU choice (a GPU takes one trial at a time)."""
    if seeds < 2 or data.streaming or spec.train.mixed_precision:
        return False
    return (device_for(spec.train.device, count_parameters(spec, data.width)) == "cpu"
            and fits_together(seeds, data.rows, data.width))
