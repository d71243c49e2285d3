"""The names a spec may use, kept here so validation needs no TensorFlow import, and the one
home of metric direction (which way each metric improves).

Keras' own names are listed statically; custom activations are implemented in
``heartflow.model.activations`` (``CUSTOM_ACTIVATIONS`` here), and opt-in plugins register
theirs with :func:`register_plugin_activation`.
"""

from __future__ import annotations

KERAS_ACTIVATIONS = (
    "relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "gelu", "silu",
    "swish", "softplus", "softsign", "exponential", "hard_sigmoid", "hard_silu",
    "leaky_relu", "relu6", "mish", "log_softmax",
)
# Activations implemented in heartflow.model.activations (registered Keras-serializable).
CUSTOM_ACTIVATIONS = ("leaky_relu_01", "squareplus")

INITIALIZERS = (
    "glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal",
    "lecun_uniform", "zeros", "ones", "random_normal", "random_uniform",
    "truncated_normal", "orthogonal", "variance_scaling",
)
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax", "linear")
LOSSES = ("binary_crossentropy", "categorical_crossentropy", "mse", "mae", "huber")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")

# Which losses fit which output (task).
TASK_LOSSES = {
    "binary": ("binary_crossentropy",),
    "multiclass": ("categorical_crossentropy",),
    "regression": ("mse", "mae", "huber"),
}
TASK_METRICS = {
    "binary": ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss",
               "brier"),
    "multiclass": ("accuracy", "macro_f1", "log_loss", "roc_auc"),
    "regression": ("mse", "rmse", "mae", "r2"),
}
DEFAULT_METRICS = {
    "binary": ["roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"],
    "multiclass": ["accuracy", "macro_f1", "log_loss"],
    "regression": ["rmse", "mae", "r2"],
}
# Metrics where a larger value is better (used by promotion and ranking).
HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1",
                    "macro_f1", "r2"}
BASELINES = ("logistic_regression", "random_forest", "gradient_boosting")


def activation_names() -> tuple[str, ...]:
    """Every hidden-layer activation name a spec may use."""
    return KERAS_ACTIVATIONS + CUSTOM_ACTIVATIONS + tuple(_plugin_activations)


_plugin_activations: list[str] = []


def register_plugin_activation(name: str) -> None:
    """Allow ``name`` in specs (called by opt-in plugins, see heartflow.model.activations)."""
    if name not in _plugin_activations:
        _plugin_activations.append(name)


def improvement(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` on ``metric`` (positive: better), whichever
    way the metric points. The one home of metric direction: promotion, ranking, sweeps."""
    return new - old if metric in HIGHER_IS_BETTER else old - new


def rank_value(metric: str, value: float) -> float:
    """A sort key that puts the best value of ``metric`` first (ascending sort)."""
    return -value if metric in HIGHER_IS_BETTER else value


def monitor_mode(monitor: str) -> str:
    """``"max"`` or ``"min"``: which way a Keras training monitor (``val_auc``,
    ``val_accuracy``, ``val_loss``, ...) improves, as Keras' ``mode="auto"`` decides."""
    name = monitor.removeprefix("val_")
    if name in HIGHER_IS_BETTER or name.endswith(("auc", "accuracy")):
        return "max"
    if name.endswith("loss") or name in ("mse", "mae", "rmse", "brier"):
        return "min"
    raise ValueError(f"cannot tell whether {monitor!r} should rise or fall: pass mode=")
