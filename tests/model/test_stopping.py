"""Early stopping of K models at once agrees, model by model, with Keras' own
``EarlyStopping`` callback fed the same per-epoch values."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartflow.model.stopping import ManyEarlyStopping

NAN = float("nan")
# Values are multiples of 1/16 (and min_delta too): exact in float32, which Keras' own
# comparison uses, so the two can only disagree on the rules, not on rounding.
LOSSES = {
    "decreasing": [v / 16 for v in (40, 36, 30, 25, 21, 18, 16, 15, 14, 13, 12, 11)],
    "noisy": [v / 16 for v in (40, 35, 37, 33, 34, 36, 32, 35, 36, 37, 31, 38)],
    "plateau": [v / 16 for v in (40, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30)],
    "small_steps": [v / 16 for v in (40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29)],
    "late_best": [v / 16 for v in (40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 8)],
    "nan_first": [NAN, *(v / 16 for v in (40, 35, 30, 25, 20, 15, 10, 5, 4, 3, 2))],
    "nan_later": [v / 16 for v in (40, 35)] + [NAN] * 4 + [v / 16 for v in (30,) * 6],
}
AUCS = {
    "rising": [v / 64 for v in (32, 36, 40, 44, 46, 48, 50, 52, 53, 54, 55, 56)],
    "peak": [v / 64 for v in (32, 40, 48, 56, 50, 49, 48, 47, 46, 45, 44, 43)],
    "noisy": [v / 64 for v in (32, 40, 38, 41, 39, 42, 40, 40, 43, 41, 41, 41)],
    "flat": [v / 64 for v in (48,) * 12],
}


@functools.cache
def _tiny_model():
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _keras_run(values: list[float], monitor: str, mode: str, patience: int,
               min_delta: float) -> dict:
    """Keras' callback driven by hand, as ``model.fit`` would, until it stops training."""
    import keras

    model = _tiny_model()
    model.stop_training = False
    callback = keras.callbacks.EarlyStopping(monitor=monitor, min_delta=min_delta,
                                             patience=patience, mode=mode,
                                             restore_best_weights=True)
    callback.set_model(model)
    callback.on_train_begin()
    improved = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {monitor: value})
        improved.append(callback.best_epoch == epoch)
        if model.stop_training:
            break
    return {"stopped": bool(model.stop_training), "stopped_epoch": callback.stopped_epoch,
            "best_epoch": callback.best_epoch, "improved": improved}


def _assert_agree(columns: list[list[float]], monitor: str, mode: str, patience: int,
                  min_delta: float) -> None:
    """Feed every column to one K-model object and each to its own Keras callback."""
    stopper = ManyEarlyStopping(len(columns), monitor=monitor, min_delta=min_delta,
                                patience=patience, mode=mode, restore_best_weights=True)
    improved = [stopper.on_epoch_end(e, row) for e, row in enumerate(np.array(columns).T)]
    for m, column in enumerate(columns):
        expected = _keras_run(column, monitor, mode, patience, min_delta)
        case = (m, column, expected)
        assert bool(stopper.stopped[m]) == expected["stopped"], case
        assert stopper.stopped_epoch[m] == expected["stopped_epoch"], case
        assert stopper.best_epoch[m] == expected["best_epoch"], case
        ran = len(expected["improved"])
        assert [bool(i[m]) for i in improved[:ran]] == expected["improved"], case
        assert not any(i[m] for i in improved[ran:]), case  # a stopped model stays stopped


@pytest.mark.parametrize("patience", [0, 1, 2, 3, 5, 20])
@pytest.mark.parametrize("min_delta", [0.0, 1 / 16, 3 / 16])
def test_losses_stop_as_keras_does(patience: int, min_delta: float) -> None:
    _assert_agree(list(LOSSES.values()), "val_loss", "min", patience, min_delta)


@pytest.mark.parametrize("patience", [0, 1, 2, 4, 20])
@pytest.mark.parametrize("min_delta", [0.0, 1 / 64, 2 / 64])
def test_auc_is_maximised_as_keras_does(patience: int, min_delta: float) -> None:
    _assert_agree(list(AUCS.values()), "val_auc", "max", patience, min_delta)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), epochs=st.integers(1, 25), models=st.integers(1, 5),
       patience=st.integers(0, 6), delta=st.integers(0, 4), mode=st.sampled_from(["min", "max"]))
def test_random_sequences_stop_as_keras_does(data, epochs: int, models: int, patience: int,
                                             delta: int, mode: str) -> None:
    values = st.lists(st.integers(0, 64).map(lambda v: v / 16), min_size=epochs,
                      max_size=epochs)
    columns = [data.draw(values) for _ in range(models)]
    _assert_agree(columns, "val_loss" if mode == "min" else "val_auc", mode, patience,
                  delta / 16)


def test_auto_mode_and_weights_to_keep() -> None:
    assert ManyEarlyStopping(2, "val_auc").mode == "max"
    assert ManyEarlyStopping(2, "accuracy").mode == "max"
    assert ManyEarlyStopping(2, "loss").mode == "min"
    assert ManyEarlyStopping(2, "val_loss").mode == "min"
    with pytest.raises(ValueError, match="rise or fall"):
        ManyEarlyStopping(2, "val_widgets")
    with pytest.raises(ValueError, match="mode"):
        ManyEarlyStopping(2, "val_loss", mode="up")
    for restore in (True, False):
        stopper = ManyEarlyStopping(2, patience=1, restore_best_weights=restore)
        first = stopper.on_epoch_end(0, [1.0, 1.0])
        assert first.tolist() == [True, True]
        assert stopper.to_keep(first).tolist() == [restore, restore]
        second = stopper.on_epoch_end(1, [0.5, 2.0])  # model 1 stops: its weights are kept
        assert second.tolist() == [True, False]
        assert stopper.stopped.tolist() == [False, True]
        assert stopper.to_keep(second).tolist() == ([True, False] if restore else [False, True])


def test_models_trained_together_without_early_stopping_run_every_epoch() -> None:
    from heartflow.data.dataset import dataset_from_frame
    from heartflow.data.encoder import TabularEncoder
    from heartflow.data.synthetic import heart_like
    from heartflow.model.together import fit_together
    from heartflow.spec.loading import load_spec_text
    from tests.conftest import HEART_SPEC

    text = HEART_SPEC.format(name="no_es", source="heart.csv",
                             hidden="    - {units: 4, activation: relu, initializer: he_normal}",
                             epochs=3, lr=0.01, seed=42, model_name="no-es", margin=0.0)
    spec = load_spec_text(text, "no_es.yaml").spec
    data = dataset_from_frame(heart_like(120, seed=1), spec, "frame")
    feats = spec.data.features
    rows = np.arange(120)
    x = TabularEncoder(list(feats.numeric), list(feats.categorical), []).fit(
        data.features, rows).transform(data.features)
    result = fit_together(spec, np.stack([x, x]), data.y, [rows[:80], rows[40:]],
                          [rows[80:], rows[:40]])
    assert result.epochs_run == [3, 3] and result.best_epochs == [None, None]
    assert [len(h["val_loss"]) for h in result.histories] == [3, 3]
    model = result.keras_model(spec, 1)  # the weights it ends with are its last ones
    assert np.allclose(model.predict(x, verbose=0), result.outputs[1], atol=1e-5)
