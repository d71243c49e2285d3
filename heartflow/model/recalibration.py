"""Recalibration of a binary model's risks for a new site (Van Calster et al. 2019; Steyerberg,
*Clinical Prediction Models*, ch. 20), stored as data in the model's meta and applied by
the scorer after the network:

- ``intercept``: logit(p') = a + logit(p). Refits calibration-in-the-large only (the mean
  risk matches the site's prevalence); keeps the ranking.
- ``logistic``: logit(p') = a + b logit(p). Also corrects risks that are too extreme
  (b < 1) or too modest; keeps the ranking while b > 0.
- ``isotonic``: a non-decreasing step function fitted by scikit-learn's
  IsotonicRegression, stored as its knots. Most flexible; needs many rows, and ties
  risks within a step, which can lower the AUC a little.

The GLM fits are statsmodels' (intercept: logit(p) as an offset).
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("intercept", "logistic", "isotonic")
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p kept EPS away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(q / (1 - q))


def fit_recalibration(y: np.ndarray, p: np.ndarray, method: str) -> dict[str, Any]:
    """The rule mapping the model's risks ``p`` to recalibrated ones, fitted on outcomes ``y``."""
    y = np.asarray(y, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"unknown recalibration method {method!r}; use one of "
                         f"{', '.join(METHODS)}")
    if len(np.unique(y)) < 2:
        raise ValueError("recalibration needs rows of both outcomes")
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {"method": method, "x": iso.X_thresholds_.tolist(),
                "y": iso.y_thresholds_.tolist(), "rows": len(y)}
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    z = logit(p)
    if method == "intercept":
        fit = GLM(y, np.ones((len(y), 1)), family=families.Binomial(), offset=z).fit()
        return {"method": method, "intercept": float(fit.params[0]), "slope": 1.0,
                "rows": len(y)}
    fit = GLM(y, np.column_stack([np.ones(len(z)), z]), family=families.Binomial()).fit()
    return {"method": method, "intercept": float(fit.params[0]),
            "slope": float(fit.params[1]), "rows": len(y)}


def apply_recalibration(p: np.ndarray, rule: dict[str, Any] | None) -> np.ndarray:
    """Recalibrated risks (``p`` unchanged when there is no rule)."""
    if not rule:
        return p
    p = np.asarray(p, dtype=np.float64)
    if rule["method"] == "isotonic":
        return np.interp(p, rule["x"], rule["y"])
    z = rule["intercept"] + rule["slope"] * logit(p)
    return 1.0 / (1.0 + np.exp(-z))


CROSS_FIT_FOLDS = 5


def cross_fitted(y: np.ndarray, p: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """Each row's risk recalibrated by a rule fitted on the other folds (stratified): the
    honest estimate of what a new patient from the site gets, beside the optimistic figure
    on the very rows a rule was fitted on."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold[rows] = np.arange(len(rows)) % CROSS_FIT_FOLDS
    out = np.empty(len(y))
    for k in range(CROSS_FIT_FOLDS):
        held = fold == k
        out[held] = apply_recalibration(p[held], fit_recalibration(y[~held], p[~held], method))
    return out
