"""Classical baselines (scikit-learn) on the network's exact split and encoding."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from heartflow.evaluation import metrics as M
from heartflow.evaluation.cv import cross_validate


@dataclass
class BaselineResult:
    """A fitted baseline's test metrics (and its cross-validation, when the spec asks)."""

    name: str
    metrics: dict[str, float]
    seconds: float
    params: dict[str, str]
    cv: Any = None  # heartflow.evaluation.cv.CVSummary
    validation: dict[str, float] | None = None
    test_output: np.ndarray | None = None  # per test row, in the split's order (the gate)

    def scores(self) -> dict[str, float]:
        """Test metrics, plus cv_<metric> and cv_<metric>_ci95 when cross-validated."""
        out = dict(self.metrics)
        if self.cv is not None:
            out.update({f"cv_{m}": self.cv.mean(m) for m in self.cv.scores})
            out.update({f"cv_{m}_ci95": self.cv.ci95(m) for m in self.cv.scores})
        return out


def make_baseline(name: str, task: str, seed: int):
    """An unfitted scikit-learn estimator for ``name``."""
    # lazy: scikit-learn (1 s), only when a baseline is fitted
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )

    # lazy: scikit-learn (1 s), only when a baseline is fitted
    from sklearn.linear_model import LogisticRegression

    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1)
    if name == "gradient_boosting":
        return HistGradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown baseline {name!r}")


def fit_score(name: str, task: str, seed: int, x_train: np.ndarray, y_train: np.ndarray,
              x_test: np.ndarray, y_test: np.ndarray, threshold: float,
              metrics: list[str]) -> BaselineResult:
    """Fit on the training rows, score the test rows with the spec's metrics."""
    model = make_baseline(name, task, seed)
    start = time.perf_counter()
    model.fit(x_train, y_train.astype(np.int64))
    seconds = time.perf_counter() - start
    proba = model.predict_proba(x_test)
    output = proba[:, 1] if task == "binary" else proba
    values = M.compute(task, y_test, output, threshold, metrics)
    params = {k: str(v) for k, v in model.get_params().items()
              if isinstance(v, (int, float, str, bool)) or v is None}
    return BaselineResult(name=name, metrics=values, seconds=seconds, params=params,
                          test_output=np.asarray(output))


def run_baseline(name: str, spec: Any, data: Any, threshold: float) -> BaselineResult:
    """Fit ``name`` on the run's training rows, score its test rows at the run's ``threshold``;
    cross-validate if asked."""
    x_train, y_train = data.part("train")
    x_test, y_test = data.part("test")
    result = fit_score(name, spec.task, spec.train.seed, x_train, y_train, x_test, y_test,
                       threshold, spec.metrics)
    x_val, y_val = data.part("validation")
    if len(x_val):  # the development-row figure runs are ranked by
        result.validation = fit_score(name, spec.task, spec.train.seed, x_train, y_train,
                                      x_val, y_val, threshold, spec.metrics).metrics
    if spec.evaluate.cv is not None:

        def fit_and_predict(xtr, ytr, xval, yval, xte):
            model = make_baseline(name, spec.task, spec.train.seed)
            model.fit(xtr, ytr.astype(np.int64))
            proba = model.predict_proba(xte)
            return proba[:, 1] if spec.task == "binary" else proba

        result.cv = cross_validate(spec, data.development(), fit_and_predict,
                                   use_validation=False, threshold=threshold)
    return result
