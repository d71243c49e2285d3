"""Runs are chosen on development rows, never on test rows; uncertainty is shown and the
leader is compared with the runner-up on the same rows."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from heartflow.evaluation.intervals import (
    bootstrap_intervals,
    paired_difference,
    paired_fold_difference,
)
from heartflow.evaluation.ranking import choose


def _run(**fields) -> SimpleNamespace:
    """A finished run as the ranking reads it (a RunOutcome's fields)."""
    return SimpleNamespace(**{"cv": {}, "cv_scores": {}, "validation": {},
                              "validation_output": [], "validation_labels": [], **fields})


def _outcome(run_id: str, validation: float, test: float, **extra) -> SimpleNamespace:
    return _run(run_id=run_id, validation={"roc_auc": validation},
                metrics={"roc_auc": test}, **extra)


def test_best_on_test_but_worst_on_validation_is_not_chosen() -> None:
    trials = [_outcome("a" * 32, validation=0.70, test=0.99),
              _outcome("b" * 32, validation=0.90, test=0.80),
              _outcome("c" * 32, validation=0.80, test=0.85)]
    choice = choose(trials, "roc_auc", "binary", 0.5)
    assert [o.run_id[0] for o in choice["ranked"]] == ["b", "c", "a"]
    assert choice["source"] == "validation"


def test_lower_is_better_metrics_and_undefined_figures() -> None:
    trials = [_run(run_id="x" * 32, validation={"log_loss": 0.50}),
              _run(run_id="y" * 32, validation={"log_loss": math.nan}),
              _run(run_id="z" * 32, validation={"log_loss": 0.40})]
    choice = choose(trials, "log_loss", "binary", 0.5)
    assert [o.run_id[0] for o in choice["ranked"]] == ["z", "x"]  # NaN never chosen


def test_cross_validation_wins_over_validation_and_is_compared_fold_by_fold() -> None:
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(0)
    base = rng.uniform(0.80, 0.90, 10)
    close = base + rng.normal(0, 0.01, 10)        # same quality, noise only
    better = base + 0.05 + rng.normal(0, 0.005, 10)
    for other, should_differ in ((close, False), (better, True)):
        trials = [_run(run_id="l" * 32, cv={"roc_auc": [float(other.mean()), 0.0]},
                       cv_scores={"roc_auc": other.tolist()}, validation={"roc_auc": 0.1}),
                  _run(run_id="r" * 32, cv={"roc_auc": [float(base.mean()), 0.0]},
                       cv_scores={"roc_auc": base.tolist()}, validation={"roc_auc": 0.9})]
        choice = choose(trials, "roc_auc", "binary", 0.5)
        assert choice["source"] == "cv"
        leader, runner = choice["ranked"][0], choice["ranked"][1]
        a, b = np.array(leader.cv_scores["roc_auc"]), np.array(runner.cv_scores["roc_auc"])
        # The interval excludes 0 exactly when scipy's paired t-test rejects at 5%.
        assert choice["distinguishable"] == (ttest_rel(a, b).pvalue < 0.05)
        assert choice["distinguishable"] is should_differ


def test_paired_bootstrap_on_the_same_validation_rows() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    good = np.clip(0.5 * y + 0.5 * rng.random(400), 0, 1)
    noisy = rng.random(400)
    trials = [_outcome("g" * 32, 0.9, 0.9, validation_output=good.tolist(),
                       validation_labels=y.tolist()),
              _outcome("n" * 32, 0.5, 0.5, validation_output=noisy.tolist(),
                       validation_labels=y.tolist())]
    choice = choose(trials, "roc_auc", "binary", 0.5)
    assert choice["distinguishable"] is True and "400 validation rows" in choice["summary"]
    same = paired_difference("binary", y, good, good, 0.5, "roc_auc")
    assert same == (0.0, 0.0, 0.0)


def test_bootstrap_interval_of_accuracy_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.8, y, 1 - y).astype(float)  # 80% right
    accuracy = float(np.mean((p >= 0.5) == y))
    low, high = bootstrap_intervals("binary", y, p, 0.5, ["accuracy"])["accuracy"]
    half = 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)
    assert low == pytest.approx(accuracy - half, abs=0.012)
    assert high == pytest.approx(accuracy + half, abs=0.012)


def test_fold_difference_interval_is_students_t() -> None:
    from scipy import stats

    a, b = [0.8, 0.85, 0.83, 0.9, 0.86], [0.78, 0.8, 0.84, 0.85, 0.8]
    mean, low, high = paired_fold_difference(a, b)
    d = np.subtract(a, b)
    ref = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (low, high) == pytest.approx(ref) and mean == pytest.approx(d.mean())
