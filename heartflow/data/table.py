"""Reading a CSV into typed columns, with errors that name the column and row.

Every cell is read as text and converted here, so the rules are ours and the
same for training and scoring: the spec's ``na_values`` (and a column's
``missing_codes``) mean missing, numeric columns must parse as finite numbers,
categorical values are normalised so ``6.0`` and ``6`` are the same level.

Missing markers compare typed values, not text: a marker that is a number matches
every cell writing that number (``0`` matches ``0.0``, ``-9`` matches ``-9.00``), so a
file re-exported by pandas or a spreadsheet has the same missing cells. Other markers
match the cell's text, stripped of surrounding blanks.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heartflow.errors import DataError

MAX_ABS_VALUE = 1e15


@dataclass
class RawTable:
    """A CSV's cells as text, plus how data rows map to file lines."""

    frame: pd.DataFrame
    source: str
    first_line: int  # file line number of the first data row

    def where(self, position: int) -> str:
        """Human description of the data row at ``position`` (0-based)."""
        return f"row {position + 1} (line {position + self.first_line})"


def read_csv(path: Path | str, *, columns: list[str] | None = None, delimiter: str = ",",
             label: str | None = None) -> RawTable:
    """Read ``path`` as text cells. ``columns`` names a header-less file's columns."""
    label = label or str(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{label}: line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x} "
                        f"at offset {exc.start}); save the file as UTF-8") from None
    return read_csv_text(text, columns=columns, delimiter=delimiter, label=label)


def read_csv_text(text: str, *, columns: list[str] | None = None, delimiter: str = ",",
                  label: str = "<data>") -> RawTable:
    """Parse CSV text into a RawTable (all cells as str)."""
    if not text.strip():
        raise DataError(f"{label}: the file is empty; expected a header line and data rows")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        rows = [row for row in reader]
    except csv.Error as exc:
        raise DataError(f"{label}: line {reader.line_num}: CSV error: {exc}") from None
    rows = [row for row in rows if row and any(cell.strip() for cell in row)]
    if columns is None:
        header, body, first_line = [c.strip() for c in rows[0]], rows[1:], 2
    else:
        header, body, first_line = list(columns), rows, 1
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(f"{label}: duplicate column names in the header: {', '.join(dupes)}")
    if not body:
        raise DataError(f"{label}: the file has a header but no data rows")
    width = len(header)
    for i, row in enumerate(body):
        if len(row) != width:
            hint = ""
            if len(header) == 1 and ";" in header[0]:
                hint = "; the file seems to use ';' as delimiter: set data.delimiter: ';'"
            raise DataError(f"{label}: row {i + 1} (line {i + first_line}) has {len(row)} "
                            f"fields, the header has {width}{hint}")
    frame = pd.DataFrame(body, columns=header, dtype=object)
    return RawTable(frame=frame, source=label, first_line=first_line)


def require_columns(table: RawTable, needed: list[str], delimiter: str = ",") -> None:
    """Raise naming every needed column that the table lacks."""
    missing = [c for c in needed if c not in table.frame.columns]
    if missing:
        have = list(table.frame.columns)
        hint = ""
        if len(have) == 1 and ";" in have[0] and delimiter != ";":
            hint = " The file seems to use ';' as delimiter: set data.delimiter: ';'."
        raise DataError(f"{table.source}: column(s) {', '.join(map(repr, missing))} named in the "
                        f"spec are not in the data. Columns present: {', '.join(have)}.{hint}")


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?")


def number_value(text: str) -> float | None:
    """The finite number a cell's text writes (``63``, ``63.0``, ``6.3e1``), else None."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _as_float(value: int | float | np.integer | np.floating) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range equals no marker
        return math.nan


def _is_null(value: object) -> bool:
    return value is None or value is pd.NA or (
        isinstance(value, (float, np.floating)) and math.isnan(value))


@dataclass(frozen=True)
class MissingRule:
    """Which cells count as missing: None/NaN, an empty cell (always), a text marker, or a
    number equal to a numeric marker (``0`` matches ``0.0``)."""

    text: frozenset[str]
    numbers: frozenset[float]

    @classmethod
    def of(cls, markers: Iterable[str]) -> MissingRule:
        """The rule for ``na_values`` (plus a column's ``missing_codes``)."""
        texts = {str(m).strip() for m in markers} | {""}
        numbers = {x for x in map(number_value, texts) if x is not None}
        return cls(text=frozenset(texts), numbers=frozenset(numbers))

    def __call__(self, value: object) -> bool:
        """Whether one cell (text or a Python/NumPy scalar) is missing."""
        if _is_null(value):
            return True
        if isinstance(value, str):
            text = value.strip()
            if text in self.text:
                return True
            return bool(self.numbers) and number_value(text) in self.numbers
        if isinstance(value, (bool, np.bool_)):
            return False
        if isinstance(value, (int, float, np.integer, np.floating)):
            return bool(self.numbers) and _as_float(value) in self.numbers
        return str(value).strip() in self.text

    def mask(self, text: pd.Series) -> np.ndarray:
        """Vectorised :meth:`__call__` for a column of stripped text cells."""
        out = text.isin(self.text).to_numpy(dtype=bool) | text.isna().to_numpy(dtype=bool)
        if self.numbers:
            numbers = text.where(~out, "").str.fullmatch(_NUMBER.pattern).to_numpy(dtype=bool)
            values = pd.to_numeric(text[numbers], errors="coerce").to_numpy(dtype=np.float64)
            out[np.flatnonzero(numbers)] |= np.isin(values, list(self.numbers))
        return out


def is_missing(values: pd.Series, na_values: list[str]) -> np.ndarray:
    """Boolean mask of cells that count as missing: NaN/None, an empty cell (always, whatever
    ``na_values`` says), or an NA marker (numbers compared as numbers: see MissingRule)."""
    rule = MissingRule.of(na_values)
    return np.fromiter((rule(v) for v in values.to_numpy(dtype=object)), dtype=bool,
                       count=len(values))


def canonical_cell(value: object, rule: MissingRule) -> str:
    """One cell in the form row keys hash: "" when missing, a number written one way
    (``63.0`` and ``+63`` as ``63``, ``2.30`` as ``2.3``; integers exact at any length),
    ``True``/``False`` for booleans, other text stripped."""
    if rule(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _number_text(float(value)) if math.isfinite(value) else str(float(value))
    text = str(value).strip()
    if _INTEGER.fullmatch(text):
        return str(int(text.split(".")[0]))
    number = number_value(text)
    return text if number is None else _number_text(number)


def _number_text(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


def numeric_column(values: pd.Series, name: str, na_values: list[str],
                   where=lambda i: f"row {i + 1}", label: str = "") -> np.ndarray:
    """Parse a column as float64 (NaN for missing); text, inf or huge values are errors."""
    rule = MissingRule.of(na_values)
    out = np.full(len(values), np.nan, dtype=np.float64)
    prefix = f"{label}: " if label else ""
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if rule(v):
            continue
        try:
            x = float(v.strip() if isinstance(v, str) else v)
        except (TypeError, ValueError):
            raise DataError(f"{prefix}column {name!r}, {where(i)}: {v!r} is not a number "
                            "(numeric feature)") from None
        if not math.isfinite(x):
            raise DataError(f"{prefix}column {name!r}, {where(i)}: {v!r} is not a finite "
                            "number")
        if abs(x) > MAX_ABS_VALUE:
            raise DataError(f"{prefix}column {name!r}, {where(i)}: {v!r} is outside the "
                            f"supported range ±{MAX_ABS_VALUE:g}")
        if x not in rule.numbers:  # e.g. '1_000' when 1000 is a marker
            out[i] = x
    return out


def categorical_column(values: pd.Series, na_values: list[str]) -> np.ndarray:
    """Normalise a column's levels as strings (None for missing; '6.0' -> '6')."""
    rule = MissingRule.of(na_values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values.to_numpy(dtype=object)):
        out[i] = None if rule(v) else normalize_level(v)
    return out


def normalize_level(value: object) -> str:
    """One category level as text: integral numbers lose their '.0'."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer() and text.lstrip("+-").replace(
            ".", "", 1).isdigit():
        return str(int(number))
    return text


def level_sort_key(level: str) -> tuple[int, float | str]:
    """Sort levels numerically where they are numbers, then alphabetically."""
    try:
        return (0, float(level))
    except ValueError:
        return (1, level)
