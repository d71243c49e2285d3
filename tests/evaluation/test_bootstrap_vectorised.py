"""The bootstrap computes binary figures for all resamples at once: each resample's figures
equal scikit-learn's on its rows, and the intervals equal those of a plain loop over the
same seeded draws (one ``integers(0, n, n)`` per resample)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from heartflow.evaluation import metrics as M
from heartflow.evaluation.intervals import (
    MAX_UNDEFINED_SHARE,
    bootstrap_intervals,
    paired_difference,
)

NAMES = ["roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"]
EPS = 1e-15


def _sklearn(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The seven figures by scikit-learn (AUC undefined with one class)."""
    p = np.clip(p, 0.0, 1.0)
    pred = (p >= threshold).astype(int)
    return {
        "roc_auc": roc_auc_score(y, p) if len(set(y)) == 2 else math.nan,
        "accuracy": accuracy_score(y, pred),
        "precision": precision_score(y, pred, zero_division=0),
        "recall": recall_score(y, pred, zero_division=0),
        "f1": f1_score(y, pred, zero_division=0),
        "log_loss": log_loss(y, np.clip(p, EPS, 1 - EPS), labels=[0, 1]),
        "brier": brier_score_loss(y, p, pos_label=1),
    }


def _by_hand(y: np.ndarray, p: np.ndarray, threshold: float,
             auc: bool = True) -> dict[str, float]:
    """The same figures counted here (AUC from every case/non-case pair, ties 1/2)."""
    p = np.clip(p, 0.0, 1.0)
    pred, truth = p >= threshold, y == 1
    tp, fp, fn = np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    cases, others = p[truth][:, None], p[~truth][None, :]
    pairs = cases.size * others.size if auc else 0
    q = np.clip(p, EPS, 1 - EPS)
    return {
        "roc_auc": (np.sum(cases > others) + np.sum(cases == others) / 2) / pairs
        if pairs else math.nan,
        "accuracy": np.mean(pred == truth), "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "log_loss": -np.mean(np.where(truth, np.log(q), np.log(1 - q))),
        "brier": np.mean((p - y) ** 2),
    }


def _case(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and outputs with many ties, exact 0 and 1, and a few outside [0, 1]."""
    y = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(float)
    y[:2] = [0.0, 1.0]
    levels = int(rng.choice([3, 10, 1000]))
    p = np.round(np.clip(0.3 * y + 0.8 * rng.random(n), 0, 1) * levels) / levels
    p[rng.random(n) < 0.1] = 0.0
    p[rng.random(n) < 0.1] = 1.0
    p[rng.random(n) < 0.03] = rng.choice([-0.2, 1.3])
    return y, p


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=0)


def test_each_resample_equals_scikit_learn() -> None:
    rng = np.random.default_rng(7)
    for case in range(18):
        n = int(rng.integers(5, 301))
        y, p = _case(rng, n)
        rows = rng.integers(0, n, (6, int(rng.integers(2, n + 1))))
        rows[0] = np.flatnonzero(y == 1)[rng.integers(0, np.sum(y == 1), rows.shape[1])]
        rows[1] = np.flatnonzero(y == 0)[rng.integers(0, np.sum(y == 0), rows.shape[1])]
        threshold = [0.0, 1.0, 0.5, float(p[rows[2, 0]]), 1.1, rng.random()][case % 6]
        got = M.binary_metrics_resampled(y, p, rows, threshold, NAMES)
        for k, i in enumerate(rows):
            reference, hand = _sklearn(y[i], p[i], threshold), _by_hand(y[i], p[i], threshold)
            for name in NAMES:
                assert _close(got[name][k], reference[name]), (case, k, name)
                assert _close(hand[name], reference[name]), (case, k, name)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_output_makes_every_resample_undefined(bad: float) -> None:
    y, p = _case(np.random.default_rng(1), 30)
    p[4] = bad
    got = M.binary_metrics_resampled(y, p, np.random.default_rng(2).integers(0, 30, (5, 30)),
                                     0.5, NAMES)
    assert all(np.isnan(got[name]).all() for name in NAMES)


def test_figures_it_cannot_compute_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="pr_auc"):
        M.binary_metrics_resampled(np.array([0.0, 1.0]), np.array([0.2, 0.7]),
                                   np.array([[0, 1]]), 0.5, ["roc_auc", "pr_auc"])


def _reference_draws(n: int, seed: int, statistic) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([statistic(rng.integers(0, n, n)) for _ in range(1000 if n <= 5000
                                                                     else 200)])


def _reference_interval(values: np.ndarray) -> tuple[float, float, int]:
    defined = values[~np.isnan(values)]
    missing = len(values) - len(defined)
    if missing > MAX_UNDEFINED_SHARE * len(values) or not len(defined):
        return math.nan, math.nan, missing
    low, high = np.percentile(defined, [2.5, 97.5])
    return float(low), float(high), missing


@pytest.mark.parametrize("n, seed", [(9, 3), (65, 0), (5001, 5)])
def test_intervals_equal_a_plain_loop_over_the_same_draws(n: int, seed: int) -> None:
    rng = np.random.default_rng(n)
    y, p = _case(rng, n)
    # 5,001 rows: 200 resamples in blocks of 99 (intervals.BLOCK); AUC by scikit-learn there
    names = NAMES if n < 5000 else ["roc_auc", "f1", "log_loss"]
    undefined: dict[str, int] = {}
    got = bootstrap_intervals("binary", y, p, 0.5, names, seed, undefined)

    def by_hand(i: np.ndarray) -> list[float]:
        if n < 5000:
            return [_by_hand(y[i], p[i], 0.5)[m] for m in names]
        hand = _by_hand(y[i], p[i], 0.5, auc=False)
        return [roc_auc_score(y[i], np.clip(p[i], 0, 1)), hand["f1"], hand["log_loss"]]

    draws = _reference_draws(n, seed, by_hand)
    for k, name in enumerate(names):
        low, high, missing = _reference_interval(draws[:, k])
        assert _close(got[name][0], low) and _close(got[name][1], high), name
        assert undefined.get(name, 0) == missing, name
    if n == 9:
        assert undefined.get("roc_auc", 0) > 0  # the case exercises undefined resamples


@pytest.mark.parametrize("metric", ["roc_auc", "f1", "log_loss"])
def test_paired_difference_equals_a_plain_loop(metric: str) -> None:
    rng = np.random.default_rng(11)
    y, first = _case(rng, 65)
    second = np.clip(first + rng.normal(0, 0.2, 65), 0, 1)
    got = paired_difference("binary", y, first, second, 0.5, metric, 4, second_threshold=0.4)

    def diff(i: np.ndarray) -> float:
        return (_by_hand(y[i], first[i], 0.5)[metric]
                - _by_hand(y[i], second[i], 0.4)[metric])

    low, high, _missing = _reference_interval(_reference_draws(65, 4, diff))
    point = _sklearn(y, first, 0.5)[metric] - _sklearn(y, second, 0.4)[metric]
    assert _close(got[0], point) and _close(got[1], low) and _close(got[2], high)
