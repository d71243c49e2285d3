"""A population summary of a data set (TRIPOD+AI item 20b: characteristics of the
participants): per numeric column the median and quartiles, per categorical column the
share of each level, and each column's missing share. Plain JSON, logged with every run
and read by the model card."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MAX_LEVELS = 12


def population_summary(features: pd.DataFrame, y: np.ndarray, numeric: list[str],
                       categorical: list[str], parts: dict[str, np.ndarray] | None = None,
                       binary: bool = True) -> dict[str, Any]:
    """Rows, outcome rate of a binary target (overall and per part of the split), and
    per-column summaries."""
    y = np.asarray(y, dtype=np.float64)

    def rate(rows: np.ndarray) -> float | None:
        return float(np.mean(y[rows])) if binary and len(rows) else None

    out: dict[str, Any] = {"rows": len(y), "outcome_rate": rate(np.arange(len(y))),
                           "numeric": {}, "categorical": {}}
    if parts:
        out["parts"] = {name: {"rows": len(rows), "outcome_rate": rate(rows)}
                        for name, rows in parts.items()}
    for column in numeric:
        values = pd.to_numeric(features[column], errors="coerce")
        q1, median, q3 = (values.quantile([0.25, 0.5, 0.75]).tolist() if values.notna().any()
                          else [None] * 3)
        out["numeric"][column] = {"median": median, "q1": q1, "q3": q3,
                                  "missing": float(values.isna().mean())}
    for column in categorical:
        values = features[column]
        shares = values.dropna().astype(str).value_counts(normalize=True).head(MAX_LEVELS)
        out["categorical"][column] = {"levels": {str(k): float(v) for k, v in shares.items()},
                                      "missing": float(values.isna().mean())}
    return out
