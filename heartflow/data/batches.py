"""tf.data pipelines over encoded in-memory arrays, and the per-row weights of a class weighting.

Keras spends most of a small model's time in per-step overhead, so training reads a
cached pipeline; its options keep tf.data from starting a thread pool of its own.
"""

from __future__ import annotations

import numpy as np

from heartflow.spec.schema import Spec


def target_array(y: np.ndarray, spec: Spec) -> np.ndarray:
    """Labels in the network's output shape: one-hot for softmax, a column otherwise."""
    if spec.task == "multiclass":
        return np.eye(spec.model.output.units, dtype=np.float32)[y.astype(np.int64)]
    return y.astype(np.float32).reshape(-1, 1)


def class_weight_map(class_weight: object, counts: dict[int, int]) -> dict[int, float] | None:
    """``train.class_weight`` (None, 'balanced' or {class: weight}) as {class: weight}.

    'balanced' is scikit-learn's rule: n_rows / (n_classes * rows_of_the_class).
    """
    if class_weight is None:
        return None
    if class_weight == "balanced":
        total, present = sum(counts.values()), [c for c, n in counts.items() if n]
        return {c: total / (len(present) * counts[c]) for c in present}
    return {int(k): float(v) for k, v in dict(class_weight).items()}


def sample_weights(y: np.ndarray, weights: dict[int, float] | None) -> np.ndarray | None:
    """One weight per row from a {class: weight} map (classes not named weigh 1)."""
    if weights is None:
        return None
    labels = y.astype(np.int64)
    return np.array([weights.get(int(c), 1.0) for c in labels], dtype=np.float32)


def class_counts(y: np.ndarray) -> dict[int, int]:
    """Rows per class label."""
    classes, counts = np.unique(y.astype(np.int64), return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts, strict=True)}


def array_batches(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None, batch_size: int,
                  shuffle_seed: int | None):
    """A cached, shuffled, batched tf.data pipeline over in-memory arrays."""
    # lazy: TensorFlow's 4 s import, only when batches are built for training
    import tensorflow as tf

    parts = (x, y) if weights is None else (x, y, weights)
    ds = tf.data.Dataset.from_tensor_slices(parts).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(2).with_options(serial_options())


def serial_options():
    """tf.data options for a pipeline over cached in-memory arrays: no thread pool of its own.

    There is nothing to parallelise in slicing cached arrays, and tf.data's autotuner and
    private threads otherwise wake up every step. On its own that costs little, but two
    trainings side by side (sweep workers on a 2-core machine) then spend a third of their
    time waiting for each other's threads; with these options they run at full speed each.
    """
    # lazy: TensorFlow's 4 s import, only when batches are built for training
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.inject_prefetch = False
    return options
