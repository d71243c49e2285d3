"""Cross-validation's networks trained together in one program: independent models, and
per-fold results statistically equivalent to fitting them one after another."""

from __future__ import annotations

import numpy as np
import pytest

from heartflow.data.dataset import dataset_from_frame
from heartflow.data.synthetic import heart_like
from heartflow.spec.loading import load_spec_text
from tests.conftest import HEART_SPEC

pytestmark = pytest.mark.slow


def _spec(together: bool, epochs: int = 60, monitor: str = "val_loss"):
    text = HEART_SPEC.format(name="cv_test", source="heart.csv",
                             hidden="    - {units: 8, activation: relu, initializer: he_normal}",
                             epochs=epochs, lr=0.01, seed=42, model_name="cv-test", margin=0.0)
    text = text.replace("  epochs:", f"  early_stopping: {{monitor: {monitor}, patience: 5}}\n"
                        "  epochs:")
    text += f"evaluate:\n  cv: {{folds: 5, repeats: 1, together: {str(together).lower()}}}\n"
    return load_spec_text(text, "cv.yaml").spec


def test_folds_trained_together_match_sequential_fits_on_the_same_folds() -> None:
    from scipy.stats import ttest_rel

    from heartflow.evaluation.cv import cross_validate_network

    frame = heart_like(400, seed=3)
    results = {}
    for together in (True, False):
        spec = _spec(together)
        results[together] = cross_validate_network(spec, dataset_from_frame(frame, spec,
                                                                             "frame"))
    joint, alone = results[True], results[False]
    assert len(joint.epochs_run) == 5 and min(joint.epochs_run) < 60  # each stopped itself
    for metric in ("roc_auc", "log_loss"):
        a, b = np.asarray(joint.scores[metric]), np.asarray(alone.scores[metric])
        assert len(a) == len(b) == 5
        assert abs(a.mean() - b.mean()) < 0.02, (metric, a, b)
        assert np.abs(a - b).max() < 0.08, (metric, a, b)
        assert ttest_rel(a, b).pvalue > 0.01  # no systematic difference fold by fold
    # Pooled out-of-fold risks: every development row once.
    assert not np.isnan(joint.pooled_p).any() and len(joint.pooled_p) == 400


def test_each_model_is_independent_of_the_others() -> None:
    from heartflow.data.encoder import TabularEncoder
    from heartflow.evaluation.metrics import epoch_metrics
    from heartflow.model.together import fit_together

    spec = _spec(True, epochs=40, monitor="val_auc")
    frame = heart_like(300, seed=4)
    data = dataset_from_frame(frame, spec, "frame")
    feats = spec.data.features
    x = TabularEncoder(list(feats.numeric), list(feats.categorical), []).fit(
        data.features, np.arange(300)).transform(data.features)
    stacked = np.stack([x, x])
    rows = np.arange(300)
    first_train, first_val = rows[:200], rows[200:250]
    per_epoch = epoch_metrics("binary", 0.5)
    a = fit_together(spec, stacked, data.y, [first_train, rows[50:250]],
                     [first_val, rows[250:]], per_epoch)
    b = fit_together(spec, stacked, data.y, [first_train, rows[100:180]],
                     [first_val, rows[:40]], per_epoch)
    # Model 0 had the same rows both times; model 1 did not: model 0 is unchanged.
    assert a.epochs_run[0] == b.epochs_run[0] and a.best_epochs[0] == b.best_epochs[0]
    assert np.allclose(a.outputs[0], b.outputs[0], atol=1e-5)
    assert not np.allclose(a.outputs[1], b.outputs[1], atol=1e-3)
