"""A spec's data as arrays: typed feature columns, a checked target, a fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from heartflow.data.sources import ResolvedSource, file_sha256
from heartflow.data.split import row_keys
from heartflow.data.table import (
    RawTable,
    categorical_column,
    is_missing,
    level_sort_key,
    normalize_level,
    numeric_column,
    read_csv,
    require_columns,
)
from heartflow.errors import DataError
from heartflow.spec.schema import COMPARISONS, DataSpec, Spec, TargetSpec


@dataclass
class Dataset:
    """Feature columns (numeric as float64, categorical as normalised text) and target."""

    features: pd.DataFrame
    y: np.ndarray
    classes: list[str] = field(default_factory=list)
    sha256: str = ""
    source: str = ""
    keys: np.ndarray | None = None  # one stable 64-bit key per row (see split.row_keys)

    def __len__(self) -> int:
        return len(self.y)


def prepare_features(frame: pd.DataFrame, numeric: list[str], categorical: list[str],
                     na_values: list[str], where=lambda i: f"row {i + 1}",
                     label: str = "",
                     missing_codes: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Convert raw cells of the feature columns into typed columns (same rule everywhere).

    ``missing_codes`` adds per-column codes that mean "not measured" (``chol: ["0"]``).
    Codes and ``na_values`` compare typed values: ``0`` also matches a cell ``0.0``.
    """
    codes = missing_codes or {}
    out = {}
    for name in numeric:
        out[name] = numeric_column(frame[name], name, [*na_values, *codes.get(name, [])],
                                   where, label)
    for name in categorical:
        out[name] = categorical_column(frame[name], [*na_values, *codes.get(name, [])])
    result = pd.DataFrame(index=range(len(frame)))
    for name, values in out.items():
        result[name] = pd.Series(values, dtype=object if name in categorical else np.float64)
    return result


def load_dataset(spec: Spec, resolved: ResolvedSource) -> Dataset:
    """Read and check the file the spec's data source resolved to."""
    data = spec.data
    columns = data.columns or resolved.columns
    table = read_csv(resolved.path, columns=columns, delimiter=data.delimiter,
                     label=str(resolved.path))
    return dataset_from_table(table, spec, sha256=file_sha256(resolved.path),
                              source=str(resolved.path))


def dataset_from_frame(frame: pd.DataFrame, spec: Spec, label: str = "<DataFrame>") -> Dataset:
    """A Dataset from a pandas DataFrame (notebooks): the same cell rules as for a CSV file.

    Its fingerprint is the sha256 of the frame's CSV text, so the same rows give the same
    fingerprint whether they arrive as a file or a frame.
    """

    text = frame.to_csv(index=False)
    table = RawTable(frame=frame.reset_index(drop=True).astype(object), source=label,
                     first_line=2)
    return dataset_from_table(table, spec, sha256=hashlib.sha256(text.encode()).hexdigest(),
                              source=label)


def dataset_from_table(table: RawTable, spec: Spec, sha256: str = "",
                       source: str = "") -> Dataset:
    """Build a Dataset from an already-read table."""
    data = spec.data
    target = data.target_spec
    feats = data.features
    require_columns(table, [*feats.numeric, *feats.categorical, target.column,
                            *([data.id] if data.id else [])], data.delimiter)
    features = prepare_features(table.frame, feats.numeric, feats.categorical, data.na_values,
                                table.where, table.source, data.missing_codes)
    _check_features(features, feats.numeric, feats.categorical, table.source)
    y, classes = _target(table, data, spec)
    keys = row_keys(table.frame, data.id, data.na_values)
    if data.id:
        check_unique_ids(table.frame[data.id], keys, table)
    return Dataset(features=features, y=y, classes=classes, sha256=sha256, source=source,
                   keys=keys)


def check_unique_ids(ids: pd.Series, keys: np.ndarray, table: RawTable) -> None:
    """A declared id column must identify each row once."""
    _unique, first, counts = np.unique(keys, return_index=True, return_counts=True)
    if (counts > 1).any():
        row = int(np.sort(first[counts > 1])[0])
        raise DataError(f"{table.source}: id column {ids.name!r} repeats the value "
                        f"{ids.iloc[row]!r} (first at {table.where(row)}); data.id must "
                        "identify each row once")


def _check_features(features: pd.DataFrame, numeric: list[str], categorical: list[str],
                    label: str) -> None:
    for name in [*numeric, *categorical]:
        column = features[name]
        if column.isna().all():
            raise DataError(f"{label}: column {name!r} has no values (every cell is missing)")


def _target(table: RawTable, data: DataSpec, spec: Spec) -> tuple[np.ndarray, list[str]]:
    target = data.target_spec
    raw = table.frame[target.column]
    missing = is_missing(raw, data.na_values)
    if missing.any():
        rows = [table.where(int(i)) for i in np.flatnonzero(missing)[:5]]
        raise DataError(f"{table.source}: target column {target.column!r} is missing in "
                        f"{int(missing.sum())} row(s): {', '.join(rows)}")
    task = spec.task
    if task == "regression":
        return numeric_column(raw, target.column, data.na_values, table.where,
                              table.source).astype(np.float32), []
    labels = categorical_column(raw, data.na_values)
    if target.positive is not None:
        labels = _binarise(labels, target, raw, table)
    levels = sorted(set(labels), key=level_sort_key)
    if task == "binary":
        if len(levels) != 2:
            what = "only one class" if len(levels) < 2 else f"{len(levels)} classes"
            hint = (" Set data.target.positive (for example '> 0') to make it binary, or use "
                    "a softmax output." if len(levels) > 2 else
                    " A classifier needs both classes in the data.")
            raise DataError(f"{table.source}: target column {target.column!r} has {what} "
                            f"({', '.join(levels[:10])}); a sigmoid output needs exactly 2."
                            f"{hint}")
        if set(levels) != {"0", "1"}:
            raise DataError(f"{table.source}: target column {target.column!r} has values "
                            f"{levels[0]!r} and {levels[1]!r}; say which is positive with "
                            f"data.target.positive (for example positive: {levels[1]!r})")
        return (labels == "1").astype(np.float32), ["0", "1"]
    units = spec.model.output.units
    if len(levels) != units:
        raise DataError(f"{table.source}: target column {target.column!r} has {len(levels)} "
                        f"classes ({', '.join(levels[:10])}) but the softmax output has {units} "
                        f"units; set model.output.units: {len(levels)}")
    index = {level: i for i, level in enumerate(levels)}
    return np.array([index[v] for v in labels], dtype=np.int64), levels


def binary_outcome(table: RawTable, column: str, positive: object,
                   na_values: list[str]) -> np.ndarray:
    """A model's 0/1 outcome for other rows (another site): 1.0, 0.0, or NaN where missing.

    ``positive`` is the model's own rule (``'> 0'``, a value, or None for 0/1 labels).
    """
    require_columns(table, [column])
    raw = table.frame[column]
    missing = is_missing(raw, na_values)
    present = np.flatnonzero(~missing)
    sub = RawTable(frame=table.frame.iloc[present].reset_index(drop=True), source=table.source,
                   first_line=table.first_line)
    sub.where = lambda i: table.where(int(present[i]))  # type: ignore[method-assign]
    cells = sub.frame[column]
    labels = categorical_column(cells, na_values)
    if positive is not None:
        labels = _binarise(labels, TargetSpec(column=column, positive=positive), cells, sub)
    odd = sorted(set(labels) - {"0", "1"}, key=level_sort_key)
    if odd:
        raise DataError(f"{table.source}: outcome column {column!r} holds {odd[:5]}; the "
                        "model's rule gives 0/1 outcomes only")
    y = np.full(len(raw), np.nan)
    y[present] = (labels == "1").astype(np.float64)
    return y


def _binarise(labels: np.ndarray, target: TargetSpec, raw: pd.Series,
              table: RawTable) -> np.ndarray:
    comparison = target.comparison
    if comparison:
        op, threshold = comparison
        values = numeric_column(raw, str(raw.name), [], table.where, table.source)
        return np.where(COMPARISONS[op](values, threshold), "1", "0").astype(object)
    positive = normalize_level(target.positive)
    return np.where(labels == positive, "1", "0").astype(object)
