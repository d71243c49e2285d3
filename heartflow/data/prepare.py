"""The preprocess step: data -> split -> fitted encoder -> batches, in memory or streamed.

Both kinds of prepared data answer the same questions, so training, evaluation and
registration run one path whatever the data's size: how many rows each part holds,
training batches, validation arrays, test batches, and the typed test rows the
promotion gate re-scores the champion on.

Nothing here hands out a patient's row to be recorded: row keys leave only keyed
(:class:`heartflow.data.split.RowKeyer`, under the secret the caller passes to
:func:`prepare`), and the logged model's input example is a synthetic record built from
training statistics (:meth:`heartflow.data.encoder.TabularEncoder.synthetic_record`).
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from heartflow.data.batches import (
    array_batches,
    class_counts,
    sample_weights,
    target_array,
)
from heartflow.data.dataset import Dataset, dataset_from_frame, load_dataset
from heartflow.data.encoder import TabularEncoder
from heartflow.data.sources import ResolvedSource, file_sha256, resolve_source
from heartflow.data.split import RowKeyer, Split, split_rows
from heartflow.data.streaming import part_batches, scan, should_stream, tf_batches
from heartflow.spec.loading import LoadedSpec, check_streamable
from heartflow.spec.schema import Spec


class FrameSource:
    """Rows handed over as a pandas DataFrame (notebooks, scripts) instead of a file.

    Slotted on purpose: Prefect records flow parameters as JSON and falls back to the
    type's name for objects it cannot encode, instead of encoding every cell.
    """

    __slots__ = ("frame", "label")

    def __init__(self, frame: pd.DataFrame, label: str = "<DataFrame>") -> None:
        self.frame, self.label = frame, label


class PreparedData(Protocol):
    """What the training, evaluation and register steps need from the data."""

    encoder: TabularEncoder
    streaming: bool
    keyer: RowKeyer

    @property
    def classes(self) -> list[str]: ...
    @property
    def sha256(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def width(self) -> int: ...
    def sizes(self) -> dict[str, int]: ...
    def train_class_counts(self) -> dict[int, int]: ...
    def train_batches(self, spec: Spec, weights: dict[int, float] | None) -> tuple[object, int]:
        ...
    def validation(self) -> tuple[np.ndarray | None, np.ndarray | None]: ...
    def test_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def gate_rows(self) -> tuple[pd.DataFrame, np.ndarray, list[str]]: ...
    def manifest(self) -> pd.DataFrame | None: ...
    def example(self) -> pd.DataFrame: ...


@dataclass
class Prepared:
    """In-memory data: encoded arrays for each part of the split, and what produced them."""

    dataset: Dataset
    split: Split
    encoder: TabularEncoder
    x: np.ndarray  # encoded rows, all of them, in file order
    streaming: bool = False
    keyer: RowKeyer = field(default_factory=RowKeyer.ephemeral, repr=False, compare=False)

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the train, validation or test part."""
        rows = getattr(self.split, name)
        return self.x[rows], self.dataset.y[rows]

    @property
    def width(self) -> int:
        """Encoded input width."""
        return self.encoder.width

    @property
    def classes(self) -> list[str]:
        """Class labels (empty for regression)."""
        return self.dataset.classes

    @property
    def sha256(self) -> str:
        """Fingerprint of the data."""
        return self.dataset.sha256

    @property
    def source(self) -> str:
        """Where the rows came from."""
        return self.dataset.source

    @property
    def rows(self) -> int:
        """All rows."""
        return len(self.dataset)

    def sizes(self) -> dict[str, int]:
        """Rows per part."""
        return self.split.sizes()

    def train_class_counts(self) -> dict[int, int]:
        """Training rows per class."""
        return class_counts(self.dataset.y[self.split.train])

    def train_batches(self, spec: Spec, weights: dict[int, float] | None) -> tuple[object, int]:
        """A cached, shuffled tf.data pipeline of the training rows, and steps per epoch."""
        x, y = self.part("train")
        t = spec.train
        ds = array_batches(x, target_array(y, spec), sample_weights(y, weights), t.batch_size,
                           t.seed)
        return ds, max(1, math.ceil(len(x) / t.batch_size))

    def validation(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Validation rows (None when the split has none)."""
        x, y = self.part("validation")
        return (x, y) if len(x) else (None, None)

    def test_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All test rows in one batch (metrics are exact)."""
        yield self.part("test")

    def gate_rows(self) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
        """Typed test rows, labels and keyed row keys, for re-scoring the champion."""
        rows = self.split.test
        return (self.dataset.features.iloc[rows].reset_index(drop=True), self.dataset.y[rows],
                self.keyer.hex(self._keys()[rows]))

    def _keys(self) -> np.ndarray:
        keys = self.dataset.keys
        return np.arange(self.rows, dtype=np.uint64) if keys is None else keys

    def manifest(self) -> pd.DataFrame:
        """Keyed row key -> part, for every row (logged with the run; read by later gates)."""
        part = np.empty(self.rows, dtype=object)
        for name in ("train", "validation", "test"):
            part[getattr(self.split, name)] = name
        return pd.DataFrame({"key": self.keyer.hex(self._keys()), "part": part})

    def development(self) -> Dataset:
        """The training and validation rows (what cross-validation may use)."""
        rows = np.sort(np.concatenate([self.split.train, self.split.validation]))
        d = self.dataset
        return Dataset(features=d.features.iloc[rows].reset_index(drop=True), y=d.y[rows],
                       classes=d.classes, sha256=d.sha256, source=d.source,
                       keys=None if d.keys is None else d.keys[rows])

    def example(self) -> pd.DataFrame:
        """The logged model's input example: one synthetic record, not a patient's row."""
        return self.encoder.synthetic_record()


@dataclass
class StreamedData:
    """A file too large for memory: one pass (statistics, checks, typed rows cached on disk),
    then batches encoded from that cache."""

    spec: Spec
    path: str
    stats: object  # heartflow.data.streaming.StreamStats
    sha256: str
    streaming: bool = True
    keyer: RowKeyer = field(default_factory=RowKeyer.ephemeral, repr=False, compare=False)
    _validation_x: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def encoder(self) -> TabularEncoder:
        """The encoder fitted in the statistics pass."""
        return self.stats.encoder

    @property
    def width(self) -> int:
        """Encoded input width."""
        return self.stats.encoder.width

    @property
    def classes(self) -> list[str]:
        """Class labels."""
        return self.stats.classes

    @property
    def source(self) -> str:
        """The file."""
        return self.path

    @property
    def rows(self) -> int:
        """All rows."""
        return self.stats.rows

    def sizes(self) -> dict[str, int]:
        """Rows per part."""
        return dict(self.stats.parts)

    def train_class_counts(self) -> dict[int, int]:
        """Training rows per class."""
        positives = self.stats.train_positives
        return {0: self.stats.parts["train"] - positives, 1: positives}

    def train_batches(self, spec: Spec, weights: dict[int, float] | None) -> tuple[object, int]:
        """Shuffled batches read and encoded from the file, and steps per epoch."""

        t = spec.train
        ds = tf_batches(self.stats, 0, t.batch_size, shuffle_seed=t.seed, weights=weights)
        return ds, max(1, math.ceil(self.stats.parts["train"] / t.batch_size))

    def validation(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The validation sample held by the statistics pass (encoded once)."""
        if "validation" not in self.stats.samples:
            return None, None
        if self._validation_x is None:
            self._validation_x = self.encoder.transform(self.stats.samples["validation"])
        return self._validation_x, self.stats.sample_y["validation"]

    def test_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every test row, in blocks read from the file."""

        for x, y in part_batches(self.stats, 2, 8192):
            yield x, y.ravel()

    def gate_rows(self) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
        """The test sample held by the statistics pass (drawn from the whole part)."""
        return (self.stats.samples["test"], self.stats.sample_y["test"],
                self.keyer.hex(self.stats.sample_keys["test"]))

    def manifest(self) -> None:
        """None: a streamed split is a rule (hash and thresholds), not a list of rows."""
        return None

    def example(self) -> pd.DataFrame:
        """The logged model's input example: one synthetic record, not a patient's row."""
        return self.encoder.synthetic_record()


def prepare(loaded: LoadedSpec, resolved: ResolvedSource | None = None,
            frame: FrameSource | None = None, row_secret: bytes | None = None
            ) -> PreparedData:
    """Read (or stream), check, split and encode the data; errors name column and row.

    ``frame`` (rows as a DataFrame) replaces the spec's source; otherwise ``resolved`` is
    the spec's source already resolved to a file (resolved here when not given).
    ``row_secret`` keys every row key that leaves the process (manifest, gate rows); without
    it they are keyed by a random secret of this process, so they match nothing recorded.
    A file read into memory is read, checked, split and encoded once per process for the
    same file contents and ``data`` section (a notebook's re-runs): later runs reuse it.
    """
    spec = loaded.spec
    keyer = RowKeyer(row_secret) if row_secret else RowKeyer.ephemeral()
    if frame is not None:
        return prepare_in_memory(spec, dataset_from_frame(frame.frame, spec, frame.label),
                                 keyer)
    if resolved is None:

        resolved = resolve_source(spec.data.source, loaded.base_dir, spec.data.sha256)

    path = str(resolved.path)
    if should_stream(spec, path):
        check_streamable(loaded, path)

        stats = scan(spec, path, spec.data.columns or resolved.columns)
        return StreamedData(spec=spec, path=path, stats=stats, sha256=file_sha256(path),
                            keyer=keyer)
    key = _file_key(spec, resolved)
    kept = _prepared.get(key) if key is not None else None
    if kept is None:
        kept = prepare_in_memory(spec, load_dataset(spec, resolved), keyer)
        if key is None or kept.x.size > _PREPARED_MAX_VALUES:
            return kept
        kept.x.setflags(write=False)  # shared by later runs of this process
        _prepared[key] = kept
        while len(_prepared) > _PREPARED_KEPT:
            _prepared.popitem(last=False)
    _prepared.move_to_end(key)
    return Prepared(dataset=kept.dataset, split=kept.split, encoder=kept.encoder, x=kept.x,
                    keyer=keyer)


_PREPARED_KEPT = 4  # prepared files kept per process, most recent last
_PREPARED_MAX_VALUES = 20_000_000  # larger encoded data is not kept (80 MB)
_prepared: OrderedDict[tuple, Prepared] = OrderedDict()


def _file_key(spec: Spec, resolved: ResolvedSource) -> tuple | None:
    """What a file's prepared data depends on: the file as it is now (path, size,
    modification time in ns: a changed file is read again, and its fingerprint computed
    again), the spec's ``data`` section, the task and the output's units; None when the
    file cannot be looked at."""
    try:
        stat = os.stat(resolved.path)
    except OSError:
        return None
    return (os.path.realpath(resolved.path), stat.st_size, stat.st_mtime_ns,
            tuple(resolved.columns or ()), spec.task, spec.model.output.units,
            json.dumps(spec.data.model_dump(mode="json"), sort_keys=True))


def prepare_in_memory(spec: Spec, dataset: Dataset, keyer: RowKeyer | None = None) -> Prepared:
    """Split the rows, fit the encoder on the training part, encode everything (row keys
    that leave are keyed by ``keyer``: a random one of this process when None)."""
    split = split_rows(dataset.y, spec.data.split, spec.task != "regression", dataset.classes,
                       dataset.keys)
    feats = spec.data.features
    encoder = TabularEncoder(list(feats.numeric), list(feats.categorical),
                             list(spec.data.na_values)).fit(dataset.features, split.train)
    return Prepared(dataset=dataset, split=split, encoder=encoder,
                    x=encoder.transform(dataset.features), keyer=keyer or RowKeyer.ephemeral())
