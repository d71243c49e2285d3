"""Uncertainty of the figures heartflow shows: bootstrap intervals of metrics, and paired
comparisons of two models on the same rows (scipy.stats).

Percentile bootstrap over the scored rows (1,000 seeded resamples; 200 above 5,000 rows):
it needs no assumption about the metric's distribution and works the same for every
metric. It is written here rather than calling scipy.stats.bootstrap, whose per-resample
overhead for a non-vectorised statistic tripled the time (1.4 s against 0.35 s for 61 rows).
Binary figures other than the PR AUC, on finite outputs, are computed for a block of
resamples at once (:func:`metrics.binary_metrics_resampled`: counts by ``np.bincount``, no
sort per resample), with the same figures as one resample at a time: the seven binary
figures' intervals took 2 ms instead of 79 ms on 65 rows, 0.11 s instead of 0.36 s on 20,000
rows (a paired AUC difference: 2 ms instead of 148 ms; 0.11 s instead of 0.69 s). Other
figures keep the loop over resamples. The resamples' indices come from one seeded generator
in the same order either way. Above ``MAX_ROWS`` rows a seeded random subset is resampled,
which makes the interval wider (conservative), never narrower. Paired fold comparisons use
scipy's Student t.

A figure can be undefined on some resamples (an AUC on one without a case). The interval
of the others is shown only while they are at most ``MAX_UNDEFINED_SHARE`` of the
resamples; past that it is withheld (NaN), and the count of undefined resamples is
reported either way.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from heartflow.evaluation import metrics as M

RESAMPLES = 1000
MAX_ROWS = 20_000
BLOCK = 500_000
"""Most row indices resampled at once by the vectorised bootstrap (bounds its memory to some
tens of MB: 25 resamples of 20,000 rows)."""
MAX_UNDEFINED_SHARE = 0.10
"""Largest share of bootstrap resamples on which a figure may be undefined for its interval to
be shown. The defined resamples are not a random sample of the resamples (for an AUC, those
that happened to draw a case), so past this share their percentiles describe a different,
more favourable population than the rows: the interval is withheld (NaN)."""


def _subset(n: int, seed: int) -> np.ndarray:
    if n <= MAX_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_ROWS, replace=False))


def _resamples(n: int) -> int:
    return RESAMPLES if n <= 5000 else 200


def _index_blocks(n: int, seed: int):
    """The resamples' row indices of ``n`` rows, as (resamples, n) blocks of at most
    ``BLOCK`` entries: the seeded generator's numbers in the same order as drawing
    ``integers(0, n, n)`` one resample at a time (the tests check this)."""
    rng = np.random.default_rng(seed)
    total, per = _resamples(n), max(1, BLOCK // max(n, 1))
    for start in range(0, total, per):
        yield rng.integers(0, n, (min(per, total - start), n))


def _bootstrap(n: int, statistic, seed: int) -> np.ndarray:
    """statistic(row indices) over resamples of ``n`` rows: an array (resamples, values)."""
    return np.array([statistic(i) for block in _index_blocks(n, seed) for i in block])


def _bootstrap_rows(n: int, statistic, seed: int) -> np.ndarray:
    """statistic((resamples, n) row indices) -> (resamples, values), over the same resamples
    as :func:`_bootstrap`, one block at a time."""
    return np.concatenate([statistic(block) for block in _index_blocks(n, seed)])


def _vectorised(task: str, names: list[str], y: np.ndarray, *outputs: np.ndarray) -> bool:
    """Whether :func:`metrics.binary_metrics_resampled` computes these figures: a binary task,
    only its names, one label and one finite output per row."""
    return (task == "binary" and set(names) <= set(M.ROW_NAMES) and y.size == len(y)
            and all(o.size == len(o) and M.all_finite(o) for o in outputs))


def _percentiles(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2.5th and 97.5th percentiles of each column of (resamples, figures) over its defined
    resamples, and how many were undefined (NaN); bounds NaN past ``MAX_UNDEFINED_SHARE``."""

    undefined = np.isnan(draws).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: undefined
        low = np.nanpercentile(draws, 2.5, axis=0)
        high = np.nanpercentile(draws, 97.5, axis=0)
    withheld = undefined > MAX_UNDEFINED_SHARE * len(draws)
    low, high = np.where(withheld, np.nan, low), np.where(withheld, np.nan, high)
    return low, high, undefined


def bootstrap_intervals(task: str, y: np.ndarray, output: np.ndarray, threshold: float,
                        names: list[str], seed: int = 0,
                        undefined: dict[str, int] | None = None
                        ) -> dict[str, tuple[float, float]]:
    """95% percentile-bootstrap interval of each metric (NaN bounds when undefined, or when
    undefined on more than ``MAX_UNDEFINED_SHARE`` of the resamples). ``undefined``, when
    given, receives the number of undefined resamples of each metric that had any."""
    rows = _subset(len(y), seed)
    y, output = np.asarray(y)[rows], np.asarray(output)[rows]
    if len(rows) < 2 or not names:
        return {m: (math.nan, math.nan) for m in names}

    def statistic(i: np.ndarray) -> list[float]:
        values = M.compute(task, y[i], output[i], threshold, names)
        return [values[m] for m in names]

    def rows_statistic(i: np.ndarray) -> np.ndarray:
        values = M.binary_metrics_resampled(y, output, i, threshold, names)
        return np.column_stack([values[m] for m in names])

    if _vectorised(task, names, y, output):
        draws = _bootstrap_rows(len(rows), rows_statistic, seed)
    else:
        draws = _bootstrap(len(rows), statistic, seed)
    low, high, missing = _percentiles(draws)
    if undefined is not None:
        undefined.update({m: int(missing[k]) for k, m in enumerate(names) if missing[k]})
    return {m: (float(low[k]), float(high[k])) for k, m in enumerate(names)}


def paired_difference(task: str, y: np.ndarray, first: np.ndarray, second: np.ndarray,
                      threshold: float, metric: str, seed: int = 0,
                      second_threshold: float | None = None) -> tuple[float, float, float]:
    """metric(first) - metric(second) on the same rows, with its 95% bootstrap interval
    (the second model at ``second_threshold`` when it has its own)."""
    rows = _subset(len(y), seed)
    y, first, second = np.asarray(y)[rows], np.asarray(first)[rows], np.asarray(second)[rows]
    other = threshold if second_threshold is None else second_threshold

    def diff(i: np.ndarray) -> list[float]:
        return [M.compute(task, y[i], first[i], threshold, [metric])[metric]
                - M.compute(task, y[i], second[i], other, [metric])[metric]]

    def rows_diff(i: np.ndarray) -> np.ndarray:
        return (M.binary_metrics_resampled(y, first, i, threshold, [metric])[metric]
                - M.binary_metrics_resampled(y, second, i, other, [metric])[metric])[:, None]

    if _vectorised(task, [metric], y, first, second):
        draws = _bootstrap_rows(len(rows), rows_diff, seed)
    else:
        draws = _bootstrap(len(rows), diff, seed)
    low, high, _undefined = _percentiles(draws)
    return float(diff(np.arange(len(rows)))[0]), float(low[0]), float(high[0])


def paired_fold_difference(first: list[float], second: list[float]) -> tuple[float, float,
                                                                             float]:
    """Mean fold-by-fold difference with a Student t 95% interval (same folds for both)."""
    # lazy: SciPy's stats (0.3 s), only when an interval is computed
    from scipy.stats import t

    d = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return float(np.mean(d)) if len(d) else math.nan, math.nan, math.nan
    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)
