"""A sweep's seeds trained together: each seed's network is the one a separate fit would
give (up to random draws), and depends on its own seed only."""

from __future__ import annotations

import numpy as np
import pytest

from heartflow.data.dataset import dataset_from_frame
from heartflow.data.encoder import TabularEncoder
from heartflow.data.synthetic import heart_like
from heartflow.spec.loading import load_spec_text
from tests.conftest import HEART_SPEC

pytestmark = pytest.mark.slow


def _setup(epochs: int = 30):
    text = HEART_SPEC.format(name="seeds_test", source="heart.csv",
                             hidden="    - {units: 8, activation: relu, initializer: he_normal}",
                             epochs=epochs, lr=0.01, seed=42, model_name="seeds-test",
                             margin=0.0)
    text = text.replace("  epochs:", "  early_stopping: {monitor: val_loss, patience: 5, "
                        "restore_best: true}\n  epochs:")
    spec = load_spec_text(text, "seeds.yaml").spec
    data = dataset_from_frame(heart_like(500, seed=5), spec, "frame")
    feats = spec.data.features
    rows = np.arange(500)
    x = TabularEncoder(list(feats.numeric), list(feats.categorical), []).fit(
        data.features, rows[:300]).transform(data.features)
    parts = {"train": rows[:300], "val": rows[300:380], "test": rows[380:]}
    return spec, x, data.y, parts


def test_seeds_together_match_separate_fits_and_depend_on_their_own_seed_only() -> None:
    from sklearn.metrics import log_loss, roc_auc_score

    from heartflow.evaluation.metrics import epoch_metrics
    from heartflow.model.scorer import network_output
    from heartflow.model.together import fit_seeds
    from heartflow.model.training import train_model

    spec, x, y, parts = _setup()
    tr, va, te = parts["train"], parts["val"], parts["test"]
    per_epoch = epoch_metrics("binary", 0.5)
    seeds = [1, 2, 3]
    joint = fit_seeds(spec, seeds, x[tr], y[tr], x[va], y[va], per_epoch)
    alone = [train_model(spec.model_copy(update={"train": spec.train.model_copy(
                 update={"seed": s})}), x.shape[1], x[tr], y[tr], x[va], y[va],
                 validation_metrics=per_epoch) for s in seeds]

    def scores(results):
        outs = [network_output(r.model, x[te]).ravel() for r in results]
        return (np.array([roc_auc_score(y[te], p) for p in outs]),
                np.array([log_loss(y[te], p) for p in outs]), outs)

    auc_j, loss_j, out_j = scores(joint)
    auc_a, loss_a, _ = scores(alone)
    assert abs(auc_j.mean() - auc_a.mean()) < 0.03, (auc_j, auc_a)
    assert abs(loss_j.mean() - loss_a.mean()) < 0.05, (loss_j, loss_a)
    # Each seed is its own network: its own history, early stop and weights.
    assert all(r.history["loss"] and r.history["val_loss"] for r in joint)
    assert all(r.epochs_run == len(r.history["loss"]) for r in joint)
    assert len({round(float(p.sum()), 4) for p in out_j}) == len(seeds)
    assert all(r.model.count_params() == alone[0].model.count_params() for r in joint)
    # Its own seed only: seed 1 beside seed 9 is the seed 1 trained beside 2 and 3.
    pair = fit_seeds(spec, [9, 1], x[tr], y[tr], x[va], y[va], per_epoch)
    assert pair[1].epochs_run == joint[0].epochs_run
    assert np.allclose(network_output(pair[1].model, x[te]).ravel(), out_j[0], atol=1e-5)
