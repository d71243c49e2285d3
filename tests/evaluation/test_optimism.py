"""The optimism bootstrap of a whole development, checked on logistic regression against
scikit-learn's unpenalised LogisticRegression refitted on the very same resamples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from heartflow.data.dataset import dataset_from_frame
from heartflow.evaluation.optimism import validate_network
from heartflow.spec.loading import load_spec_text

pytestmark = pytest.mark.slow

LOGREG = """\
name: optimism_logreg
data:
  source: rows.csv
  target: y
  features: {numeric: [a, b, c]}
  split: {test: 0.2, validation: 0.0, seed: 3}
model:
  hidden: []
  output: {units: 1, activation: sigmoid}
train:
  loss: binary_crossentropy
  optimizer: {name: adam, learning_rate: 0.05}
  batch_size: 256
  epochs: 400
  seed: 1
evaluate:
  validation: {method: bootstrap, resamples: 40}
"""


def _rows(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    logit = -0.7 + x @ np.array([1.0, -0.6, 0.3])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})


def _slope(y: np.ndarray, p: np.ndarray) -> float:
    z = np.log(p / (1 - p)).reshape(-1, 1)
    return float(LogisticRegression(penalty=None).fit(z, y).coef_[0, 0])


def test_logistic_regression_optimism_matches_scikit_learn_refits() -> None:
    spec = load_spec_text(LOGREG, "s.yaml").spec
    frame = _rows()
    dataset = dataset_from_frame(frame, spec, "rows")
    x, y = frame[["a", "b", "c"]].to_numpy(), frame["y"].to_numpy()
    full = LogisticRegression(penalty=None).fit(x, y).predict_proba(x)[:, 1]
    result = validate_network(spec, dataset, full, 0.5, spec.evaluate.validation.resamples)
    # The same resamples, refitted by scikit-learn (each on its own sample's rows).
    auc_gap, slope_gap = [], []
    for sample in result.samples:
        refit = LogisticRegression(penalty=None).fit(x[sample], y[sample])
        p = refit.predict_proba(x)[:, 1]
        auc_gap.append(roc_auc_score(y[sample], p[sample]) - roc_auc_score(y, p))
        slope_gap.append(_slope(y[sample], p[sample]) - _slope(y, p))
    apparent = roc_auc_score(y, full)
    assert result.apparent["roc_auc"] == pytest.approx(apparent)
    # Stated tolerance: Adam's 400 epochs stop near (not at) the maximum likelihood.
    assert result.optimism["roc_auc"] == pytest.approx(np.mean(auc_gap), abs=0.004)
    assert result.corrected["roc_auc"] == pytest.approx(apparent - np.mean(auc_gap), abs=0.004)
    assert result.optimism["calibration_slope"] == pytest.approx(np.mean(slope_gap), abs=0.03)
    assert result.optimism["roc_auc"] > 0  # a model looks better on the rows it learned
    # Instability: the refits' risks against the development model's, per patient.
    refits = result.refit_risks
    assert refits.shape == (40, len(y))
    assert result.mean_abs_difference == pytest.approx(
        np.mean(np.abs(refits - full[None, :])))
