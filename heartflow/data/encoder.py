"""The tabular encoder: standardised numeric columns and one-hot categorical ones.

Rules (logged with every run, and the same at scoring time):
- numeric: a missing value becomes the training median; then (x - mean) / std with
  mean and std from the training rows (std 1 for a constant column);
- categorical: the one-hot columns are the levels present in the data file (levels are
  schema, so the input width does not depend on the split; no labels are read); a
  missing value becomes the training mode; a level the training rows never hold (seen
  only in validation or test rows, or new at scoring time) encodes as all zeros in its
  block, so no input weight that training never touched ever multiplies a one.
The fitted state is plain JSON, so loading a model never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.table import level_sort_key

MISSING_RULE = ("numeric: training median, then standardised with training mean/std; "
                "categorical: training mode for missing, all-zero one-hot for unseen levels")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


@dataclass
class TabularEncoder:
    """Fitted preprocessing for one spec's feature columns."""

    numeric: list[str]
    categorical: list[str]
    na_values: list[str] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    levels: dict[str, list[str]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    untrained: dict[str, list[str]] = field(default_factory=dict)  # levels not in train rows

    # -- fitting ---------------------------------------------------------------
    def fit(self, features: pd.DataFrame, train_rows: np.ndarray | None = None) -> TabularEncoder:
        """Learn statistics from ``train_rows`` (all rows if None) and levels from all rows."""
        train = features if train_rows is None else features.iloc[train_rows]
        for name in self.numeric:
            values = train[name].to_numpy(dtype=np.float64)
            finite = values[~np.isnan(values)]
            median = float(np.median(finite)) if len(finite) else 0.0
            filled = np.where(np.isnan(values), median, values)
            std = float(filled.std())
            self.medians[name] = median
            self.means[name] = float(filled.mean())
            self.stds[name] = std if std > 0 else 1.0
        for name in self.categorical:
            present = {v for v in features[name] if not _missing(v)}
            self.levels[name] = sorted(present, key=level_sort_key)
            trained = {v for v in train[name] if not _missing(v)}
            self.untrained[name] = sorted(present - trained, key=level_sort_key)
            counts = pd.Series([v for v in train[name] if not _missing(v)],
                               dtype=object).value_counts()
            self.modes[name] = (str(sorted(counts[counts == counts.max()].index,
                                          key=level_sort_key)[0])
                                if len(counts) else self.levels[name][0])
        return self

    # -- applying --------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """Names of the encoded columns, in order."""
        return [*self.numeric,
                *(f"{c}={lvl}" for c in self.categorical for lvl in self.levels[c])]

    @property
    def width(self) -> int:
        """Number of encoded inputs."""
        return len(self.numeric) + sum(len(self.levels[c]) for c in self.categorical)

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """Encode typed feature columns into a float32 matrix."""
        n = len(features)
        out = np.zeros((n, self.width), dtype=np.float32)
        col = 0
        for name in self.numeric:
            values = features[name].to_numpy(dtype=np.float64)
            values = np.where(np.isnan(values), self.medians[name], values)
            out[:, col] = (values - self.means[name]) / self.stds[name]
            col += 1
        for name in self.categorical:
            skip = set(self.untrained.get(name, ()))
            index = {lvl: i for i, lvl in enumerate(self.levels[name]) if lvl not in skip}
            values = pd.Series(features[name].to_numpy(dtype=object), dtype=object)
            values = values.where(values.notna(), self.modes[name])  # missing: the mode
            positions = values.map(index).to_numpy(dtype=np.float64)  # NaN: unseen level
            hit = ~np.isnan(positions)
            out[np.flatnonzero(hit), col + positions[hit].astype(np.int64)] = 1.0
            col += len(self.levels[name])
        return out

    def unseen_levels(self, features: pd.DataFrame) -> dict[str, list[str]]:
        """Levels in ``features`` the training rows never held (encoded as zeros), by column."""
        out = {}
        for name in self.categorical:
            known = set(self.levels[name]) - set(self.untrained.get(name, ()))
            new = sorted({v for v in features[name] if not _missing(v) and v not in known},
                         key=level_sort_key)
            if new:
                out[name] = new
        return out

    def synthetic_record(self) -> pd.DataFrame:
        """One synthetic record of typed feature columns: each numeric column's training
        median and each categorical column's training mode (the statistics the missing-value
        rule already uses). It is the logged model's input example in place of real rows:
        it is built column by column, so it is no patient's record, though it may coincide
        with one (a patient typical on every column) by chance."""
        values: dict[str, list[object]] = {name: [float(self.medians[name])]
                                           for name in self.numeric}
        values.update({name: [self.modes[name]] for name in self.categorical})
        frame = pd.DataFrame(values, index=[0])
        for name in self.categorical:
            frame[name] = frame[name].astype(object)
        return frame

    # -- persistence -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-data state."""
        return {"format": "heartflow.tabular_encoder/1", "missing_rule": MISSING_RULE,
                **asdict(self)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TabularEncoder:
        """Rebuild from :meth:`to_dict` output."""
        fields = {k: v for k, v in state.items() if k not in ("format", "missing_rule")}
        return cls(**fields)

    def save(self, path: str) -> None:
        """Write the state as JSON."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1, sort_keys=True)

    @classmethod
    def load(cls, path: str) -> TabularEncoder:
        """Read the state from JSON."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))
