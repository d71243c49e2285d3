"""Streaming data for files too large to hold in memory.

One pass with pandas in chunks computes everything the encoder needs (training-split
statistics, category levels, target classes), checks every cell, and gives each row its
part from the same row key and seed as the in-memory split (one byte per row); then a
``tf.data`` pipeline reads the CSV block by block, keeps the rows of one part, decodes
and encodes them in TensorFlow ops, and feeds Keras. Memory stays flat in the number of
rows, but for that byte.

Differences from the in-memory path, by design: a row's part is a threshold on its hash
(not stratified, so the proportions hold to within sampling error); the numeric median
used for missing values comes from a reservoir sample of up to 200,000 training values
(exact below that); early stopping's validation and the promotion gate use a sample of
up to 50,000 rows drawn uniformly from the whole of their part (the test metrics use
every test row).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from heartflow.data.encoder import TabularEncoder
from heartflow.data.split import check_sufficiency, row_keys, uniform
from heartflow.data.table import MAX_ABS_VALUE, normalize_level
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
    """0 train, 1 validation, 2 test from each row's uniform number (not stratified)."""
    return np.where(u < test, 2, np.where(u < test + validation, 1, 0)).astype(np.uint8)


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


def _binary_target(raw: pd.Series, target: TargetSpec, na: set[str], where: str,
                   offset: int) -> np.ndarray:
    missing = np.flatnonzero(raw.isin(na).to_numpy())
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
    na = set(data.na_values)
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
    part_codes: list[np.ndarray] = []
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
        keys = row_keys(chunk, data.id)
        part = threshold_parts(uniform(keys, split.seed), split.test, split.validation)
        part_codes.append(part)
        train = part == 0
        typed = {}
        for col in feats.numeric:
            text = chunk[col].str.strip()
            is_na = text.isin(na).to_numpy()
            values = pd.to_numeric(text.where(~is_na, None), errors="coerce").to_numpy(
                dtype=np.float64)
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
            is_na = text.isin(na)
            mapping = {v: normalize_level(v) for v in text[~is_na].unique()}
            normalized = text.map(mapping).where(~is_na, None)
            levels[col].update(mapping.values())
            for level, n in normalized[train].value_counts().items():
                mode_counts[col][level] = mode_counts[col].get(level, 0) + int(n)
            typed[col] = normalized.to_numpy(dtype=object)
        y = _binary_target(chunk[target.column].str.strip(), target, na, path, offset)
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
    from heartflow.data.table import level_sort_key

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
                       row_parts=np.concatenate(part_codes) if part_codes else
                       np.empty(0, np.uint8))


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


def tf_dataset(spec: Spec, path: str, stats: StreamStats, part: int, batch_size: int,
               shuffle_seed: int | None = None, shuffle_buffer: int = 10_000,
               weights: dict[int, float] | None = None):
    """(x, y) batches of one split part, read and encoded by TensorFlow ops.

    With ``weights`` ({class: weight}), batches are (x, y, per-row weight).
    """
    import tensorflow as tf

    enc = stats.encoder
    data = spec.data
    names = stats.columns
    position = {name: i for i, name in enumerate(names)}
    target = data.target_spec
    na = tf.constant(sorted(set(data.na_values)) or [""])
    tables = {}
    for col in enc.categorical:
        untrained = set(enc.untrained.get(col, ()))
        kept = [(lvl, i) for i, lvl in enumerate(enc.levels[col]) if lvl not in untrained]
        tables[col] = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant([lvl for lvl, _ in kept] or [""]),
            tf.constant([i for _, i in kept] or [-1], dtype=tf.int64)), -1)
    comparison = target.comparison

    def is_na(text):
        return tf.reduce_any(tf.equal(tf.expand_dims(text, -1), na), axis=-1)

    def normalize(text):
        text = tf.strings.regex_replace(text, r"^\+?0*(\d+)(\.0*)?$", r"\1")
        text = tf.strings.regex_replace(text, r"^-0*(\d+)(\.0*)?$", r"-\1")
        return tf.where(tf.equal(text, "-0"), "0", text)

    def encode(lines):
        fields = tf.io.decode_csv(lines, record_defaults=[""] * len(names),
                                  field_delim=data.delimiter)
        columns = []
        for col in enc.numeric:
            text = tf.strings.strip(fields[position[col]])
            missing = is_na(text)
            safe = tf.where(missing, "0", text)
            value = tf.strings.to_number(safe, tf.float64)
            value = tf.where(missing, tf.constant(enc.medians[col], tf.float64), value)
            columns.append(tf.cast((value - enc.means[col]) / enc.stds[col], tf.float32)[:, None])
        for col in enc.categorical:
            text = tf.strings.strip(fields[position[col]])
            text = tf.where(is_na(text), enc.modes[col], normalize(text))
            index = tables[col].lookup(text)
            columns.append(tf.one_hot(index, len(enc.levels[col]), dtype=tf.float32))
        raw_target = tf.strings.strip(fields[position[target.column]])
        if comparison is not None:
            number = tf.strings.to_number(raw_target, tf.float64)
            y = {"==": tf.equal, "!=": tf.not_equal, ">=": tf.greater_equal,
                 "<=": tf.less_equal, ">": tf.greater, "<": tf.less}[comparison[0]](
                number, comparison[1])
        elif target.positive is not None:
            y = tf.equal(normalize(raw_target), normalize_level(target.positive))
        else:
            y = tf.equal(normalize(raw_target), "1")
        return tf.concat(columns, axis=1), tf.cast(y, tf.float32)[:, None]

    row_parts = tf.constant(stats.row_parts)  # one byte per row, from the statistics pass

    def number(count, block):
        """Row numbers of a block's non-blank lines (blank lines are skipped, as pandas does)."""
        keep = tf.strings.length(tf.strings.strip(block)) > 0
        lines = tf.boolean_mask(block, keep)
        n = tf.shape(lines, out_type=tf.int64)[0]
        return count + n, (count + tf.range(n, dtype=tf.int64), lines)

    def select_and_encode(index, lines):
        code = tf.gather(row_parts, index)
        return encode(tf.boolean_mask(lines, tf.equal(code, tf.constant(part, tf.uint8))))

    # Whole blocks of lines go through each op (per-line dataset ops would dominate).
    lines = tf.data.TextLineDataset(path, buffer_size=1 << 20)
    if stats.header:
        lines = lines.skip(1)
    blocks = lines.batch(8192).scan(tf.constant(0, tf.int64), number)
    # Fixed (not AUTOTUNE) parallelism and buffers: autotuned buffers grow over a long
    # pass, and memory must not grow with the number of rows.
    workers = max(1, min(4, os.cpu_count() or 1))
    ds = blocks.map(select_and_encode, num_parallel_calls=workers, deterministic=True)
    ds = ds.prefetch(workers).unbatch()
    if shuffle_seed is not None:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if weights is not None:
        w0, w1 = float(weights.get(0, 1.0)), float(weights.get(1, 1.0))
        ds = ds.map(lambda x, y: (x, y, tf.where(y[:, 0] > 0.5, w1, w0)))
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)
