"""Builder, parameter counts, training, metrics: the Keras side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heartflow.data.batches import class_counts, class_weight_map, sample_weights
from heartflow.evaluation import metrics as M
from heartflow.model.builder import build_model, count_parameters
from heartflow.model.training import train_model
from heartflow.spec import load_spec, load_spec_text
from tests.conftest import ROOT

SPEC = """\
name: shapes
data:
  source: heart-csv
  target: {target}
  features: {{numeric: [a, b]}}
model:
  hidden: [{hidden}]
  output: {{units: {units}, activation: {activation}}}
train: {{loss: {loss}, epochs: 3, batch_size: 8, seed: 1}}
"""


def spec_of(units: int = 1, activation: str = "sigmoid", loss: str = "binary_crossentropy",
            hidden: str = "{units: 4, activation: relu}", target: str = "y"):
    text = SPEC.format(units=units, activation=activation, loss=loss, hidden=hidden,
                       target=target)
    return load_spec_text(text, "s.yaml").spec


def test_heart_16_has_497_parameters_and_logreg_30() -> None:
    heart16 = load_spec(str(ROOT / "specs/heart_16.yaml")).spec
    logreg = load_spec(str(ROOT / "specs/heart_logreg.yaml")).spec
    assert count_parameters(heart16, 29) == 29 * 16 + 16 + 16 + 1 == 497
    assert count_parameters(logreg, 29) == 29 * 1 + 1 == 30
    assert build_model(heart16, 29).count_params() == 497
    assert build_model(logreg, 29).count_params() == 30


@pytest.mark.parametrize(("units", "activation", "loss", "shape"), [
    (1, "sigmoid", "binary_crossentropy", (5, 1)),
    (3, "softmax", "categorical_crossentropy", (5, 3)),
    (1, "linear", "mse", (5, 1)),
])
def test_builder_output_shapes(units, activation, loss, shape) -> None:
    spec = spec_of(units, activation, loss)
    model = build_model(spec, 7)
    out = np.asarray(model(np.zeros((5, 7), dtype=np.float32)))
    assert out.shape == shape
    if activation == "softmax":
        assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    if activation == "sigmoid":
        assert ((out > 0) & (out < 1)).all()
    assert model.count_params() == count_parameters(spec, 7)


def test_deep_network_with_dropout_and_l2_counts_parameters() -> None:
    spec = spec_of(hidden="{units: 8, dropout: 0.2, l2: 0.01}, {units: 4, activation: tanh}")
    assert build_model(spec, 10).count_params() == count_parameters(spec, 10) == \
        (10 * 8 + 8) + (8 * 4 + 4) + (4 + 1)


def test_custom_activation_survives_save_and_safe_load(tmp_path: Path) -> None:
    import keras

    spec = spec_of(hidden="{units: 4, activation: squareplus}, {units: 3, activation: "
                          "leaky_relu_01}")
    model = build_model(spec, 5)
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    assert np.allclose(np.asarray(model(x)), np.asarray(again(x)), atol=1e-6)


def _blobs(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 2)).astype(np.float32) + y[:, None] * 1.5
    return x, y.astype(np.float32)


def test_training_learns_and_is_reproducible() -> None:
    spec = spec_of()
    spec.train.epochs = 20
    x, y = _blobs()
    a = train_model(spec, 2, x[:150], y[:150], x[150:], y[150:])
    b = train_model(spec, 2, x[:150], y[:150], x[150:], y[150:])
    assert a.history["loss"] == b.history["loss"]
    assert a.history["loss"][-1] < a.history["loss"][0]
    p = np.asarray(a.model(x[150:])).ravel()
    assert M.roc_auc(y[150:], p) > 0.8


def test_early_stopping_stops_and_restores() -> None:
    spec = spec_of()
    spec.train.epochs = 300
    from heartflow.spec.schema import EarlyStoppingSpec

    spec.train.early_stopping = EarlyStoppingSpec(monitor="val_loss", patience=3)
    spec.train.optimizer.learning_rate = 0.05
    x, y = _blobs()
    result = train_model(spec, 2, x[:150], y[:150], x[150:], y[150:])
    assert result.stopped_early and result.epochs_run < 300
    assert result.best_epoch is not None and result.best_epoch < result.epochs_run
    # The returned weights are the best epoch's: scikit-learn's log loss of the returned
    # model on the validation rows is the smallest val_loss, not the last epoch's.
    from sklearn.metrics import log_loss

    val_loss = result.history["val_loss"]
    restored = log_loss(y[150:], np.asarray(result.model(x[150:])).ravel().astype(np.float64))
    assert restored == pytest.approx(min(val_loss), abs=1e-4)
    assert restored == pytest.approx(val_loss[result.best_epoch - 1], abs=1e-4)
    assert val_loss[-1] > min(val_loss)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_trains(optimizer: str) -> None:
    spec = spec_of()
    spec.train.optimizer.name = optimizer
    spec.train.optimizer.momentum = 0.9 if optimizer == "sgd" else 0.0
    spec.train.epochs = 2
    x, y = _blobs(64)
    assert len(train_model(spec, 2, x, y).history["loss"]) == 2


def test_multiclass_and_regression_train() -> None:
    x, _y = _blobs(120)
    multi = spec_of(3, "softmax", "categorical_crossentropy")
    labels = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)
    out = train_model(multi, 2, x, labels)
    assert np.asarray(out.model(x[:2])).shape == (2, 3)
    reg = spec_of(1, "linear", "huber")
    out = train_model(reg, 2, x, x[:, 0] * 2.0)
    assert "rmse" in out.history


def test_balanced_class_weights_match_scikit_learn() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0, 0, 0, 1, 1, 0, 0])
    reference = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
    weights = class_weight_map("balanced", class_counts(y))
    assert np.allclose([weights[0], weights[1]], reference)
    assert np.allclose(sample_weights(y, weights), reference[y])
    explicit = class_weight_map({0: 1.0, 1: 3.0}, class_counts(y))
    assert list(sample_weights(np.array([0, 1]), explicit)) == [1.0, 3.0]
    assert class_weight_map(None, class_counts(y)) is None


def test_numpy_metrics_match_scikit_learn() -> None:
    from sklearn import metrics as S

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.uniform(size=300) * 0.7, 0, 1).round(2)  # ties on purpose
    got = M.binary_metrics(y, p, 0.5)
    assert got["roc_auc"] == pytest.approx(S.roc_auc_score(y, p))
    assert got["pr_auc"] == pytest.approx(S.average_precision_score(y, p))
    assert got["log_loss"] == pytest.approx(S.log_loss(y, p), rel=1e-6)
    assert got["f1"] == pytest.approx(S.f1_score(y, p >= 0.5))
    assert got["precision"] == pytest.approx(S.precision_score(y, p >= 0.5))
    assert got["recall"] == pytest.approx(S.recall_score(y, p >= 0.5))
    assert got["brier"] == pytest.approx(S.brier_score_loss(y, p))
    proba = rng.dirichlet([1, 1, 1], 300)
    labels = rng.integers(0, 3, 300)
    multi = M.multiclass_metrics(labels, proba)
    assert multi["macro_f1"] == pytest.approx(S.f1_score(labels, proba.argmax(1),
                                                         average="macro"))
    assert multi["roc_auc"] == pytest.approx(S.roc_auc_score(labels, proba, multi_class="ovr"))
    reg = M.regression_metrics(y * 1.0, p)
    assert reg["r2"] == pytest.approx(S.r2_score(y, p))


def test_streamed_metrics_match_exact_metrics() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 5000)
    p = np.clip(y * 0.25 + rng.uniform(size=5000) * 0.75, 0, 1)
    totals = M.BinaryAccumulator(0.5)
    for start in range(0, 5000, 700):
        totals.update(y[start:start + 700], p[start:start + 700])
    exact, streamed = M.binary_metrics(y, p, 0.5), totals.result()
    for name in ("accuracy", "precision", "recall", "f1", "log_loss", "brier"):
        assert streamed[name] == pytest.approx(exact[name], rel=1e-9)
    assert streamed["roc_auc"] == pytest.approx(exact["roc_auc"], abs=1e-4)
    assert streamed["pr_auc"] == pytest.approx(exact["pr_auc"], abs=2e-3)


def test_per_run_settings_do_not_leak_into_the_next_run() -> None:
    """A sweep worker runs a cpu trial, then a mixed-precision one, then a plain one."""
    import keras
    import tensorflow as tf

    from heartflow.model.devices import device_scope

    x, y = _blobs()
    visible = tf.config.get_visible_devices()
    cpu = spec_of()
    cpu.train.device, cpu.train.epochs = "cpu", 2
    with device_scope(cpu.train.device):
        first = train_model(cpu, 2, x, y)
    assert "CPU" in first.model.weights[0].value.device
    assert tf.config.get_visible_devices() == visible  # nothing hidden for later runs
    mixed = spec_of()
    mixed.train.mixed_precision, mixed.train.epochs = True, 2
    second = train_model(mixed, 2, x, y)
    assert second.model.get_layer("hidden_1").compute_dtype == "float16"
    assert keras.mixed_precision.global_policy().name == "float32"
    plain = spec_of()
    plain.train.epochs = 2
    third = train_model(plain, 2, x, y)
    assert third.model.get_layer("hidden_1").compute_dtype == "float32"


def test_validation_accuracy_uses_the_specs_threshold() -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 200), rng.random(200)
    scores = M.epoch_metrics("binary", 0.7)(y.reshape(-1, 1).astype(float), p.reshape(-1, 1))
    assert scores["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.7))
    assert scores["auc"] == pytest.approx(roc_auc_score(y, p))


def test_regression_cannot_monitor_a_classification_metric() -> None:
    from heartflow.errors import SpecError

    text = SPEC.format(units=1, activation="linear", loss="mse",
                       hidden="{units: 4, activation: relu}", target="y")
    text = text.replace("seed: 1}", "seed: 1, early_stopping: {monitor: val_auc}}")
    with pytest.raises(SpecError, match=r"train.early_stopping.monitor: val_auc is not"):
        load_spec_text(text, "s.yaml")


def test_device_auto_picks_the_cpu_for_small_networks_and_the_gpu_for_wide_ones() -> None:
    from heartflow.model.builder import count_parameters
    from heartflow.model.devices import choose_device

    small, wide = spec_of(), spec_of()
    small.model.hidden[0].units = 16
    wide.model.hidden = [wide.model.hidden[0].model_copy(update={"units": 256})
                         for _ in range(2)]
    n_small, n_wide = count_parameters(small, 29), count_parameters(wide, 29)
    assert n_small == 29 * 16 + 16 + 16 + 1  # the teaching network: 497
    assert n_wide == 29 * 256 + 256 + 256 * 256 + 256 + 256 + 1
    assert choose_device("auto", n_small, gpus=1)[0] == "cpu"
    assert choose_device("auto", n_wide, gpus=1)[0] == "gpu"
    assert choose_device("auto", n_wide, gpus=0) == ("cpu", "auto: no GPU visible")
    assert choose_device("cpu", n_wide, gpus=1)[0] == "cpu"
    assert "parameters" in choose_device("auto", n_small, gpus=1)[1]


DIVERGING = """\
name: diverging
data:
  source: heart-csv
  target: y
  features: {numeric: [a, b]}
model:
  hidden: [{units: 16, activation: relu}]
  output: {units: 1, activation: linear}
train:
  loss: mse
  optimizer: {name: sgd, learning_rate: 10, momentum: 0.99}
  epochs: 30
  batch_size: 8
  seed: 1
"""


def test_a_diverging_network_stops_with_a_clear_error() -> None:
    """A non-finite training loss ends training with an error that says what happened and
    what to try; the diverged network is never returned to be scored."""
    from heartflow.errors import TrainingError

    spec = load_spec_text(DIVERGING, "s.yaml").spec
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32) * 100
    y = (x @ np.array([3.0, -2.0]) + 500).astype(np.float32)
    with pytest.raises(TrainingError) as caught:
        train_model(spec, 2, x, y)
    message = str(caught.value)
    assert "diverged" in message and "learning_rate 10" in message
    assert "lower learning rate" in message and "Adam" in message
    assert caught.value.exit_code == 7
