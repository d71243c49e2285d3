"""A population summary of a data set (TRIPOD+AI item 20b: characteristics of the
participants): per numeric column the median and quartiles, per categorical column the
share of each level, and each column's missing share. Plain JSON, logged with every run
and read by the model card.

Small cells are suppressed: no figure rests on fewer than :data:`MIN_CELL` patients, nor
lets one work out a count of 1 to ``MIN_CELL - 1`` patients from the figures shown.

- A numeric column's median and quartiles need ``MIN_CELL`` patients with a value; else
  they are ``null`` and ``suppressed`` says why. No minimum or maximum is reported (the
  extremes are single patients' values).
- A share (an outcome rate, a level's share, a missing share) splits patients into cells;
  it is shown only when every cell it reveals holds 0 or at least ``MIN_CELL`` patients.
  Levels of a categorical column below that are pooled into ``other`` (with the missing
  cell when it is small), and while the pool holds 1 to ``MIN_CELL - 1`` patients the
  next smallest level joins it, so no suppressed count can be recovered from the total.
  The pool's share is shown (it rests on at least ``MIN_CELL`` patients) with how many
  levels it holds.
- The outcome rate of each part of the split is shown only when every part's is: one
  part's cases could otherwise be worked out from the overall rate and the others.

Every suppressed figure is ``null`` with a ``suppressed`` note beside it; the summary's
``format`` and ``min_cell`` say which rule made it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.table import level_sort_key

MAX_LEVELS = 12
MIN_CELL = 5  # the smallest number of patients a figure may rest on
FORMAT = "heartflow.population/2"
SMALL = f"fewer than {MIN_CELL} patients"


def small(count: int) -> bool:
    """A count of 1 to ``MIN_CELL - 1`` patients: a cell that is never shown."""
    return 0 < count < MIN_CELL


def population_summary(features: pd.DataFrame, y: np.ndarray, numeric: list[str],
                       categorical: list[str], parts: dict[str, np.ndarray] | None = None,
                       binary: bool = True) -> dict[str, Any]:
    """Rows, outcome rate of a binary target (overall and per part of the split), and
    per-column summaries; small cells suppressed (module docstring)."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    out: dict[str, Any] = {"format": FORMAT, "min_cell": MIN_CELL, "rows": n,
                           **_rate(y, np.arange(n), binary), "numeric": {},
                           "categorical": {}}
    if parts:
        rates = {name: _rate(y, rows, binary) for name, rows in parts.items()}
        if any("suppressed" in r for r in rates.values()):
            rates = {name: {"outcome_rate": None, "suppressed": (
                f"outcome rate (a part has {SMALL} cases or non-cases: no part's rate is "
                "shown)")} if binary and len(parts[name]) else r for name, r in rates.items()}
        out["parts"] = {name: {"rows": len(rows), **rates[name]}
                        for name, rows in parts.items()}
    for column in numeric:
        out["numeric"][column] = _numeric(pd.to_numeric(features[column], errors="coerce"))
    for column in categorical:
        out["categorical"][column] = _categorical(features[column])
    return out


def _rate(y: np.ndarray, rows: np.ndarray, binary: bool) -> dict[str, Any]:
    if not binary or not len(rows):
        return {"outcome_rate": None}
    cases = int(np.sum(y[rows] == 1))
    if small(cases) or small(len(rows) - cases):
        return {"outcome_rate": None, "suppressed": f"outcome rate ({SMALL} cases or "
                                                    "non-cases)"}
    return {"outcome_rate": cases / len(rows)}


def _numeric(values: pd.Series) -> dict[str, Any]:
    n = len(values)
    present = int(values.notna().sum())
    out: dict[str, Any] = {"median": None, "q1": None, "q3": None}
    notes = []
    if present >= MIN_CELL:
        q1, median, q3 = values.quantile([0.25, 0.5, 0.75]).tolist()
        out.update(median=median, q1=q1, q3=q3)
    elif present:
        notes.append(f"median and quartiles ({SMALL} with a value)")
    if small(present) or small(n - present):
        out["missing"] = None
        notes.append(f"missing share ({SMALL} missing or present)")
    else:
        out["missing"] = (n - present) / n if n else 0.0
    if notes:
        out["suppressed"] = "; ".join(notes)
    return out


def _categorical(values: pd.Series) -> dict[str, Any]:
    n = len(values)
    missing = int(values.isna().sum())
    counts = values.dropna().astype(str).value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], level_sort_key(kv[0])))
    shown = [(level, int(c)) for level, c in ranked[:MAX_LEVELS] if not small(int(c))]
    hidden_levels = len(ranked) - len(shown)
    pooled = n - missing - sum(c for _, c in shown)
    missing_shown = not small(missing)
    if not missing_shown:
        pooled += missing
    while small(pooled) and shown:  # a pool of 1-4 patients: the next smallest level joins
        _level, count = shown.pop()
        pooled += count
        hidden_levels += 1
    if small(pooled) and missing_shown and missing:  # only the missing cell is left to join
        pooled += missing
        missing_shown = False
    out: dict[str, Any] = {"levels": {level: count / n for level, count in shown},
                           "missing": missing / n if missing_shown and n else (
                               0.0 if not n else None)}
    if pooled or hidden_levels:
        out["other"] = {"levels": hidden_levels,
                        "share": None if small(pooled) or not n else pooled / n,
                        "with_missing": not missing_shown}
        out["suppressed"] = (f"levels of {SMALL} (or beyond the {MAX_LEVELS} largest) "
                             "pooled in 'other'" + (", with the missing"
                                                    if not missing_shown else ""))
    return out
