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
  and best weights, and stops on its own (its later updates are discarded); training
  ends when every model has stopped or the epochs run out.

The result is statistically equivalent to separate fits, not bit-identical: initial
weights and batch orders come from different random draws (a test compares per-fold
metrics against sequential fits on the same folds).

The seeds of a sweep train together the same way (``seeds=``): the K models share the
rows, and model k draws its initial weights and batch order from its own seed only, so
its result does not depend on which other seeds train beside it (dropout masks aside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from heartflow.data.batches import class_counts, class_weight_map, sample_weights, target_array
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

    def keras_model(self, spec: Spec, m: int):
        """Model m as the spec's own Keras network (:func:`build_model`), ready to save."""
        from heartflow.model.builder import build_model

        model = build_model(spec, self.weights[m][0].shape[0])
        model.set_weights(self.weights[m])
        return model


def fits_together(models: int, rows: int, width: int) -> bool:
    """Whether K models' inputs fit in memory as one stacked array."""
    return models * rows * width <= MAX_STACKED_VALUES


def _activation(name: str):
    import keras

    from heartflow.model.activations import resolve

    return keras.activations.get(resolve(name))


def _loss_fn(name: str):
    import keras

    return keras.losses.huber if name == "huber" else keras.losses.get(name)


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


def fit_together(spec: Spec, x: np.ndarray, y: np.ndarray, train_rows: list[np.ndarray],
                 val_rows: list[np.ndarray], validation_metrics=None,
                 seeds: list[int] | None = None) -> TogetherResult:
    """Train one network per entry of ``train_rows`` on ``x[k]`` (K, rows, inputs).

    ``y`` holds the labels of all rows; ``val_rows[k]`` are model k's validation rows
    (may be empty: then early stopping watches the training loss).
    ``validation_metrics(labels, output)`` gives ``{"auc": ..., "accuracy": ...}``.
    ``seeds[k]``, if given, alone decides model k's initial weights and batch order
    (otherwise ``train.seed`` and k do).
    """
    import time

    import keras
    import tensorflow as tf

    t, task = spec.train, spec.task
    k, n, width = x.shape
    keras.utils.set_random_seed(t.seed)
    rngs = [np.random.default_rng(seeds[m] if seeds else [t.seed, m]) for m in range(k)]
    y_out = target_array(np.asarray(y), spec)  # (rows, units)
    units_out = y_out.shape[1]
    row_weight = np.ones((k, n), dtype=np.float32)
    if task != "regression":
        for m, rows in enumerate(train_rows):
            weights = class_weight_map(t.class_weight, class_counts(np.asarray(y)[rows]))
            if weights is not None:
                row_weight[m] = sample_weights(np.asarray(y), weights)

    specs = [(h.units, h.activation, h.initializer, h.dropout, h.l2) for h in spec.model.hidden]
    out = spec.model.output
    specs.append((out.units, out.activation, out.initializer, 0.0, 0.0))
    fan_ins = [width] + [units for units, *_ in specs[:-1]]
    initial = [_initial_kernels(specs, fan_ins, seed) for seed in seeds] if seeds else None
    keras.utils.set_random_seed(t.seed)
    layers = []  # (kernel, bias, activation, dropout, l2)
    for i, (units, activation, initializer, dropout, l2) in enumerate(specs):
        init = keras.initializers.get(initializer)
        kernels = ([initial[m][i] for m in range(k)] if initial else
                   [np.asarray(init((fan_ins[i], units))) for _ in range(k)])
        kernel = keras.Variable(np.stack(kernels).astype(np.float32))
        bias = keras.Variable(np.zeros((k, 1, units), dtype=np.float32))
        layers.append((kernel, bias, _activation(activation), dropout, l2))
    variables = [v for layer in layers for v in layer[:2]]
    optimizer = make_optimizer(t)
    optimizer.build(variables)
    loss_fn = _loss_fn(t.loss)
    x_all = tf.constant(x.astype(np.float32))
    y_all = tf.constant(np.broadcast_to(y_out, (k, n, units_out)).astype(np.float32))
    w_all = tf.constant(row_weight)
    dropout_seed = keras.random.SeedGenerator(t.seed)

    def forward(inputs, training: bool):
        h = inputs
        for kernel, bias, activation, dropout, _l2 in layers:
            h = activation(tf.einsum("kbi,kio->kbo", h, kernel) + bias)
            if training and dropout:
                h = keras.random.dropout(h, dropout, seed=dropout_seed)
        return h

    def penalty():
        total = tf.zeros((k,))
        for kernel, _bias, _act, _dropout, l2 in layers:
            if l2:
                total += l2 * tf.reduce_sum(tf.square(kernel), axis=[1, 2])
        return total

    @tf.function(reduce_retracing=True)
    def epoch(index, valid):
        totals = tf.zeros((k,))
        for s in tf.range(tf.shape(index)[0]):
            rows, mask = index[s], valid[s]
            xb = tf.gather(x_all, rows, batch_dims=1)
            yb = tf.gather(y_all, rows, batch_dims=1)
            wb = tf.gather(w_all, rows, batch_dims=1) * mask
            count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
            with tf.GradientTape() as tape:
                per_row = loss_fn(yb, forward(xb, True))  # (K, B)
                per_model = tf.reduce_sum(per_row * wb, axis=1) / count + penalty()
                total = tf.reduce_sum(per_model)
            grads = tape.gradient(total, variables)
            optimizer.apply(grads, variables)
            totals += per_model * count
        return totals

    @tf.function(reduce_retracing=True)
    def predict_all():
        return forward(x_all, False)

    val_weight = np.zeros((k, n), dtype=np.float32)
    for m, rows in enumerate(val_rows):
        val_weight[m, rows] = 1.0
    val_all = tf.constant(val_weight)

    @tf.function(reduce_retracing=True)
    def validation_loss():
        per_row = loss_fn(y_all, forward(x_all, False))  # (K, rows)
        count = tf.maximum(tf.reduce_sum(val_all, axis=1), 1.0)
        return tf.reduce_sum(per_row * val_all, axis=1) / count + penalty()

    es = t.early_stopping
    monitor = es.monitor if es else None
    if monitor and monitor.startswith("val_") and not all(len(r) for r in val_rows):
        monitor = monitor.removeprefix("val_")  # as fit_dataset: no validation rows
    maximise = bool(monitor and monitor.endswith(("auc", "accuracy")))
    best = np.full(k, -np.inf if maximise else np.inf)
    best_epoch: list[int | None] = [None] * k
    waited = np.zeros(k, dtype=np.int64)
    active = np.ones(k, dtype=bool)
    epochs_run = [0] * k
    kept = [None] * k  # weights each model ends with (best, or at its stop)
    histories: list[dict[str, list[float]]] = [{"loss": []} for _ in range(k)]
    has_val = all(len(r) for r in val_rows)
    start = time.perf_counter()
    train_sizes = np.array([len(r) for r in train_rows], dtype=np.float64)
    for e in range(1, t.epochs + 1):
        index, valid, _steps = _batch_plan(train_rows, t.batch_size, rngs)
        train_loss = epoch(tf.constant(index), tf.constant(valid)).numpy() / train_sizes
        val_loss = validation_loss().numpy() if has_val else None
        for m in np.flatnonzero(active):
            epochs_run[m] = e
            histories[m]["loss"].append(float(train_loss[m]))
            if val_loss is not None:
                histories[m].setdefault("val_loss", []).append(float(val_loss[m]))
        if monitor is None:
            continue
        if monitor == "loss":
            scores = train_loss
        elif monitor == "val_loss":
            scores = val_loss
        else:
            scores = _validation_scores(monitor.removeprefix("val_"), predict_all().numpy(),
                                        y_out, val_rows, validation_metrics)
            for m in np.flatnonzero(active):
                histories[m].setdefault(monitor, []).append(float(scores[m]))
        weights_now = None
        for m in np.flatnonzero(active):
            delta = es.min_delta
            improved = (scores[m] > best[m] + delta) if maximise else (
                scores[m] < best[m] - delta)
            if improved or best_epoch[m] is None:
                best[m], best_epoch[m], waited[m] = scores[m], e, 0
                if es.restore_best:
                    weights_now = weights_now or [v.numpy() for v in variables]
                    kept[m] = [w[m].copy() for w in weights_now]
            else:
                waited[m] += 1
                if waited[m] >= es.patience:
                    active[m] = False
                    if not es.restore_best:
                        weights_now = weights_now or [v.numpy() for v in variables]
                        kept[m] = [w[m].copy() for w in weights_now]
        if not active.any():
            break
    final = [v.numpy() for v in variables]
    for m in range(k):
        if kept[m] is not None:
            for w, part in zip(final, kept[m], strict=True):
                w[m] = part
    for v, w in zip(variables, final, strict=True):
        v.assign(w)
    outputs = predict_all().numpy()
    if not es:
        best_epoch = [None] * k
    per_model = [[w[m].reshape(-1) if i % 2 else w[m] for i, w in enumerate(final)]
                 for m in range(k)]  # biases (K, 1, units) -> (units,)
    return TogetherResult(outputs, epochs_run, best_epoch, time.perf_counter() - start,
                          per_model, histories)


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
