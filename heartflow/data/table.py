"""Reading a CSV into typed columns, with errors that name the column and row.

Every cell is read as text and converted here, so the rules are ours and the
same for training and scoring: the spec's ``na_values`` mean missing, numeric
columns must parse as finite numbers, categorical values are normalised so
``6.0`` and ``6`` are the same level.
"""

from __future__ import annotations

import csv
import io
import math
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


def is_missing(values: pd.Series, na_values: list[str]) -> np.ndarray:
    """Boolean mask of cells that count as missing: NaN/None, an empty cell (always, whatever
    ``na_values`` says), or an NA token."""
    tokens = {*na_values, ""}
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[i] = True
        elif isinstance(v, str) and v.strip() in tokens:
            out[i] = True
    return out


def numeric_column(values: pd.Series, name: str, na_values: list[str],
                   where=lambda i: f"row {i + 1}", label: str = "") -> np.ndarray:
    """Parse a column as float64 (NaN for missing); text, inf or huge values are errors."""
    missing = is_missing(values, na_values)
    out = np.full(len(values), np.nan, dtype=np.float64)
    prefix = f"{label}: " if label else ""
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if missing[i]:
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
        out[i] = x
    return out


def categorical_column(values: pd.Series, na_values: list[str]) -> np.ndarray:
    """Normalise a column's levels as strings (None for missing; '6.0' -> '6')."""
    missing = is_missing(values, na_values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values.to_numpy(dtype=object)):
        out[i] = None if missing[i] else normalize_level(v)
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
