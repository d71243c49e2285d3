"""Streaming data for files too large to hold in memory.

One pass with pandas in chunks computes everything the encoder needs (training-split
statistics, category levels, target classes), checks every cell, gives each row its part
from the same row key and seed as the in-memory split (one byte per row), and writes the
typed rows to a binary cache on disk (:class:`RowCache`). Every epoch then reads that cache
block by block, keeps the rows of one part, encodes them with vectorised NumPy
(:class:`BlockEncoder`, identical to the in-memory encoder) and feeds Keras: the CSV text
is parsed once, not once per epoch. Memory stays flat in the number of rows, but for that
byte.

The same rules as in memory: the same row keys, and so the same part for every row
(fixed cut-offs on the key's uniform number, :mod:`heartflow.data.split`); the same
missing cells (``na_values`` and ``missing_codes`` compared as typed values,
:class:`heartflow.data.table.MissingRule`). Differences, by design: the numeric median
used for missing values comes from a reservoir sample of up to 200,000 training values
(exact below that); early stopping's validation and the promotion gate use a sample of
up to 50,000 rows drawn uniformly from the whole of their part (the test metrics use
every test row).

A streamed split is recorded as the rows it trains and validates on, compactly: the first
64 bits of each such row's keyed key (:func:`write_seen_keys`), which the promotion gate
reads to leave those rows out when it re-scores the model as champion.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from heartflow.data.encoder import TabularEncoder
from heartflow.data.split import (
    PART_CODES,
    RowKeyer,
    check_sufficiency,
    part_codes,
    row_keys,
    uniform,
)
from heartflow.data.table import MAX_ABS_VALUE, MissingRule, level_sort_key, normalize_level
from heartflow.errors import DataError
from heartflow.spec.schema import COMPARISONS, Spec, TargetSpec

AUTO_STREAM_BYTES = 200 * 1024 * 1024
SAMPLE_ROWS = 50_000        # validation rows held for early stopping; test rows for the gate
RESERVOIR = 200_000         # training values per numeric column for the median


def should_stream(spec: Spec, path: str) -> bool:
    """`data.streaming: true`, or `auto` and the file is larger than 200 MB."""
    if spec.data.streaming == "auto":
        return os.path.getsize(path) > AUTO_STREAM_BYTES
    return bool(spec.data.streaming)


def threshold_parts(u: np.ndarray, test: float, validation: float) -> np.ndarray:
    """0 train, 1 validation, 2 test: the in-memory split's rule (``split.part_codes``)."""
    return part_codes(u, test, validation)


_SAMPLE_SALT = 1_000_003  # the samples' priorities: another seed, independent of the split


@dataclass
class StreamStats:
    """What the single pass found."""

    encoder: TabularEncoder
    rows: int
    parts: dict[str, int]
    classes: list[str]
    columns: list[str]
    header: bool
    samples: dict[str, pd.DataFrame] = field(default_factory=dict)  # typed rows per part
    sample_y: dict[str, np.ndarray] = field(default_factory=dict)
    sample_keys: dict[str, np.ndarray] = field(default_factory=dict)
    train_positives: int = 0
    row_parts: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))  # per row
    cache: RowCache | None = None  # every row, typed, on disk: what the epochs read


def _binary_target(raw: pd.Series, target: TargetSpec, na: MissingRule, where: str,
                   offset: int) -> np.ndarray:
    missing = np.flatnonzero(na.mask(raw))
    if len(missing):
        rows = ", ".join(f"row {offset + int(i) + 1}" for i in missing[:5])
        raise DataError(f"{where}: target column {target.column!r} is missing in "
                        f"{len(missing)} row(s) of this block: {rows}")
    comparison = target.comparison
    if comparison:
        values = pd.to_numeric(raw, errors="coerce").to_numpy()
        bad = np.flatnonzero(np.isnan(values))
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{where}: target column {target.column!r}, row {offset + i + 1}: "
                            f"{raw.iloc[i]!r} is not a number (target rule "
                            f"'{comparison[0]} {comparison[1]:g}')")
        return COMPARISONS[comparison[0]](values, comparison[1]).astype(np.float32)
    distinct = raw.unique()  # normalise each distinct text once, not once per row
    normal = dict(zip(distinct, map(normalize_level, distinct), strict=True))
    if target.positive is not None:
        positive = normalize_level(target.positive)
        return raw.isin([v for v in distinct if normal[v] == positive]).to_numpy(np.float32)
    levels = set(normal.values())
    if not levels <= {"0", "1"}:
        raise DataError(f"{where}: target has values {sorted(levels)[:5]}; a sigmoid output "
                        "needs 0/1 (or data.target.positive)")
    return raw.isin([v for v in distinct if normal[v] == "1"]).to_numpy(np.float32)


def scan(spec: Spec, path: str, columns: list[str] | None, chunk_rows: int = 100_000,
         seed: int = 0) -> StreamStats:
    """One chunked pass: statistics from training rows, levels from all rows, checks."""
    if spec.task != "binary":
        raise DataError("streaming currently supports binary (sigmoid) models")
    data = spec.data
    feats = data.features
    target = data.target_spec
    na = MissingRule.of(data.na_values)
    rules = {c: MissingRule.of([*data.na_values, *data.missing_codes.get(c, [])])
             for c in [*feats.numeric, *feats.categorical]}
    split = data.split
    rng = np.random.default_rng(seed)
    sums = dict.fromkeys(feats.numeric, 0.0)
    sumsq = dict.fromkeys(feats.numeric, 0.0)
    counts = dict.fromkeys(feats.numeric, 0)
    missing = dict.fromkeys(feats.numeric, 0)
    reservoir: dict[str, np.ndarray] = {c: np.empty(0) for c in feats.numeric}
    seen = dict.fromkeys(feats.numeric, 0)
    levels: dict[str, set[str]] = {c: set() for c in feats.categorical}
    mode_counts: dict[str, dict[str, int]] = {c: {} for c in feats.categorical}
    parts = {"train": 0, "validation": 0, "test": 0}
    positives = 0
    positives_in = {"train": 0, "validation": 0, "test": 0}
    kept: dict[str, pd.DataFrame] = {}  # per part: the rows of lowest priority so far
    row_codes: list[np.ndarray] = []
    cache = RowCache(list(feats.numeric), list(feats.categorical))
    header = columns is None
    reader = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                         chunksize=chunk_rows, sep=data.delimiter,
                         header=0 if header else None, names=columns, encoding="utf-8-sig")
    offset = 0
    names: list[str] = []
    for chunk in reader:
        names = list(chunk.columns)
        needed = [*feats.numeric, *feats.categorical, target.column]
        absent = [c for c in needed if c not in chunk.columns]
        if absent:
            raise DataError(f"{path}: column(s) {', '.join(map(repr, absent))} named in the "
                            f"spec are not in the data. Columns present: {', '.join(names)}")
        keys = row_keys(chunk, data.id, data.na_values)
        part = threshold_parts(uniform(keys, split.seed), split.test, split.validation)
        row_codes.append(part)
        train = part == 0
        typed = {}
        for col in feats.numeric:
            text = chunk[col].str.strip()
            is_na = rules[col].mask(text)
            values = _numbers(text.where(~is_na, None))
            bad = np.flatnonzero(np.isnan(values) & ~is_na)
            if len(bad):
                i = int(bad[0])
                raise DataError(f"{path}: column {col!r}, row {offset + i + 1}: "
                                f"{chunk[col].iloc[i]!r} is not a number (numeric feature)")
            huge = np.flatnonzero(~np.isnan(values) & ~(np.abs(values) <= MAX_ABS_VALUE))
            if len(huge):
                i = int(huge[0])
                raise DataError(f"{path}: column {col!r}, row {offset + i + 1}: "
                                f"{chunk[col].iloc[i]!r} is not a finite number in range")
            if rules[col].numbers:  # a number the marker's text did not match ('1_000')
                values = np.where(np.isin(values, list(rules[col].numbers)), np.nan, values)
            typed[col] = values
            obs = values[train & ~np.isnan(values)]
            sums[col] += float(obs.sum())
            sumsq[col] += float((obs ** 2).sum())
            counts[col] += len(obs)
            missing[col] += int((train & np.isnan(values)).sum())
            reservoir[col] = _reservoir(reservoir[col], obs, seen[col], rng)
            seen[col] += len(obs)
        for col in feats.categorical:
            text = chunk[col].str.strip()
            rule = rules[col]  # each distinct text judged and normalised once
            mapping = {v: None if rule(v) else normalize_level(v) for v in text.unique()}
            normalized = text.map(mapping).astype(object)
            normalized = normalized.where(normalized.notna(), None)
            levels[col].update(v for v in mapping.values() if v is not None)
            for level, n in normalized[train].value_counts().items():
                mode_counts[col][level] = mode_counts[col].get(level, 0) + int(n)
            typed[col] = normalized.to_numpy(dtype=object)
        y = _binary_target(chunk[target.column].str.strip(), target, na, path, offset)
        cache.append(typed, y, keys)
        positives += int(y[train].sum())
        for name, code in (("train", 0), ("validation", 1), ("test", 2)):
            parts[name] += int((part == code).sum())
            positives_in[name] += int(y[part == code].sum())
        priority = uniform(keys, split.seed + _SAMPLE_SALT)
        for name, code in (("validation", 1), ("test", 2)):
            rows = np.flatnonzero(part == code)
            frame = pd.DataFrame({c: typed[c][rows] for c in [*feats.numeric,
                                                                *feats.categorical]})
            frame["__y"], frame["__key"], frame["__priority"] = y[rows], keys[rows], \
                priority[rows]
            both = pd.concat([kept[name], frame], ignore_index=True) if name in kept else frame
            kept[name] = both.nsmallest(SAMPLE_ROWS, "__priority")
        offset += len(chunk)
    if offset == 0:
        raise DataError(f"{path}: the file has no data rows")
    check_sufficiency(offset, parts, {p: {0: parts[p] - positives_in[p], 1: positives_in[p]}
                                      for p in parts}, split)
    encoder = TabularEncoder(list(feats.numeric), list(feats.categorical), list(data.na_values))
    for col in feats.numeric:
        median = float(np.median(reservoir[col])) if len(reservoir[col]) else 0.0
        n = counts[col] + missing[col]
        total = sums[col] + missing[col] * median
        total_sq = sumsq[col] + missing[col] * median ** 2
        mean = total / max(n, 1)
        var = max(total_sq / max(n, 1) - mean ** 2, 0.0)
        encoder.medians[col], encoder.means[col] = median, mean
        encoder.stds[col] = float(np.sqrt(var)) if var > 0 else 1.0

    for col in feats.categorical:
        encoder.levels[col] = sorted(levels[col], key=level_sort_key)
        encoder.untrained[col] = sorted(set(levels[col]) - set(mode_counts[col]),
                                        key=level_sort_key)
        best = max(mode_counts[col].values(), default=0)
        encoder.modes[col] = sorted((lvl for lvl, n in mode_counts[col].items() if n == best),
                                    key=level_sort_key)[0] if best else encoder.levels[col][0]
    return StreamStats(encoder=encoder, rows=offset, parts=parts, classes=["0", "1"],
                       train_positives=positives,
                       columns=names, header=header,
                       samples={k: v.drop(columns=["__y", "__key", "__priority"]).reset_index(
                           drop=True) for k, v in kept.items() if len(v)},
                       sample_y={k: v["__y"].to_numpy(np.float32) for k, v in kept.items()
                                 if len(v)},
                       sample_keys={k: v["__key"].to_numpy(np.uint64) for k, v in kept.items()
                                    if len(v)},
                       row_parts=np.concatenate(row_codes) if row_codes else
                       np.empty(0, np.uint8), cache=cache.close())


def _numbers(text: pd.Series) -> np.ndarray:
    """Text cells as float64 (NaN where missing or not a number: the caller says which row).

    pyarrow's cast parses a block about 5x faster than ``pd.to_numeric``; where it refuses
    a cell, pandas' ``errors="coerce"`` makes that cell NaN for the caller's check."""
    # lazy: pyarrow, only when a large file is streamed
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(pa.array(text, type=pa.string()), pa.float64()).to_numpy(
            zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)


def _reservoir(sample: np.ndarray, values: np.ndarray, seen: int, rng) -> np.ndarray:
    """Vitter's algorithm R over a chunk, vectorised (exact while under RESERVOIR values)."""
    room = max(RESERVOIR - len(sample), 0)
    sample = np.concatenate([sample, values[:room]])
    rest = values[room:]
    if len(rest):
        positions = rng.integers(0, seen + room + 1 + np.arange(len(rest)))
        hit = positions < RESERVOIR
        sample[positions[hit]] = rest[hit]
    return sample


class RowCache:
    """Every row of a streamed file, typed, in binary files on disk (the statistics pass
    writes it; each epoch reads it): numeric values as float64 (NaN where missing),
    categorical levels as int32 codes into per-column level lists (-1 where missing), the
    label as float32, the row's typed-cell key as uint64 (:func:`~heartflow.data.split.row_keys`;
    it leaves the process only keyed: :func:`write_seen_keys`). 88 bytes a row for the
    heart data; parsing the CSV text once instead of every epoch is what makes streaming run
    at memory speed. Removed when the process ends.
    """

    def __init__(self, numeric: list[str], categorical: list[str]) -> None:

        self.numeric, self.categorical = numeric, categorical
        self.folder = tempfile.mkdtemp(prefix="heartflow-stream-")
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.codes: dict[str, dict[str, int]] = {c: {} for c in categorical}
        self.rows = 0
        self._files = {name: open(os.path.join(self.folder, f"{name}.bin"), "wb")
                       for name in ("numeric", "codes", "y", "keys")}

    def append(self, typed: dict[str, np.ndarray], y: np.ndarray, keys: np.ndarray) -> None:
        """Add a block of typed rows (numeric float64, categorical normalised text or None),
        their labels and their typed-cell keys."""
        n = len(y)
        numeric = np.empty((n, len(self.numeric)), dtype=np.float64)
        for j, col in enumerate(self.numeric):
            numeric[:, j] = typed[col]
        codes = np.empty((n, len(self.categorical)), dtype=np.int32)
        for j, col in enumerate(self.categorical):
            known = self.codes[col]
            values = pd.Series(typed[col], dtype=object)
            for level in values.dropna().unique():
                known.setdefault(level, len(known))
            codes[:, j] = values.map(known).fillna(-1).to_numpy(np.int32)
        numeric.tofile(self._files["numeric"])
        codes.tofile(self._files["codes"])
        np.asarray(y, dtype=np.float32).tofile(self._files["y"])
        np.asarray(keys, dtype=np.uint64).tofile(self._files["keys"])
        self.rows += n

    def close(self) -> RowCache:
        """Finish writing."""
        for fh in self._files.values():
            fh.close()
        return self

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Numeric values, level codes and labels of rows ``start:stop``.

        Plain reads into fresh arrays, not a memory map: mapped pages of the cache would
        count in the process's resident memory as the epoch reads through the file
        (80 bytes a row: 0.8 GB at 10M rows); this way memory holds one block.
        """
        parts = []
        for name, dtype, width in (("numeric", np.float64, len(self.numeric)),
                                   ("codes", np.int32, len(self.categorical)),
                                   ("y", np.float32, 1)):
            count = (stop - start) * width
            if count <= 0:
                parts.append(np.zeros((max(stop - start, 0), width), dtype=dtype))
                continue
            with open(os.path.join(self.folder, f"{name}.bin"), "rb") as fh:
                fh.seek(start * width * np.dtype(dtype).itemsize)
                parts.append(np.fromfile(fh, dtype=dtype, count=count).reshape(-1, width))
        numeric, codes, y = parts
        return numeric, codes, y[:, 0]

    def keys(self, start: int, stop: int) -> np.ndarray:
        """The typed-cell keys of rows ``start:stop``."""
        with open(os.path.join(self.folder, "keys.bin"), "rb") as fh:
            fh.seek(start * 8)
            return np.fromfile(fh, dtype=np.uint64, count=max(stop - start, 0))

    def encoder_for(self, enc: TabularEncoder) -> BlockEncoder:
        """Vectorised encoding of cached rows, identical to ``enc.transform``."""
        return BlockEncoder(enc, self)


class BlockEncoder:
    """``TabularEncoder.transform`` for cached rows, vectorised over level codes."""

    def __init__(self, enc: TabularEncoder, cache: RowCache) -> None:
        self.width = enc.width
        self.medians = np.array([enc.medians[c] for c in enc.numeric])
        self.means = np.array([enc.means[c] for c in enc.numeric])
        self.stds = np.array([enc.stds[c] for c in enc.numeric])
        self.lookups: list[np.ndarray] = []  # per categorical: code -> column (-1: none)
        col = len(enc.numeric)
        for name in enc.categorical:
            skip = set(enc.untrained.get(name, ()))
            index = {lvl: col + i for i, lvl in enumerate(enc.levels[name]) if lvl not in skip}
            levels = cache.codes[name]
            lookup = np.full(len(levels) + 1, -1, dtype=np.int64)  # last entry: missing
            for level, code in levels.items():
                lookup[code] = index.get(level, -1)
            lookup[-1] = index.get(enc.modes[name], -1)
            self.lookups.append(lookup)
            col += len(enc.levels[name])

    def __call__(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        n = len(numeric)
        out = np.zeros((n, self.width), dtype=np.float32)
        if len(self.means):
            values = np.where(np.isnan(numeric), self.medians, numeric)
            out[:, :len(self.means)] = (values - self.means) / self.stds
        rows = np.arange(n)
        for j, lookup in enumerate(self.lookups):
            column = lookup[codes[:, j]]  # code -1 reads the last entry: the mode's column
            hit = column >= 0
            out[rows[hit], column[hit]] = 1.0
        return out


BLOCK_ROWS = 1 << 17  # rows read, selected and encoded at a time


def write_seen_keys(stats: StreamStats, keyer: RowKeyer, path: str) -> int:
    """Write the rows the model trains or validates on (every row of the train and
    validation parts) as a NumPy ``.npy`` file of the first 64 bits of their keyed keys
    (:meth:`RowKeyer.prefixes`, uint64 big endian, in file order); returns how many.

    A streamed run's record of its split, read back by the promotion gate as
    :class:`heartflow.data.split.KeyPrefixes`: 8 bytes a seen row (64 MB for 8 million),
    no patient's cell and no unkeyed key. Written block by block from the row cache, so
    memory stays one block.
    """
    cache = stats.cache
    assert cache is not None
    count = stats.parts["train"] + stats.parts["validation"]
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": ">u8", "fortran_order": False, "shape": (count,)})
        for start in range(0, cache.rows, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, cache.rows)
            rows = np.flatnonzero(stats.row_parts[start:stop] != PART_CODES["test"])
            if len(rows):
                keyer.prefixes(cache.keys(start, stop)[rows]).astype(">u8").tofile(fh)
    return count


def part_batches(stats: StreamStats, part: int, batch_size: int,
                 shuffle_seed: int | None = None, weights: dict[int, float] | None = None,
                 epoch: int = 0):
    """(x, y[, w]) numpy batches of one split part from the row cache.

    Shuffled (with a seed): blocks in a random order, rows within each block permuted;
    memory stays one block whatever the number of rows. Every batch but the last holds
    ``batch_size`` rows. With ``weights`` ({class: weight}), a per-row weight too.
    """
    cache = stats.cache
    assert cache is not None
    encode = cache.encoder_for(stats.encoder)
    starts = np.arange(0, cache.rows, BLOCK_ROWS)
    rng = np.random.default_rng([shuffle_seed, epoch]) if shuffle_seed is not None else None
    if rng is not None:
        starts = rng.permutation(starts)
    carry_x = np.empty((0, encode.width), np.float32)
    carry_y = np.empty((0,), np.float32)
    for start in starts:
        stop = min(start + BLOCK_ROWS, cache.rows)
        rows = np.flatnonzero(stats.row_parts[start:stop] == part)  # within the block
        if rng is not None:
            rows = rng.permutation(rows)
        if not len(rows):
            continue
        numeric, codes, labels = cache.block(start, stop)
        x = encode(numeric[rows], codes[rows])
        y = labels[rows]
        if len(carry_y):
            x, y = np.concatenate([carry_x, x]), np.concatenate([carry_y, y])
        full = len(y) - len(y) % batch_size
        for i in range(0, full, batch_size):
            yield _with_weights(x[i:i + batch_size], y[i:i + batch_size], weights)
        carry_x, carry_y = x[full:], y[full:]
    if len(carry_y):
        yield _with_weights(carry_x, carry_y, weights)


def _with_weights(x: np.ndarray, y: np.ndarray, weights: dict[int, float] | None):
    if weights is None:
        return x, y[:, None]
    w = np.where(y > 0.5, weights.get(1, 1.0), weights.get(0, 1.0)).astype(np.float32)
    return x, y[:, None], w


def tf_batches(stats: StreamStats, part: int, batch_size: int, shuffle_seed: int | None,
               weights: dict[int, float] | None = None):
    """:func:`part_batches` as a tf.data pipeline, reshuffled every epoch (for Keras)."""
    # lazy: TensorFlow's 4 s import, only when a streamed model is trained
    import tensorflow as tf

    width = stats.encoder.width
    signature = [tf.TensorSpec((None, width), tf.float32), tf.TensorSpec((None, 1), tf.float32)]
    if weights is not None:
        signature.append(tf.TensorSpec((None,), tf.float32))
    epochs = iter(range(1 << 30))

    def generate():
        yield from part_batches(stats, part, batch_size, shuffle_seed, weights, next(epochs))

    return tf.data.Dataset.from_generator(generate, output_signature=tuple(signature)).prefetch(2)
