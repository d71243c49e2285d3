"""Recalibration of a binary model's risks for a new site (Van Calster et al. 2019; Steyerberg,
*Clinical Prediction Models*, ch. 20), stored as data in the model's meta and applied by
the scorer after the network:

- ``intercept``: logit(p') = a + logit(p). Refits calibration-in-the-large only (the mean
  risk matches the site's prevalence); keeps the ranking.
- ``logistic``: logit(p') = a + b logit(p). Also corrects risks that are too extreme
  (b < 1) or too modest; keeps the ranking while b > 0.
- ``isotonic``: a non-decreasing step function fitted by scikit-learn's
  IsotonicRegression, stored as its knots. Most flexible; needs many rows. It never
  reverses two patients' order, but it ties the risks within each of its steps, so the AUC
  changes (a tie counts half): on the rows it was fitted on it cannot fall (the ROC curve
  becomes its convex hull), on other rows it can go either way.

The logistic fits are statsmodels' (``Logit``; intercept: logit(p) as an offset). A rule
is refused, with the reasons the clinical calibration figures give (:func:`refusal`), when
the rows cannot fit it: one outcome class, risks that are not numbers, and for the logistic
methods risks of exactly 0 or 1 (their logit is infinite: clipping them would invent a
finite one), and separation, identical risks (slope) or a fit that does not converge.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from heartflow.errors import DataError

METHODS = ("intercept", "logistic", "isotonic")
EPS = 1e-6
ONE_CLASS = "needs rows with and without the outcome"
SEPARATION = ("separation: the risks order the outcomes perfectly, so no finite "
              "maximum-likelihood fit exists")
IDENTICAL = "all risks are identical: the slope on logit(risk) is not identifiable"
NOT_CONVERGED = "the logistic fit did not converge"


def saturated(count: int) -> str:
    """Why a logistic fit on logit(risk) is impossible: ``count`` risks of exactly 0 or 1."""
    return (f"{count} risk(s) of exactly 0 or 1: their logit is infinite, so the logistic "
            "recalibration has no finite fit")


def non_finite(count: int) -> str:
    """Why nothing can be fitted or judged on risks of which ``count`` are not numbers."""
    return f"{count} non-finite risk(s) (NaN or infinite) among these rows"


def refusal(y: np.ndarray, p: np.ndarray, logit_scale: bool = True) -> str | None:
    """Why risks ``p`` with outcomes ``y`` cannot be recalibrated (or calibrated: the same
    reasons), checked in this order; None when they can. ``logit_scale``: the fit is on
    logit(p), which risks of exactly 0 or 1 do not have."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    case = y > 0.5
    bad = int(np.sum(~np.isfinite(p)))
    if case.all() or not case.any():
        return ONE_CLASS
    if bad:
        return non_finite(bad)
    at_bounds = int(np.sum((p <= 0) | (p >= 1)))
    return saturated(at_bounds) if logit_scale and at_bounds else None


def glm(y: np.ndarray, x: np.ndarray, offset: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray] | str:
    """Parameters and 95% Wald intervals of a logistic regression (statsmodels' ``Logit``,
    maximum likelihood by Newton's method), or why there is no finite fit (separation, no
    convergence, a failed fit).

    ``Logit`` rather than the binomial ``GLM`` (the same estimates and intervals): GLM's
    IRLS recomputes the deviance and a weighted least-squares fit at each step, 1.6 s for a
    batch's two calibration fits on 1,000,000 rows, against about 0.5 s.
    """
    # lazy: statsmodels, only where a calibration is fitted (not statsmodels.api: 1 s)
    from statsmodels.discrete.discrete_model import Logit
    from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = Logit(y, x, offset=offset).fit(method="newton", maxiter=100, disp=0)
        except PerfectSeparationError:
            return SEPARATION
        except (np.linalg.LinAlgError, ValueError) as error:
            return f"the logistic fit failed ({error})"
    if any(issubclass(w.category, PerfectSeparationWarning) for w in caught):
        return SEPARATION
    params, ci = np.asarray(fit.params), np.asarray(fit.conf_int(0.05))
    if not (fit.mle_retvals["converged"] and np.isfinite(params).all()
            and np.isfinite(ci).all()):
        return NOT_CONVERGED
    return params, ci


def separated(y: np.ndarray, z: np.ndarray) -> str | None:
    """Why the slope on ``z`` = logit(risk) has no finite fit, before fitting: identical
    risks, or risks that order the outcomes perfectly; None otherwise."""
    case = np.asarray(y) > 0.5
    if np.ptp(z) <= 1e-9 * max(1.0, float(np.abs(z).max())):
        return IDENTICAL
    if z[~case].max() <= z[case].min() or z[case].max() <= z[~case].min():
        return SEPARATION
    return None


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p kept EPS away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(q / (1 - q))


def fit_recalibration(y: np.ndarray, p: np.ndarray, method: str) -> dict[str, Any]:
    """The rule mapping the model's risks ``p`` to recalibrated ones, fitted on outcomes
    ``y``; a DataError saying why when the rows cannot fit it (module docstring)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if method not in METHODS:
        raise ValueError(f"unknown recalibration method {method!r}; use one of "
                         f"{', '.join(METHODS)}")
    why = refusal(y, p, logit_scale=method != "isotonic")
    if method == "isotonic" and why is None:
        from sklearn.isotonic import IsotonicRegression  # lazy: scikit-learn, 0.5 s

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {"method": method, "x": iso.X_thresholds_.tolist(),
                "y": iso.y_thresholds_.tolist(), "rows": len(y)}
    z = logit(p)  # as apply_recalibration computes it (no risk is 0 or 1 here)
    if why is None and method == "logistic":
        why = separated(y, z)
    if why is None:
        design = np.ones((len(y), 1)) if method == "intercept" else np.column_stack(
            [np.ones(len(z)), z])
        fit = glm(y, design, offset=z if method == "intercept" else None)
        if not isinstance(fit, str):
            params = fit[0]
            return {"method": method, "intercept": float(params[0]),
                    "slope": 1.0 if method == "intercept" else float(params[1]),
                    "rows": len(y)}
        why = fit
    raise DataError(f"{method} recalibration refused on these {len(y)} rows: {why}")


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
