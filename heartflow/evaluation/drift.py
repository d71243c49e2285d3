"""Keeping a deployed model honest: a reference of its development population, stored with
the model when it is trained, and checks of a later batch of rows against it.

**The reference** (:class:`Reference`, ``monitoring/reference.json`` with the training run)
holds no patient row and no statistic resting on fewer than :data:`MIN_CELL` patients:

- per numeric variable (the spec's raw columns, not the one-hot inputs): the missing
  share; bins for the population stability index (deciles of the development rows, fewer
  when rows are few, merged until each holds at least 5 rows) with their shares; the
  cumulative distribution at its quantiles (levels 1 %..99 % in steps that leave at least
  5 rows between two of them) and at every value at least 5 rows share (a discrete
  variable's atoms); the development range between the lowest and highest of those
  quantiles, and the share of rows outside it;
- per categorical variable: the missing share and each level's share; levels with fewer
  than 5 rows are pooled, counted (``rare``) but not named, and a pool of fewer than 5 rows
  is merged into the smallest level's cell;
- the development risks' distribution (as for a numeric variable), for prediction drift;
- the development figures: the test rows' ROC AUC, calibration intercept and slope, Brier
  score and net benefit at the model's threshold, each with its 95% interval
  (:func:`heartflow.evaluation.clinical.clinical_report`) and the rows they rest on;
- the thresholds of the spec's ``monitor:`` section, so the model is judged by the rules it
  was trained with.

A missing share (or a share outside the range) of 1 to 4 rows is stored as the share of 5
rows, an upper bound (marked ``missing_suppressed``); the tests that use it become
conservative. 1 to 4 rows beyond a value many rows share at either end of the range join
that value's mass.

**The checks** (:func:`judge_batch`) give each check an effect size, a threshold and a
p-value; a check reports drift only when the effect passes its threshold *and* the p-value
is below ``monitor.p_value`` (large batches make every p-value small, small batches make
effect sizes noisy). Every p-value is two-sample: the reference is itself a sample.

- ``<var>.psi``: PSI over the reference's bins (an empty bin counts as a share of 0.0001);
  p-value: chi-square test of homogeneity of the batch's and the reference's bin counts
  (``scipy.stats.chi2_contingency``), sparse cells merged until every expected count is
  at least 5. For a categorical variable the bins are its levels.
- ``<var>.ks`` (numeric): Kolmogorov-Smirnov distance between the batch and the
  reference's cumulative distribution (linear between the stored quantiles; a tie of batch
  values on a stored atom, or beyond the range, spread evenly over the reference's mass
  there: the deterministic form of the randomised probability integral transform, so a
  discrete variable is not taken for a shift), via ``scipy.stats.kstest`` against the
  uniform; p-value from the two-sample distribution with the effective size
  ``n m / (n + m)``, as ``scipy.stats.ks_2samp(method="asymp")`` does.
- ``<var>.missing``: the batch's missing share against the reference's plus
  ``monitor.missing_share``; one-sided Fisher exact test. A column missing in every row
  is drift by this check, never an error.
- ``<var>.out_of_range`` (numeric): the share of values outside the development range
  against the reference's own share plus ``monitor.out_of_range``; one-sided Fisher test.
- ``risk.psi`` and ``risk.ks``: the same for the model's risks (prediction drift).
- with outcomes: ``roc_auc`` (fall), ``calibration_intercept`` and ``calibration_slope``
  (change), ``brier`` (rise) and ``net_benefit@<threshold>`` (fall) against the
  development figures; z-test of the difference with standard errors from both 95%
  intervals.

A check the batch is too small for (``monitor.min_rows`` rows with a value;
``monitor.min_events`` rows with and without the outcome for ROC AUC, the slope and net
benefit, 5 of each for the intercept and Brier score) is skipped with its reason, never
guessed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.batches import CHUNK_ROWS, is_large_file, typed_chunks
from heartflow.data.dataset import binary_outcome, prepare_features
from heartflow.data.sources import NAMED_DATASETS, file_sha256, resolve_source
from heartflow.data.table import read_csv
from heartflow.errors import DataError
from heartflow.evaluation.clinical import ClinicalReport, clinical_report
from heartflow.model.meta import ModelMeta
from heartflow.model.scorer import network_output
from heartflow.spec.schema import MonitorSpec

FORMAT = "heartflow.monitor-reference/1"
MIN_CELL = 5  # no stored statistic rests on fewer patients; no bin or level holds fewer
MAX_BINS = 10  # PSI bins: deciles
MAX_ATOMS = 500  # most common values kept as atoms of a numeric variable's distribution
SMALL_SHARE = 1e-4  # an empty bin's share in the PSI (else the logarithm is infinite)
Z95 = 1.959963984540054
PERFORMANCE = ("roc_auc", "calibration_intercept", "calibration_slope", "brier")
RISK = "risk"


def _f(value: Any) -> float | None:
    """A JSON number: None for NaN or infinity."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


# -- the reference ------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    """A numeric variable's (or the risks') development distribution, summarised.

    PSI bins are ``(-inf, e0], (e0, e1], ..., (e_last, inf)`` for the inner ``edges``. The
    cumulative distribution is known at ``knots``: ``below`` is the share of rows under a
    knot and ``at_or_below`` the share at or under it (they differ at an atom, a value at
    least 5 rows share); between knots it is linear. ``low``..``high`` is the development
    range, ``outside`` the development rows' share outside it.
    """

    rows: int
    edges: tuple[float, ...]
    shares: tuple[float, ...]
    knots: tuple[float, ...]
    below: tuple[float, ...]
    at_or_below: tuple[float, ...]
    low: float
    high: float
    outside: float

    @classmethod
    def of(cls, values: np.ndarray) -> Distribution | None:
        """The summary of the finite ``values``; None when fewer than 10 rows hold one."""
        v = np.sort(np.asarray(values, dtype=np.float64))
        v = v[np.isfinite(v)]
        n = len(v)
        if n < 2 * MIN_CELL:
            return None
        edges = _psi_edges(v)
        counts = np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1)
        step = max(0.01, MIN_CELL / (n - 1))  # >= 5 rows below the first, between, above
        levels = np.arange(1, math.floor(1 / step + 1e-9) + 1) * step
        levels = levels[levels <= 1 - step + 1e-12]
        if not len(levels):  # too few rows for 5 below and 5 above: the median only
            levels = np.array([0.5])
        quantiles = np.quantile(v, levels)
        low, high = float(quantiles[0]), float(quantiles[-1])
        distinct, ties = np.unique(v, return_counts=True)
        common = distinct[(ties >= MIN_CELL) & (distinct >= low) & (distinct <= high)]
        if len(common) > MAX_ATOMS:
            common = np.sort(distinct[np.argsort(-ties, kind="stable")[:MAX_ATOMS]])
            common = common[(common >= low) & (common <= high)]
        plain = ~np.isin(quantiles, common)
        knots = np.concatenate([quantiles[plain], common])
        below = np.concatenate([levels[plain], np.searchsorted(v, common, side="left") / n])
        at = np.concatenate([levels[plain], np.searchsorted(v, common, side="right") / n])
        atom = np.r_[np.zeros(int(plain.sum()), bool), np.ones(len(common), bool)]
        order = np.argsort(knots, kind="stable")
        knots, below, at, atom = knots[order], below[order], at[order], atom[order]
        knots, first = np.unique(knots, return_index=True)  # equal quantiles: one knot
        below, at, atom = below[first], at[first], atom[first]
        # A quantile's level lies between its neighbouring atoms' exact shares.
        after = np.maximum.accumulate(np.where(atom, at, 0.0))
        before = np.minimum.accumulate(np.where(atom, below, 1.0)[::-1])[::-1]
        level = np.clip(at, after, np.maximum(before, after))
        below, at = np.where(atom, below, level), np.where(atom, at, level)
        if atom[0] and 0 < below[0] * n < MIN_CELL - 1e-9:  # 1-4 rows below a low atom
            below[0] = 0.0  # join the atom (no cell of fewer than 5 rows)
        if atom[-1] and 0 < (1 - at[-1]) * n < MIN_CELL - 1e-9:  # ... above a high one
            at[-1] = 1.0
        at = np.maximum.accumulate(at)
        below = np.minimum(below, at)
        outside = _missing(int(np.sum((v < low) | (v > high))), n)[0]
        return cls(n, tuple(map(float, edges)), tuple(map(float, counts / n)),
                   tuple(map(float, knots)), tuple(map(float, below)), tuple(map(float, at)),
                   low, high, outside)

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Rows of ``values`` in each PSI bin."""
        return np.bincount(np.searchsorted(np.asarray(self.edges), values, side="left"),
                           minlength=len(self.edges) + 1)

    def reference_counts(self) -> np.ndarray:
        """Development rows in each PSI bin."""
        return np.rint(np.asarray(self.shares) * self.rows).astype(np.int64)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """The reference's cumulative distribution, linear between knots, for values inside
        the range (a value on an atom gets the share at or below it)."""
        k, at, below = (np.asarray(a) for a in (self.knots, self.at_or_below, self.below))
        x = np.asarray(x, dtype=np.float64)
        j = np.clip(np.searchsorted(k, x, side="right") - 1, 0, len(k) - 1)
        nxt = np.minimum(j + 1, len(k) - 1)
        width = np.where(nxt > j, k[nxt] - k[j], 1.0)
        inner = at[j] + (below[nxt] - at[j]) * np.clip((x - k[j]) / width, 0, 1)
        return np.where((x <= k[j]) | (nxt == j), at[j], inner)

    def pit(self, values: np.ndarray) -> np.ndarray:
        """The probability integral transform of ``values`` through the reference: uniform
        on [0, 1] when they come from it. Values on an atom, and values beyond the first or
        last knot, are spread evenly (in their order) over the reference's mass there."""
        x = np.sort(np.asarray(values, dtype=np.float64))
        k, at, below = (np.asarray(a) for a in (self.knots, self.at_or_below, self.below))
        u = self.cdf(x)
        pos = np.searchsorted(k, x, side="left")
        on_knot = (pos < len(k)) & (k[np.minimum(pos, len(k) - 1)] == x)
        group = np.full(len(x), -2)  # -2: the continuous part
        group[x < k[0]] = -1
        group[x > k[-1]] = len(k)
        group[on_knot] = pos[on_knot]
        lows = np.concatenate([[0.0], below, [at[-1]]])  # index group + 1
        highs = np.concatenate([[below[0]], at, [1.0]])
        spread = group > -2
        if spread.any():
            g = group[spread]  # x is sorted, so g is too, each group's values in order
            start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])  # (np.unique would sort)
            count = np.diff(np.r_[start, len(g)])
            rank = np.arange(len(g)) - np.repeat(start, count)
            size = np.repeat(count, count)
            u[spread] = lows[g + 1] + (highs[g + 1] - lows[g + 1]) * (rank + 0.5) / size
        return u

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"rows": self.rows, "edges": list(self.edges), "shares": list(self.shares),
                "knots": list(self.knots), "below": list(self.below),
                "at_or_below": list(self.at_or_below), "low": self.low, "high": self.high,
                "outside": self.outside}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Distribution | None:
        """The inverse of :meth:`as_dict`."""
        if not d:
            return None
        return cls(int(d["rows"]), tuple(d["edges"]), tuple(d["shares"]), tuple(d["knots"]),
                   tuple(d["below"]), tuple(d["at_or_below"]), float(d["low"]),
                   float(d["high"]), float(d["outside"]))


def _psi_edges(v: np.ndarray) -> np.ndarray:
    """Inner edges of quantile bins of sorted values (deciles, fewer with few rows), merged
    until every bin holds at least :data:`MIN_CELL` rows."""
    n = len(v)
    k = max(1, min(MAX_BINS, n // MIN_CELL))
    edges = np.unique(np.quantile(v, np.arange(1, k) / k)) if k > 1 else np.array([])
    while len(edges):
        counts = np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1)
        small = int(np.argmin(counts))
        if counts[small] >= MIN_CELL:
            break
        if small == 0:
            drop = 0
        elif small == len(counts) - 1:
            drop = small - 1
        else:  # merge with the smaller neighbour
            drop = small - 1 if counts[small - 1] <= counts[small + 1] else small
        edges = np.delete(edges, drop)
    return edges


def _missing(count: int, rows: int) -> tuple[float, bool]:
    """The stored share of ``count`` rows (missing, or outside the range), and whether it
    was suppressed (1 to 4 rows: the share of 5 rows, an upper bound)."""
    if 0 < count < MIN_CELL:
        return MIN_CELL / rows, True
    return count / rows if rows else 0.0, False


@dataclass(frozen=True)
class NumericReference:
    """A numeric variable of the development rows."""

    column: str
    rows: int
    missing_share: float
    missing_suppressed: bool
    distribution: Distribution | None
    note: str = ""

    @classmethod
    def of(cls, column: str, values: pd.Series) -> NumericReference:
        """From a typed numeric column (NaN = missing)."""
        x = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
        present = np.isfinite(x)
        share, suppressed = _missing(int((~present).sum()), len(x))
        dist = Distribution.of(x[present])
        note = "" if dist else (f"fewer than {2 * MIN_CELL} development rows hold a value: "
                                "no distribution is stored")
        return cls(column, len(x), share, suppressed, dist, note)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"column": self.column, "rows": self.rows, "missing_share": self.missing_share,
                "missing_suppressed": self.missing_suppressed,
                "distribution": self.distribution.as_dict() if self.distribution else None,
                "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumericReference:
        """The inverse of :meth:`as_dict`."""
        return cls(d["column"], int(d["rows"]), float(d["missing_share"]),
                   bool(d.get("missing_suppressed")), Distribution.from_dict(d["distribution"]),
                   d.get("note", ""))


@dataclass(frozen=True)
class CategoricalReference:
    """A categorical variable of the development rows: cells of levels and their shares.

    A cell is one level, or (the ``other`` cell, ``()``) the pool of the ``rare`` levels
    with fewer than 5 rows each, which are counted but not named; it also takes levels the
    development rows never had. A pool of fewer than 5 rows joins the smallest level's cell
    (then ``other`` points there).
    """

    column: str
    rows: int
    missing_share: float
    missing_suppressed: bool
    present: int  # rows with a level
    cells: tuple[tuple[str, ...], ...]
    shares: tuple[float, ...]
    other: int  # the cell of rare and unseen levels (-1: unseen ones get a cell of their own)
    rare: int  # levels with fewer than 5 rows, pooled
    note: str = ""

    @classmethod
    def of(cls, column: str, values: pd.Series) -> CategoricalReference:
        """From a typed categorical column (None = missing)."""
        levels = values.dropna().astype(str)
        share, suppressed = _missing(int(values.isna().sum()), len(values))
        counts = levels.value_counts()
        common = counts[counts >= MIN_CELL]
        rare = int((counts < MIN_CELL).sum())
        pooled = int(counts[counts < MIN_CELL].sum())
        if len(levels) < 2 * MIN_CELL or common.empty:
            return cls(column, len(values), share, suppressed, len(levels), (), (), -1, rare,
                       f"fewer than {2 * MIN_CELL} development rows hold a level, or none "
                       f"holds {MIN_CELL}: no distribution is stored")
        cells: list[tuple[str, ...]] = [(str(level),) for level in common.index]
        sizes = [int(c) for c in common.to_numpy()]
        other = -1
        if pooled >= MIN_CELL:
            cells.append(())
            sizes.append(pooled)
            other = len(cells) - 1
        elif rare:
            other = int(np.argmin(sizes))
            sizes[other] += pooled
        n = len(levels)
        return cls(column, len(values), share, suppressed, n, tuple(cells),
                   tuple(s / n for s in sizes), other, rare)

    def counts(self, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Batch rows per cell, and the reference's rows per cell; levels the reference
        never had go to the ``other`` cell, or to a cell of their own (reference 0)."""
        index = {level: i for i, cell in enumerate(self.cells) for level in cell}
        ref = np.rint(np.asarray(self.shares) * self.present).astype(np.int64)
        got = np.zeros(len(self.cells), dtype=np.int64)
        unseen = 0
        for level, n in values.dropna().value_counts(sort=False).items():
            cell = index.get(str(level), -1)
            if cell < 0:
                unseen += int(n)
            else:
                got[cell] += int(n)
        if unseen and self.other >= 0:
            got[self.other] += unseen
            unseen = 0
        if unseen:
            return np.append(got, unseen), np.append(ref, 0)
        return got, ref

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"column": self.column, "rows": self.rows, "missing_share": self.missing_share,
                "missing_suppressed": self.missing_suppressed, "present": self.present,
                "cells": [list(c) for c in self.cells], "shares": list(self.shares),
                "other": self.other, "rare": self.rare, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalReference:
        """The inverse of :meth:`as_dict`."""
        return cls(d["column"], int(d["rows"]), float(d["missing_share"]),
                   bool(d.get("missing_suppressed")), int(d["present"]),
                   tuple(tuple(c) for c in d["cells"]), tuple(d["shares"]), int(d["other"]),
                   int(d.get("rare", 0)), d.get("note", ""))


@dataclass(frozen=True)
class Figure:
    """A figure with its 95% interval (NaN when undefined or withheld)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    @property
    def se(self) -> float:
        """The standard error its interval implies (NaN without one)."""
        return (self.high - self.low) / (2 * Z95)

    def as_list(self) -> list[float | None]:
        """[value, low, high] for JSON."""
        return [_f(self.value), _f(self.low), _f(self.high)]

    @classmethod
    def of_list(cls, v: Sequence[float | None]) -> Figure:
        """The inverse of :meth:`as_list`."""
        return cls(*(_nan(x) for x in v))


def figures_of(report: Any, threshold: float) -> dict[str, Figure]:
    """The judged figures of a :class:`~heartflow.evaluation.clinical.ClinicalReport`."""
    names = [*PERFORMANCE, net_benefit_name(threshold)]
    return {n: Figure(report.values.get(n, math.nan),
                      *report.intervals.get(n, (math.nan, math.nan))) for n in names}


def net_benefit_name(threshold: float) -> str:
    """The name clinical_report gives the net benefit at ``threshold``."""
    return f"net_benefit@{threshold:g}"


@dataclass(frozen=True)
class DevelopmentFigures:
    """The test rows' figures at the model's threshold, and the rows they rest on."""

    rows: int
    events: int
    threshold: float
    figures: dict[str, Figure]
    part: str = "test"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"rows": self.rows, "events": self.events, "threshold": self.threshold,
                "part": self.part, "figures": {k: f.as_list() for k, f in self.figures.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DevelopmentFigures | None:
        """The inverse of :meth:`as_dict`."""
        if not d:
            return None
        return cls(int(d["rows"]), int(d["events"]), float(d["threshold"]),
                   {k: Figure.of_list(v) for k, v in d["figures"].items()}, d.get("part", "test"))


@dataclass(frozen=True)
class Reference:
    """What a batch is judged against (see the module docstring)."""

    numeric: tuple[NumericReference, ...]
    categorical: tuple[CategoricalReference, ...]
    risks: Distribution | None
    development: DevelopmentFigures | None
    thresholds: dict[str, Any]  # MonitorSpec fields
    rows: int
    part: str = "development rows (train + validation)"
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, features: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str], *,
           risks: np.ndarray | None = None, test_y: np.ndarray | None = None,
           test_p: np.ndarray | None = None, threshold: float | None = None,
           test_report: ClinicalReport | None = None, rules: MonitorSpec | None = None,
           seed: int = 0, part: str = "development rows (train + validation)") -> Reference:
        """The reference of typed development rows ``features`` (their ``risks`` for
        prediction drift) and the development figures at ``threshold``: those of
        ``test_report`` (the run's clinical report of its test rows) when it holds the net
        benefit at ``threshold``, else computed from ``test_y`` and ``test_p``."""
        development = None
        if threshold is not None:
            report = test_report
            if report is None or net_benefit_name(threshold) not in report.values:
                report = (clinical_report(test_y, test_p, threshold, (threshold,), seed=seed)
                          if test_y is not None and test_p is not None else None)
            if report is not None:
                development = DevelopmentFigures(
                    report.rows, round(report.values["prevalence"] * report.rows),
                    float(threshold), figures_of(report, threshold))
        return cls(tuple(NumericReference.of(c, features[c]) for c in numeric),
                   tuple(CategoricalReference.of(c, features[c]) for c in categorical),
                   Distribution.of(risks) if risks is not None else None, development,
                   (rules or MonitorSpec()).model_dump(), len(features), part)

    @property
    def rules(self) -> MonitorSpec:
        """The thresholds the model was trained with (defaults for any it lacks)."""
        known = set(MonitorSpec.model_fields)
        return MonitorSpec(**{k: v for k, v in self.thresholds.items() if k in known})

    @property
    def columns(self) -> list[str]:
        """The raw variables it describes, numeric first."""
        return [*(r.column for r in self.numeric), *(r.column for r in self.categorical)]

    def without_predictions(self, note: str) -> Reference:
        """A copy without risks and development figures (they no longer describe the
        model's output, e.g. after recalibration), saying why."""
        return replace(self, risks=None, development=None, notes=(*self.notes, note))

    def to_json(self) -> str:
        """Versioned JSON text (``monitoring/reference.json``)."""
        return json.dumps({
            "format": FORMAT, "rows": self.rows, "part": self.part,
            "thresholds": self.thresholds, "notes": list(self.notes),
            "numeric": [r.as_dict() for r in self.numeric],
            "categorical": [r.as_dict() for r in self.categorical],
            "risks": self.risks.as_dict() if self.risks else None,
            "development": self.development.as_dict() if self.development else None},
            indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Reference:
        """Read a reference written by :meth:`to_json`."""
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise DataError(f"monitoring reference format {d.get('format')!r} is not one this "
                            f"heartflow reads ({FORMAT}); upgrade heartflow")
        return cls(tuple(NumericReference.from_dict(r) for r in d["numeric"]),
                   tuple(CategoricalReference.from_dict(r) for r in d["categorical"]),
                   Distribution.from_dict(d.get("risks")),
                   DevelopmentFigures.from_dict(d.get("development")),
                   dict(d.get("thresholds") or {}), int(d["rows"]), d.get("part", ""),
                   tuple(d.get("notes") or ()))


def development_reference(spec: Any, data: Any, network: Any, threshold: float | None,
                          test_report: ClinicalReport | None = None) -> Reference:
    """The reference of in-memory prepared data (``heartflow.data.prepare.Prepared``): the
    development rows' variables and risks, the test rows' figures at ``threshold`` (from
    ``test_report``, the run's clinical report of them, when it has them all)."""
    rows = np.sort(np.concatenate([data.split.train, data.split.validation]))
    features = data.dataset.features.iloc[rows].reset_index(drop=True)
    feats = spec.data.features
    binary = spec.task == "binary" and threshold is not None
    risks = test_y = test_p = None
    if binary:
        risks = network_output(network, data.x[rows]).reshape(-1)
        if test_report is None or net_benefit_name(threshold) not in test_report.values:
            x_test, test_y = data.part("test")
            test_p = network_output(network, x_test).reshape(-1)
    return Reference.of(features, list(feats.numeric), list(feats.categorical), risks=risks,
                        test_y=test_y, test_p=test_p, threshold=threshold if binary else None,
                        test_report=test_report if binary else None, rules=spec.monitor,
                        seed=spec.train.seed)


# -- a batch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A batch's rows as the model reads them: typed features of every row, and outcomes
    (NaN where missing, or everywhere when the batch has no outcome column)."""

    source: str
    sha256: str
    default_site: str
    features: pd.DataFrame
    y: np.ndarray
    has_outcome: bool

    @property
    def rows(self) -> int:
        """Rows in the batch."""
        return len(self.features)


def read_batch(meta: ModelMeta, data: str, chunk_rows: int | None = None) -> Batch:
    """Read ``data`` (a named data set or a CSV path) with the model's own rules. A column
    the model reads that the header lacks is a DataError naming it; a column whose every
    cell is missing is read (its missing share is a check's business). A large file (or
    any, given ``chunk_rows``) is read in chunks, each typed and then let go, so its cells
    are never all held as text; the typed columns are the same."""
    named = NAMED_DATASETS.get(data)
    resolved = resolve_source(data, os.getcwd())
    path, columns = str(resolved.path), named.columns if named else None
    site = named.name if named else os.path.basename(path)
    if chunk_rows is None and not is_large_file(path):
        table = read_csv(resolved.path, columns=columns, label=path)
        _require_batch_columns(meta, path, list(table.frame.columns))
        typed = prepare_features(table.frame, list(meta.numeric), list(meta.categorical),
                                 list(meta.na_values), table.where, table.source,
                                 meta.missing_codes)
        has_outcome = meta.target in table.frame.columns
        y = (binary_outcome(table, meta.target, meta.target_positive, list(meta.na_values))
             if has_outcome else np.full(len(typed), np.nan))
        return Batch(path, file_sha256(resolved.path), site, typed, y, has_outcome)
    header = columns or [str(c).strip() for c in pd.read_csv(
        path, nrows=0, dtype=str, encoding="utf-8-sig").columns]
    _require_batch_columns(meta, path, header)
    has_outcome = meta.target in header
    parts, ys = [], []
    for table, typed in typed_chunks(path, list(meta.numeric), list(meta.categorical),
                                     list(meta.na_values), meta.missing_codes, label=path,
                                     columns=columns, chunk_rows=chunk_rows or CHUNK_ROWS):
        parts.append(typed)
        ys.append(_outcomes(table, meta) if has_outcome else np.full(len(typed), np.nan))
    return Batch(path, file_sha256(resolved.path), site,
                 pd.concat(parts, ignore_index=True), np.concatenate(ys), has_outcome)


def _outcomes(table: Any, meta: ModelMeta) -> np.ndarray:
    """:func:`binary_outcome` of a chunk, judged once per distinct cell; when a cell is
    refused, the whole chunk is judged again so the error names its row."""
    cells = table.frame[meta.target]
    distinct = pd.Series(cells.unique(), dtype=object)
    once = replace(table, frame=pd.DataFrame({meta.target: distinct}))
    try:
        y = binary_outcome(once, meta.target, meta.target_positive, list(meta.na_values))
    except DataError:
        return binary_outcome(table, meta.target, meta.target_positive, list(meta.na_values))
    return cells.map(dict(zip(distinct, y, strict=True))).to_numpy(np.float64)


def _require_batch_columns(meta: ModelMeta, source: str, present: list[str]) -> None:
    absent = [c for c in meta.columns if c not in present]
    if absent:
        raise DataError(f"{source}: the batch lacks column(s) "
                        f"{', '.join(map(repr, absent))} that the model reads (a column "
                        "that was not measured may be present with empty cells). Columns "
                        f"present: {', '.join(map(str, present))}")


def as_of_date(value: str | dt.date | None) -> str:
    """The ISO date a batch stands for (today when not given); a DataError when ``value``
    is not a date."""
    if value is None:
        return dt.date.today().isoformat()
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise DataError(f"as-of {value!r} is not a date: give an ISO date such as "
                        f"{dt.date.today().isoformat()} (YYYY-MM-DD)") from None


# -- checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check: its effect size (``value``) against ``threshold`` and its test's p-value;
    drift when both say so. A skipped check has no value and says why in ``reason``."""

    name: str
    kind: str  # feature, prediction or performance
    statistic: str
    value: float | None
    threshold: float | None
    drift: bool
    p_value: float | None
    reason: str = ""

    @property
    def variable(self) -> str:
        """The variable a feature check is about (``age`` for ``age.psi``)."""
        return self.name.rsplit(".", 1)[0] if self.kind == "feature" else ""

    def as_dict(self) -> dict[str, Any]:
        """The check's JSON object."""
        return {"name": self.name, "kind": self.kind, "statistic": self.statistic,
                "value": _f(self.value), "threshold": _f(self.threshold), "drift": self.drift,
                "p_value": _f(self.p_value), "reason": self.reason}


def _verdict(name: str, kind: str, statistic: str, value: float, threshold: float,
             p_value: float, alpha: float, why: str = "") -> Check:
    """Drift when the effect passes its threshold and the p-value is below ``alpha``."""
    if not (math.isfinite(value) and math.isfinite(p_value)):
        return Check(name, kind, statistic, _f(value), threshold, False, _f(p_value),
                     why or "not computable on these rows")
    value, p_value = float(value), float(p_value)
    drift = bool(value > threshold and p_value < alpha)
    if drift:
        reason = f"{statistic} {value:.3g} > {threshold:.3g} and p {p_value:.2g} < {alpha:g}"
    elif value > threshold:
        reason = (f"{statistic} {value:.3g} > {threshold:.3g}, but p {p_value:.2g} >= {alpha:g}: "
                  "not distinguishable from sampling noise")
    else:
        reason = ""
    return Check(name, kind, statistic, value, threshold, drift, p_value, reason)


def _skip(name: str, kind: str, statistic: str, reason: str,
          threshold: float | None = None) -> Check:
    return Check(name, kind, statistic, None, threshold, False, None, reason)


def psi(batch_shares: np.ndarray, reference_shares: np.ndarray) -> float:
    """Population stability index: sum of (b - r) ln(b / r) over bins, empty bins counted
    as :data:`SMALL_SHARE`."""
    b = np.clip(np.asarray(batch_shares, dtype=np.float64), SMALL_SHARE, None)
    r = np.clip(np.asarray(reference_shares, dtype=np.float64), SMALL_SHARE, None)
    return float(np.sum((b - r) * np.log(b / r)))


def merge_sparse(table: np.ndarray, ordered: bool) -> np.ndarray:
    """Merge columns of a (2, cells) count table until every expected count under
    homogeneity is at least 5: the column with the least total joins its smaller
    neighbour (``ordered`` bins) or the next-least column (levels)."""
    t = np.asarray(table, dtype=np.int64)
    while t.shape[1] > 1:
        totals = t.sum(axis=0)
        expected = totals * t.sum(axis=1).min() / t.sum()
        j = int(np.argmin(totals))
        if expected[j] >= MIN_CELL:
            break
        if ordered:
            if j == 0:
                k = 1
            elif j == t.shape[1] - 1:
                k = j - 1
            else:
                k = j - 1 if totals[j - 1] <= totals[j + 1] else j + 1
        else:
            k = int(np.argsort(totals, kind="stable")[1])
        t[:, k] += t[:, j]
        t = np.delete(t, j, axis=1)
    return t


def homogeneity_p(batch: np.ndarray, reference: np.ndarray, ordered: bool) -> float:
    """Chi-square test that the batch's and the reference's counts come from one
    distribution, after :func:`merge_sparse`; NaN when a single cell is left."""
    from scipy.stats import chi2_contingency  # lazy: scipy.stats costs 1-2 s to import

    t = merge_sparse(np.vstack([batch, reference]), ordered)
    t = t[:, t.sum(axis=0) > 0]
    if t.shape[1] < 2 or (t.sum(axis=1) == 0).any():
        return math.nan
    return float(chi2_contingency(t, correction=False).pvalue)


def ks_test(dist: Distribution, values: np.ndarray) -> tuple[float, float]:
    """(D, p): Kolmogorov-Smirnov distance of ``values`` from the reference, and its
    two-sample p-value (effective size n m / (n + m), as ks_2samp's asymptotic method)."""
    from scipy import stats  # lazy: scipy.stats costs 1-2 s to import

    u = dist.pit(values)
    # method="asymp": only the statistic is used (its own p-value, exact for n <= 10,000
    # and costly at a million rows, would be thrown away)
    d = float(stats.kstest(u, "uniform", method="asymp").statistic)
    n, m = len(u), dist.rows
    return d, float(stats.kstwo.sf(d, np.round(n * m / (n + m))))


def share_rise_p(count: int, rows: int, ref_share: float, ref_rows: int) -> float:
    """One-sided Fisher exact p-value that the batch's share (``count`` of ``rows``) is
    above the reference's."""
    from scipy.stats import fisher_exact  # lazy: scipy.stats

    ref_count = round(ref_share * ref_rows)
    table = [[count, rows - count], [ref_count, ref_rows - ref_count]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def _too_few(rows: int, need: int, what: str = "rows") -> str:
    return f"{rows} {what}; the check needs at least {need}"


def _numeric_checks(ref: NumericReference, values: pd.Series, rules: MonitorSpec
                    ) -> list[Check]:
    x = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    present = x[np.isfinite(x)]
    n = len(x)
    c = ref.column
    out = [_missing_check(c, int(n - len(present)), n, ref.missing_share, ref.rows, rules)]
    dist = ref.distribution
    names = ((f"{c}.psi", "psi", rules.psi), (f"{c}.ks", "ks", rules.ks),
             (f"{c}.out_of_range", "out_of_range_share",
              dist.outside + rules.out_of_range if dist else None))
    why = ("no distribution in the reference: " + ref.note if dist is None else
           "no row of the batch has a value (see its missing share)" if not len(present) else
           _too_few(len(present), rules.min_rows, "rows with a value")
           if len(present) < rules.min_rows else "")
    if why:
        return out + [_skip(name, "feature", stat, why, t) for name, stat, t in names]
    out += _distribution_checks(c, "feature", dist, present, rules)
    outside = int(np.sum((present < dist.low) | (present > dist.high)))
    bar = dist.outside + rules.out_of_range
    p = share_rise_p(outside, len(present), dist.outside, dist.rows)
    check = _verdict(f"{c}.out_of_range", "feature", "out_of_range_share",
                     outside / len(present), bar, p, rules.p_value)
    if not check.reason or check.drift:
        check = replace(check, reason=(check.reason + "; " if check.reason else "") +
                        f"range {dist.low:.4g}..{dist.high:.4g}, development share "
                        f"{dist.outside:.3f}")
    return [*out, check]


def _distribution_checks(name: str, kind: str, dist: Distribution, present: np.ndarray,
                         rules: MonitorSpec) -> list[Check]:
    got = dist.bin_counts(present)
    value = psi(got / len(present), dist.shares)
    p = homogeneity_p(got, dist.reference_counts(), ordered=True)
    d, p_ks = ks_test(dist, present)
    return [_verdict(f"{name}.psi", kind, "psi", value, rules.psi, p, rules.p_value),
            _verdict(f"{name}.ks", kind, "ks", d, rules.ks, p_ks, rules.p_value)]


def _missing_check(column: str, missing: int, rows: int, ref_share: float, ref_rows: int,
                   rules: MonitorSpec) -> Check:
    name = f"{column}.missing"
    bar = ref_share + rules.missing_share
    if rows < rules.min_rows:
        return _skip(name, "feature", "missing_share", _too_few(rows, rules.min_rows), bar)
    p = share_rise_p(missing, rows, ref_share, ref_rows)
    check = _verdict(name, "feature", "missing_share", missing / rows, bar, p, rules.p_value)
    if missing == rows:
        return replace(check, reason="missing in every row of the batch; " + check.reason)
    return check


def _categorical_checks(ref: CategoricalReference, values: pd.Series, rules: MonitorSpec
                        ) -> list[Check]:
    c = ref.column
    n = len(values)
    present = values.dropna()
    out = [_missing_check(c, int(n - len(present)), n, ref.missing_share, ref.rows, rules)]
    name = f"{c}.psi"
    why = ("no distribution in the reference: " + ref.note if not ref.cells else
           "no row of the batch has a value (see its missing share)" if not len(present) else
           _too_few(len(present), rules.min_rows, "rows with a value")
           if len(present) < rules.min_rows else "")
    if why:
        return [*out, _skip(name, "feature", "psi", why, rules.psi)]
    got, ref_counts = ref.counts(present)
    shares = np.append(ref.shares, 0.0)[:len(got)]
    value = psi(got / got.sum(), shares)
    p = homogeneity_p(got, ref_counts, ordered=False)
    return [*out, _verdict(name, "feature", "psi", value, rules.psi, p, rules.p_value)]


def feature_checks(reference: Reference, features: pd.DataFrame) -> list[Check]:
    """Every variable's checks, numeric first."""
    rules = reference.rules
    out: list[Check] = []
    for ref in reference.numeric:
        out += _numeric_checks(ref, features[ref.column], rules)
    for cat in reference.categorical:
        out += _categorical_checks(cat, features[cat.column], rules)
    return out


def prediction_checks(reference: Reference, risks: np.ndarray) -> list[Check]:
    """PSI and KS of the batch's risks against the development risks."""
    rules = reference.rules
    p = np.asarray(risks, dtype=np.float64)
    p = p[np.isfinite(p)]
    names = ((f"{RISK}.psi", "psi", rules.psi), (f"{RISK}.ks", "ks", rules.ks))
    why = ("the reference holds no development risks" + (
        f" ({'; '.join(reference.notes)})" if reference.notes else "")
           if reference.risks is None else
           _too_few(len(p), rules.min_rows) if len(p) < rules.min_rows else "")
    if why:
        return [_skip(name, "prediction", stat, why, t) for name, stat, t in names]
    return _distribution_checks(RISK, "prediction", reference.risks, p, rules)


# (statistic, threshold field, direction: +1 a rise is drift, -1 a fall, 0 either way)
_PERFORMANCE_RULES = {
    "roc_auc": ("auc_drop", "auc_drop", -1), "brier": ("brier_rise", "brier", +1),
    "calibration_intercept": ("calibration_intercept_change", "calibration_intercept", 0),
    "calibration_slope": ("calibration_slope_change", "calibration_slope", 0),
    "net_benefit": ("net_benefit_drop", "net_benefit", -1)}
_NEEDS_MIN_EVENTS = ("roc_auc", "calibration_slope", "net_benefit")


def performance_checks(reference: Reference, y: np.ndarray, risks: np.ndarray,
                       threshold: float, seed: int = 0
                       ) -> tuple[list[Check], dict[str, Figure], int, int]:
    """With outcomes: each figure of the batch against its development value; also the
    batch's figures, rows with an outcome and events."""
    from scipy.stats import norm  # lazy: scipy.stats

    rules = reference.rules
    dev = reference.development
    judged = ~np.isnan(y)
    yj, pj = y[judged], np.asarray(risks, dtype=np.float64)[judged]
    rows, events = int(judged.sum()), int(np.sum(yj > 0.5))
    non_events = rows - events
    names = [*PERFORMANCE, net_benefit_name(threshold)]
    figures: dict[str, Figure] = {}
    if rows and dev is not None:
        figures = figures_of(clinical_report(yj, pj, threshold, (threshold,), seed=seed),
                             threshold)
    out = []
    for name in names:
        base = name.split("@")[0]
        statistic, field_name, direction = _PERFORMANCE_RULES[base]
        bar = float(getattr(rules, field_name))
        need = rules.min_events if base in _NEEDS_MIN_EVENTS else MIN_CELL
        why = ("the reference holds no development figures" + (
            f" ({'; '.join(reference.notes)})" if reference.notes else "")
               if dev is None else
               "the batch has no outcomes" if not rows else
               _too_few(rows, rules.min_rows, "rows with an outcome")
               if rows < rules.min_rows else
               f"{min(events, non_events)} rows {'with' if events < non_events else 'without'}"
               f" the outcome; the check needs at least {need} of each"
               if min(events, non_events) < need else "")
        if not why and name not in dev.figures:
            why = f"the development figures lack {name} (another threshold)"
        if why:
            out.append(_skip(name, "performance", statistic, why, bar))
            continue
        now, then = figures[name], dev.figures[name]
        diff = now.value - then.value
        value = abs(diff) if direction == 0 else direction * diff
        se = math.hypot(now.se, then.se)
        z = value / se if se > 0 else math.nan
        p = (2 * norm.sf(z) if direction == 0 else norm.sf(z)) if math.isfinite(z) else math.nan
        what = (f"batch {now.value:.3f} [{now.low:.3f}, {now.high:.3f}] vs development "
                f"{then.value:.3f} [{then.low:.3f}, {then.high:.3f}]")
        check = _verdict(name, "performance", statistic, value, bar, p, rules.p_value,
                         "undefined, or without an interval, on the batch or in development")
        out.append(replace(check, reason="; ".join(filter(None, (check.reason, what)))))
    return out, figures, rows, events


@dataclass(frozen=True)
class MonitorReport:
    """One batch judged against a model's reference (the JSON: :meth:`as_dict`)."""

    model_uri: str
    model_name: str | None
    version: str | None
    site: str
    source: str
    data_sha256: str
    rows: int
    as_of: str
    checks: tuple[Check, ...]
    rows_with_outcome: int = 0
    events: int = 0
    threshold: float = math.nan
    figures: dict[str, Figure] = field(default_factory=dict)  # the batch's
    development: DevelopmentFigures | None = None
    notes: tuple[str, ...] = ()
    run_id: str = ""
    event_id: str | None = None
    page: str = field(default="", repr=False)  # the HTML report, once drawn

    @property
    def drift(self) -> bool:
        """Whether any check found drift."""
        return any(c.drift for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        """The checks that found drift."""
        return [c for c in self.checks if c.drift]

    @property
    def drifted_variables(self) -> list[str]:
        """The raw variables with a drifting check, in the model's order."""
        return list(dict.fromkeys(c.variable for c in self.failed if c.kind == "feature"))

    def __repr__(self) -> str:
        """A few lines at a prompt: the model, the verdict, how to see more."""
        return (f"heartflow monitoring of {self.model_uri}\n  {self.summary()}\n"
                "  more: .failed, .checks, .as_dict(), hf.figures(...)")

    def check(self, name: str) -> Check:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def summary(self) -> str:
        """One line: the verdict and what moved."""
        if not self.drift:
            return f"no drift on {self.rows} rows ({self.site}, as of {self.as_of})"
        kinds = [f"{k}: {', '.join(c.name for c in self.failed if c.kind == k)}"
                 for k in ("performance", "prediction", "feature")
                 if any(c.kind == k for c in self.failed)]
        return f"drift on {self.rows} rows ({self.site}, as of {self.as_of}): " + "; ".join(kinds)

    def as_dict(self) -> dict[str, Any]:
        """The report's JSON object."""
        dev = self.development
        return {"drift": self.drift, "checks": [c.as_dict() for c in self.checks],
                "model_uri": self.model_uri, "version": self.version, "site": self.site,
                "rows": self.rows, "data_sha256": self.data_sha256, "run_id": self.run_id,
                "model_name": self.model_name, "as_of": self.as_of, "source": self.source,
                "rows_with_outcome": self.rows_with_outcome, "events": self.events,
                "threshold": _f(self.threshold),
                "drifted_variables": self.drifted_variables,
                "figures": {k: f.as_list() for k, f in self.figures.items()},
                "development": dev.as_dict() if dev else None,
                "notes": list(self.notes), "event_id": self.event_id}

    def to_json(self) -> str:
        """:meth:`as_dict` as JSON text."""
        return json.dumps(self.as_dict(), indent=1, allow_nan=False)

    def html(self) -> str:
        """The HTML report drawn by the monitoring flow (empty before)."""
        return self.page


def judge_batch(reference: Reference, batch: Batch, risks: np.ndarray | None,
                threshold: float, *, model_uri: str, model_name: str | None,
                version: str | None, site: str | None = None, as_of: str | None = None,
                seed: int = 0) -> MonitorReport:
    """Every check of ``batch`` (with the model's ``risks`` for its rows) against
    ``reference``."""
    missing = [c for c in reference.columns if c not in batch.features.columns]
    if missing:
        raise DataError(f"{batch.source}: the batch lacks column(s) "
                        f"{', '.join(map(repr, missing))} of the model's reference")
    checks = feature_checks(reference, batch.features)
    notes = list(reference.notes)
    figures: dict[str, Figure] = {}
    rows_with_outcome = events = 0
    if risks is not None:
        checks += prediction_checks(reference, risks)
        perf, figures, rows_with_outcome, events = performance_checks(
            reference, batch.y, risks, threshold, seed)
        checks += perf
    if not batch.has_outcome:
        notes.append("the batch has no outcome column: performance checks skipped")
    return MonitorReport(model_uri, model_name, version, site or batch.default_site,
                         batch.source, batch.sha256, batch.rows, as_of_date(as_of),
                         tuple(checks), rows_with_outcome, events, float(threshold), figures,
                         reference.development, tuple(notes))
