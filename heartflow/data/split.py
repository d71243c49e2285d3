"""Seeded train/validation/test splits, stratified by class when asked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heartflow.errors import DataError
from heartflow.spec.schema import SplitSpec


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


def split_rows(y: np.ndarray, spec: SplitSpec, classification: bool) -> Split:
    """Split row indices; each class is divided in the same proportions when stratified."""
    n = len(y)
    rng = np.random.default_rng(spec.seed)
    groups = ([np.flatnonzero(y == c) for c in np.unique(y)]
              if classification and spec.stratify else [np.arange(n)])
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for idx in groups:
        idx = rng.permutation(idx)
        n_test = round(len(idx) * spec.test)
        n_val = round(len(idx) * spec.validation)
        parts["test"].append(idx[:n_test])
        parts["validation"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    split = Split(*(np.sort(np.concatenate(parts[k])) for k in ("train", "validation", "test")))
    needed = {"train": 2, "test": 1, "validation": 1 if spec.validation > 0 else 0}
    for part, minimum in needed.items():
        if len(getattr(split, part)) < minimum:
            raise DataError(f"{n} rows are too few for the split (test={spec.test}, "
                            f"validation={spec.validation}): the {part} part would have "
                            f"{len(getattr(split, part))} rows")
    if classification:
        train_classes = np.unique(y[split.train])
        if len(train_classes) < len(np.unique(y)):
            raise DataError(f"{n} rows are too few: after splitting, the training part lacks "
                            "some classes; add rows or lower the test/validation fractions")
    return split
