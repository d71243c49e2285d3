"""Seeded train/validation/test splits by a hash of each row's key, checked for sufficiency.

A row's key is a 64-bit hash of its cells, or of its ``data.id`` cell, in typed form
(:func:`row_keys`): a missing cell is one value whatever marker wrote it, a number one
text whatever its spelling (``63``, ``63.0``, ``6.3e1``), so a file re-exported by pandas
or a spreadsheet keeps its keys. Mixed with the seed, the key gives the row a uniform
number u in [0, 1), and fixed cut-offs give its part: test if u < ``test``, validation if
u < ``test + validation``, else train. In memory and streamed, this is the one rule, so
both put every row in the same part.

A row's part depends on its key and the seed only, not on its position in the file nor
on the other rows: adding rows never moves an existing row (editing one of its cells
may, unless ``data.id`` is the key), identical rows share a part, and different seeds
give independent splits. ``stratify: true`` applies these cut-offs
within each class, which is the same rule (the cut-offs are fixed), so it changes no row's
part; it does not make each class's shares exact.

Proportions are therefore not exact: each part's row count, over all rows and within each
class, is a Binomial(n, fraction) count, whose standard deviation is
sqrt(n * fraction * (1 - fraction)) rows (about 7 rows for ``test: 0.2`` of 303 rows).
A realised count lies within 4 standard deviations of n * fraction except with a
probability of about 1e-4. Every part must still hold the spec's minimum of rows and,
for classification, of each class (``data.split.min_rows``, ``data.split.min_per_class``):
a split that falls short is refused (:func:`check_sufficiency`), never rebalanced.

The typed-cell key is unkeyed, so that splits are the same on every machine; but anyone
holding a patient's record could recompute it and test whether the patient is in a data
set. So no such key leaves the process: every key written down (the split manifest, a
streamed run's seen rows, the promotion gate's row keys) is a :class:`RowKeyer`'s keyed
hash of it (or its first 64 bits, :class:`KeyPrefixes`), HMAC-SHA256 under a
secret the caller supplies (the training flow gets it from
:mod:`heartflow.tracking.row_secret`), in the format :data:`KEY_FORMAT`.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from heartflow.data.table import MissingRule, canonical_cell
from heartflow.errors import DataError
from heartflow.spec.schema import DataSpec, SplitSpec

PARTS = ("train", "validation", "test")
PART_CODES = {"train": 0, "validation": 1, "test": 2}
_HASH_KEY = "heartflow-rows-1"  # 16 characters, as pandas' hash_key wants


_DEFAULT_NA: list[str] = DataSpec.model_fields["na_values"].get_default(call_default_factory=True)


def row_keys(cells: pd.DataFrame, id_column: str | None = None,
             na_values: list[str] | None = None) -> np.ndarray:
    """One 64-bit key per row: a hash of the row's cells (or of its id cell) in typed form.

    Each cell is hashed as :func:`heartflow.data.table.canonical_cell` writes it: empty
    when missing (``na_values``, the spec's default when None), a number in one form
    (``63.0`` as ``63``), other text stripped; so re-exported files keep their keys.
    """
    rule = MissingRule.of(_DEFAULT_NA if na_values is None else na_values)
    frame = cells[[id_column]] if id_column else cells
    typed = pd.DataFrame({i: _canonical_column(frame.iloc[:, i], rule)
                          for i in range(frame.shape[1])}, index=range(len(frame)))
    return pd.util.hash_pandas_object(typed, index=False, hash_key=_HASH_KEY).to_numpy(
        np.uint64)


def _canonical_column(values: pd.Series, rule: MissingRule) -> pd.Categorical:
    """Each distinct cell made canonical once; as a categorical, which pandas hashes as the
    same text would hash, hashing each distinct text once."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = [*(canonical_cell(u, rule) for u in np.asarray(uniques, dtype=object)), ""]
    merged, texts = pd.factorize(np.array(table, dtype=object))  # '63' and '63.0' are one
    return pd.Categorical.from_codes(merged[codes], categories=texts)  # -1 (NaN): ""


def uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per key, independent across seeds (splitmix64's finaliser)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64((seed + 1) * 0x9E3779B97F4A7C15 % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


KEY_FORMAT = "hmac-sha256-128/1"  # keys that leave the process: see RowKeyer
_KEY_ID_MESSAGE = b"heartflow row-key id"


class RowKeyer:
    """Keyed row keys, the only form in which a row's key leaves the process.

    A row's keyed key is HMAC-SHA256 under the secret of its typed-cell key (8 bytes, big
    endian), truncated to 128 bits and written as 32 hex digits: equal rows and the same
    secret give equal keys on every machine; without the secret a key cannot be
    recomputed from a patient's record, so it tells nothing about who is in the data. The
    secret is held here only (never printed: ``repr`` hides it); :attr:`key_id` names it,
    so a reader can tell keys made under another secret apart. Like the keys themselves,
    it would let a weak secret be guessed offline: the secret must be long and random.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("a row-key secret must not be empty")
        self._secret = bytes(secret)

    @classmethod
    def ephemeral(cls) -> RowKeyer:
        """A keyer with a random secret of this process only: its keys match nothing
        written by any other process (for prepared data nobody asked to record)."""
        return cls(os.urandom(32))

    @property
    def key_format(self) -> str:
        """What a keyed key is (:data:`KEY_FORMAT`)."""
        return KEY_FORMAT

    @property
    def key_id(self) -> str:
        """16 hex digits that name the secret (HMAC-SHA256 of a fixed message under it):
        equal for equal secrets, and no help in computing any row's keyed key."""
        return hmac.digest(self._secret, _KEY_ID_MESSAGE, "sha256").hex()[:16]

    def hex(self, keys: np.ndarray) -> list[str]:
        """Each typed-cell key keyed under the secret, as 32 hex digits."""
        raw = np.asarray(keys).astype(">u8").tobytes()
        secret = self._secret
        return [hmac.digest(secret, raw[i:i + 8], "sha256").hex()[:32]
                for i in range(0, len(raw), 8)]

    def prefixes(self, keys: np.ndarray) -> np.ndarray:
        """The first 64 bits of each keyed key (its first 16 hex digits), as uint64: the
        compact form a streamed run's seen rows are recorded in (:class:`KeyPrefixes`)."""
        raw = np.asarray(keys).astype(">u8").tobytes()
        secret = self._secret
        head = b"".join([hmac.digest(secret, raw[i:i + 8], "sha256")[:8]
                         for i in range(0, len(raw), 8)])
        return np.frombuffer(head, dtype=">u8").astype(np.uint64)

    def __repr__(self) -> str:
        return f"RowKeyer(key_id={self.key_id}, secret=<hidden>)"

    def __reduce__(self):  # no pickle (a persisted task result, a cache) carries the secret
        raise TypeError("a RowKeyer holds a secret and is not pickled")

    def __copy__(self) -> RowKeyer:
        return self  # immutable

    def __deepcopy__(self, memo: dict) -> RowKeyer:
        return self


def hex_prefixes(hex_keys: list[str]) -> np.ndarray:
    """The first 64 bits of keyed keys written as hex (:meth:`RowKeyer.hex`), as uint64."""
    return np.array([int(k[:16], 16) for k in hex_keys], dtype=np.uint64)


@dataclass(frozen=True)
class KeyPrefixes:
    """A set of rows as the first 64 bits of their keyed keys (:meth:`RowKeyer.prefixes`).

    Half the size of the keys themselves, and as good for telling whether a row is among
    them: a row outside the set matches one of its n prefixes by chance with probability
    n / 2**64 (below 1e-12 for 10 million rows).
    """

    values: np.ndarray  # uint64, any order, repeats allowed (identical rows)

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, hex_key: object) -> bool:
        return isinstance(hex_key, str) and bool(self.isin([hex_key])[0])

    def isin(self, hex_keys: list[str]) -> np.ndarray:
        """For each keyed key (hex), whether its row is in the set."""
        return np.isin(hex_prefixes(hex_keys), self.values)


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


def part_codes(u: np.ndarray, test: float, validation: float) -> np.ndarray:
    """0 train, 1 validation, 2 test from each row's uniform number: fixed cut-offs."""
    return np.where(u < test, PART_CODES["test"],
                    np.where(u < test + validation, PART_CODES["validation"],
                             PART_CODES["train"])).astype(np.uint8)


def split_rows(y: np.ndarray, spec: SplitSpec, classification: bool,
               class_names: list[str] | None = None, keys: np.ndarray | None = None) -> Split:
    """Split row indices by fixed cut-offs on each row's uniform number (module docstring).

    Without ``keys`` the row numbers, hashed, serve as keys (consecutive numbers straight
    into :func:`uniform` are less evenly spread than hashes).
    """
    n = len(y)
    if keys is None:
        keys = pd.util.hash_array(np.arange(n, dtype=np.uint64))
    u = uniform(keys, spec.seed)
    codes = part_codes(u, spec.test, spec.validation)
    split = Split(*(np.flatnonzero(codes == PART_CODES[part]) for part in PARTS))
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
