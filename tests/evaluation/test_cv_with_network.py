"""The run's network trained in the same program as its cross-validation folds' networks:
the folds' figures are those of the folds trained alone, and the network is the one Keras'
fit would give (same history, same kind of results)."""

from __future__ import annotations

import numpy as np
import pytest

from heartflow.data.dataset import dataset_from_frame
from heartflow.data.prepare import prepare_in_memory
from heartflow.data.synthetic import heart_like
from heartflow.spec.loading import load_spec_text
from tests.conftest import HEART_SPEC

pytestmark = pytest.mark.slow


def test_folds_beside_the_network_match_the_folds_alone_and_the_network_a_keras_fit() -> None:
    from sklearn.metrics import roc_auc_score

    from heartflow.evaluation.cv import cross_validate_network, fit_with_folds
    from heartflow.evaluation.metrics import epoch_metrics
    from heartflow.model.scorer import network_output
    from heartflow.model.training import train_prepared

    text = HEART_SPEC.format(name="cv_net", source="heart.csv",
                             hidden="    - {units: 8, activation: relu, initializer: he_normal}",
                             epochs=40, lr=0.01, seed=7, model_name="cv-net", margin=0.0)
    text = text.replace("  epochs:", "  early_stopping: {monitor: val_loss, patience: 5}\n"
                                     "  epochs:")
    spec = load_spec_text(text + "evaluate:\n  cv: {folds: 5, repeats: 1}\n", "cv.yaml").spec
    data = prepare_in_memory(spec, dataset_from_frame(heart_like(400, seed=5), spec, "frame"))
    per_epoch = epoch_metrics("binary")

    network, fits = fit_with_folds(spec, data, per_epoch)
    beside = cross_validate_network(spec, data.development(), fits=fits)
    alone = cross_validate_network(spec, data.development())
    for metric in ("roc_auc", "log_loss"):
        # The same programs up to the order of float sums (a batched product over 6 models
        # instead of 5): differences of 1e-8 an epoch that early stopping may amplify.
        a, b = np.asarray(beside.scores[metric]), np.asarray(alone.scores[metric])
        assert abs(a.mean() - b.mean()) < 0.02, (metric, a, b)
    assert len(beside.fold_table()) == 5

    keras_fit = train_prepared(spec, data, False, per_epoch)
    assert set(network.history) == set(keras_fit.history)
    assert {len(v) for v in network.history.values()} == {network.epochs_run}
    assert network.model.count_params() == keras_fit.model.count_params()
    x_test, y_test = data.part("test")
    ours = roc_auc_score(y_test, network_output(network.model, x_test).reshape(-1))
    theirs = roc_auc_score(y_test, network_output(keras_fit.model, x_test).reshape(-1))
    assert ours > 0.7 and abs(ours - theirs) < 0.1  # one draw each: the same kind of fit
