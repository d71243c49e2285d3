"""Seeded train/validation/test splits by a hash of each row's key, stratified by class when
asked, and checked for sufficiency.

A row's key is a 64-bit hash of its ``data.id`` cell, or of all its cells; mixed with
the seed it gives the row a uniform number u in [0, 1). Within each class the rows with
the smallest u go to test, the next to validation, the rest to training. So a row's
part depends on its content, not its position in the file: when rows are added, a row
changes part only if new rows of its class outrank it, and different seeds give
independent splits. Every part must hold the spec's minimum of rows and, for
classification, of each class (``data.split.min_rows``, ``data.split.min_per_class``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from heartflow.errors import DataError
from heartflow.spec.schema import SplitSpec

PARTS = ("train", "validation", "test")
PART_CODES = {"train": 0, "validation": 1, "test": 2}
_HASH_KEY = "heartflow-rows-1"  # 16 characters, as pandas' hash_key wants


def row_keys(cells: pd.DataFrame, id_column: str | None = None) -> np.ndarray:
    """One 64-bit key per row: a hash of the row's text cells (or of its id cell)."""
    frame = cells[[id_column]] if id_column else cells
    text = frame.astype(str).where(frame.notna(), "")
    return pd.util.hash_pandas_object(text, index=False, hash_key=_HASH_KEY).to_numpy(
        np.uint64)


def uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per key, independent across seeds (splitmix64's finaliser)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64((seed + 1) * 0x9E3779B97F4A7C15 % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def key_hex(keys: np.ndarray) -> list[str]:
    """Keys as 16-digit hex text (split manifests)."""
    return [f"{int(k):016x}" for k in keys]


@dataclass(frozen=True)
class Split:
    """Row indices of each part."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Row counts by part."""
        return {"train": len(self.train), "validation": len(self.validation),
                "test": len(self.test)}


def split_rows(y: np.ndarray, spec: SplitSpec, classification: bool,
               class_names: list[str] | None = None, keys: np.ndarray | None = None) -> Split:
    """Split row indices; each class is divided in the same proportions when stratified.

    Without ``keys`` the row numbers serve as keys.
    """
    n = len(y)
    u = uniform(np.arange(n, dtype=np.uint64) if keys is None else keys, spec.seed)
    groups = ([np.flatnonzero(y == c) for c in np.unique(y)]
              if classification and spec.stratify else [np.arange(n)])
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for idx in groups:
        idx = idx[np.lexsort((idx, u[idx]))]  # by u, ties (duplicate rows) by position
        n_test = round(len(idx) * spec.test)
        n_val = round(len(idx) * spec.validation)
        parts["test"].append(idx[:n_test])
        parts["validation"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    split = Split(*(np.sort(np.concatenate(parts[k])) for k in PARTS))
    counts = {part: _class_counts(y[getattr(split, part)], y) if classification else {}
              for part in PARTS}
    check_sufficiency(n, split.sizes(), counts, spec, class_names)
    return split


def _class_counts(part: np.ndarray, y: np.ndarray) -> dict[object, int]:
    return {c: int(np.sum(part == c)) for c in np.unique(y)}


def check_sufficiency(rows: int, sizes: dict[str, int], class_counts: dict[str, dict],
                      spec: SplitSpec, class_names: list[str] | None = None) -> None:
    """Raise a DataError naming every part that is too small or lacks a class."""
    wanted = spec.minimum_rows()
    problems = []
    for part in PARTS:
        if part == "validation" and spec.validation == 0:
            continue
        if sizes[part] < wanted[part]:
            problems.append(f"{part} {sizes[part]} rows (at least {wanted[part]} needed)")
        for label, count in class_counts.get(part, {}).items():
            if count < spec.min_per_class:
                name = class_names[int(label)] if class_names else _label(label)
                problems.append(f"{part} has {count} row(s) of class {name} (at least "
                                f"{spec.min_per_class} needed)")
    if problems:
        shown = ", ".join(f"{p} {sizes[p]}" for p in PARTS)
        raise DataError(
            f"{rows} rows are not enough for the split (test={spec.test}, "
            f"validation={spec.validation}; parts: {shown}): {'; '.join(problems)}. Add "
            "rows, lower the test/validation fractions, or set data.split.min_rows "
            "(e.g. {train: 20, validation: 10, test: 10}) and data.split.min_per_class in "
            "the spec")


def _label(value: object) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else str(value)
