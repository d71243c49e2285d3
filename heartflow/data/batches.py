"""Batches of rows: tf.data pipelines over encoded in-memory arrays, the per-row weights of a
class weighting, and large CSV files read as typed chunks for scoring.

Keras spends most of a small model's time in per-step overhead, so training reads a
cached pipeline; its options keep tf.data from starting a thread pool of its own.

Scoring a large file (``heartflow predict``, ``heartflow monitor``) reads it in chunks of
:data:`CHUNK_ROWS` rows (:func:`typed_chunks`) instead of holding every cell as text: the
cells are typed by the same rules as :func:`heartflow.data.dataset.prepare_features`,
vectorised (numbers checked by an RE2 pattern and parsed by pyarrow's cast, each distinct
level normalised once); a column with a cell the fast path does not accept is typed by the
cell-by-cell rules, which raise the same error naming the row.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd

from heartflow.data.dataset import prepare_features
from heartflow.data.table import (
    _NUMBER,
    MAX_ABS_VALUE,
    MissingRule,
    RawTable,
    normalize_level,
)
from heartflow.errors import DataError
from heartflow.spec.schema import Spec

CHUNK_ROWS = 100_000  # rows of a large file typed and scored at a time
LARGE_FILE_BYTES = 8 * 1024 * 1024  # above this, scoring reads a file in chunks


def target_array(y: np.ndarray, spec: Spec) -> np.ndarray:
    """Labels in the network's output shape: one-hot for softmax, a column otherwise."""
    if spec.task == "multiclass":
        return np.eye(spec.model.output.units, dtype=np.float32)[y.astype(np.int64)]
    return y.astype(np.float32).reshape(-1, 1)


def class_weight_map(class_weight: object, counts: dict[int, int]) -> dict[int, float] | None:
    """``train.class_weight`` (None, 'balanced' or {class: weight}) as {class: weight}.

    'balanced' is scikit-learn's rule: n_rows / (n_classes * rows_of_the_class).
    """
    if class_weight is None:
        return None
    if class_weight == "balanced":
        total, present = sum(counts.values()), [c for c, n in counts.items() if n]
        return {c: total / (len(present) * counts[c]) for c in present}
    return {int(k): float(v) for k, v in dict(class_weight).items()}


def sample_weights(y: np.ndarray, weights: dict[int, float] | None) -> np.ndarray | None:
    """One weight per row from a {class: weight} map (classes not named weigh 1)."""
    if weights is None:
        return None
    labels = y.astype(np.int64)
    return np.array([weights.get(int(c), 1.0) for c in labels], dtype=np.float32)


def class_counts(y: np.ndarray) -> dict[int, int]:
    """Rows per class label."""
    classes, counts = np.unique(y.astype(np.int64), return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts, strict=True)}


def array_batches(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None, batch_size: int,
                  shuffle_seed: int | None):
    """A cached, shuffled, batched tf.data pipeline over in-memory arrays."""
    # lazy: TensorFlow's 4 s import, only when batches are built for training
    import tensorflow as tf

    parts = (x, y) if weights is None else (x, y, weights)
    ds = tf.data.Dataset.from_tensor_slices(parts).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(2).with_options(serial_options())


def serial_options():
    """tf.data options for a pipeline over cached in-memory arrays: no thread pool of its own.

    There is nothing to parallelise in slicing cached arrays, and tf.data's autotuner and
    private threads otherwise wake up every step. On its own that costs little, but two
    trainings side by side (sweep workers on a 2-core machine) then spend a third of their
    time waiting for each other's threads; with these options they run at full speed each.
    """
    # lazy: TensorFlow's 4 s import, only when batches are built for training
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.inject_prefetch = False
    return options


def is_large_file(path: str) -> bool:
    """Whether scoring should read ``path`` in chunks (it is over :data:`LARGE_FILE_BYTES`)."""
    try:
        return os.path.getsize(path) > LARGE_FILE_BYTES
    except OSError:
        return False


def typed_chunks(path: str, numeric: list[str], categorical: list[str], na_values: list[str],
                 missing_codes: dict[str, list[str]] | None = None, *, label: str = "",
                 columns: list[str] | None = None, chunk_rows: int = CHUNK_ROWS
                 ) -> Iterator[tuple[RawTable, pd.DataFrame]]:
    """A CSV file in chunks: each chunk's cells as text (a RawTable whose rows know their
    file lines) and its feature columns typed by the training rules. Rows whose every cell
    is blank are skipped, as :func:`heartflow.data.table.read_csv` does."""
    label = label or str(path)
    reader = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                         chunksize=chunk_rows, header=0 if columns is None else None,
                         names=columns, encoding="utf-8-sig", skip_blank_lines=True)
    first_line = 2 if columns is None else 1
    rows = 0
    try:
        for chunk in reader:
            chunk.columns = [str(c).strip() for c in chunk.columns]
            short = chunk.isna().any(axis=1).to_numpy()
            if short.any():
                i = int(np.flatnonzero(short)[0])
                raise DataError(f"{label}: row {rows + i + 1} (line {rows + i + first_line}) "
                                f"has fewer fields than the header's {len(chunk.columns)}")
            blank = np.logical_and.reduce([chunk[c].str.strip().eq("").to_numpy()
                                           for c in chunk.columns])
            if blank.any():
                chunk = chunk[~blank]
            chunk = chunk.reset_index(drop=True)
            table = RawTable(frame=chunk, source=label, first_line=rows + first_line)
            table.where = (lambda i, before=rows:  # type: ignore[method-assign]
                           f"row {before + i + 1} (line {before + i + first_line})")
            rows += len(chunk)
            yield table, typed_features(table, numeric, categorical, na_values, missing_codes)
    except pd.errors.ParserError as exc:
        raise DataError(f"{label}: {' '.join(str(exc).split())}; every row must have as "
                        "many fields as the header") from None
    except UnicodeDecodeError:
        raise DataError(f"{label}: the file is not UTF-8 text; save it as UTF-8") from None
    if rows == 0:
        raise DataError(f"{label}: the file has a header but no data rows")


def typed_features(table: RawTable, numeric: list[str], categorical: list[str],
                   na_values: list[str], missing_codes: dict[str, list[str]] | None = None
                   ) -> pd.DataFrame:
    """:func:`heartflow.data.dataset.prepare_features` of a table's text cells, vectorised;
    a column the fast path does not fully accept is typed cell by cell (its error names the
    row)."""
    codes = missing_codes or {}
    frame = table.frame
    fast = {}
    slow_numeric = []
    for name in numeric:
        values = _fast_numbers(frame[name], MissingRule.of([*na_values, *codes.get(name, [])]))
        if values is None:
            slow_numeric.append(name)
        else:
            fast[name] = values
    if slow_numeric:  # exact rules and their errors
        exact = prepare_features(frame, slow_numeric, [], na_values, table.where,
                                 table.source, missing_codes)
        fast.update({name: exact[name].to_numpy(np.float64) for name in slow_numeric})
    out = pd.DataFrame(index=range(len(frame)))
    for name in numeric:
        out[name] = pd.Series(fast[name], dtype=np.float64)
    for name in categorical:
        rule = MissingRule.of([*na_values, *codes.get(name, [])])
        text = frame[name]
        mapping = {v: None if rule(v) else normalize_level(v) for v in text.unique()}
        levels = text.map(mapping).to_numpy(dtype=object, copy=True)
        levels[pd.isna(levels)] = None
        out[name] = pd.Series(levels, dtype=object)
    return out


def _fast_numbers(cells: pd.Series, rule: MissingRule) -> np.ndarray | None:
    """A numeric column's text cells as float64 (NaN where missing) when every present
    cell is a plain finite number in range; None when the cell-by-cell rules must decide."""
    # lazy: pyarrow, only when a large file is scored in chunks
    import pyarrow as pa
    import pyarrow.compute as pc

    text = cells.str.strip()
    missing = rule.mask(text)
    present = pa.array(text.where(~missing, None), type=pa.string())
    plain = pc.match_substring_regex(present, f"^(?:{_NUMBER.pattern})$")
    if not pc.all(pc.or_kleene(plain, pc.is_null(present))).as_py():
        return None
    values = np.array(pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False))
    finite = values[~missing]
    if len(finite) and not (np.abs(finite) <= MAX_ABS_VALUE).all():
        return None
    values[missing] = math.nan
    if rule.numbers:  # a number the marker's text did not match ('1.50' for '1.5')
        values[np.isin(values, list(rule.numbers))] = math.nan
    return values
