"""Heart-like synthetic data: the heart.csv columns with realistic distributions.

Used by the tests (small files) and the benchmarks (millions of rows). The label
follows a logistic model of the features, so a network can learn it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
           "oldpeak", "slope", "ca", "thal", "target"]
CATEGORICAL = ["sex", "cp", "fbs", "restecg", "exang", "ca", "thal"]
NUMERIC = ["age", "trestbps", "chol", "thalach", "oldpeak", "slope"]


def heart_like(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows shaped like heart.csv (thal as text, binary ``target``)."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(54, 9, n), 29, 77).round()
    sex = rng.binomial(1, 0.68, n)
    cp = rng.choice([1, 2, 3, 4], n, p=[0.08, 0.16, 0.28, 0.48])
    trestbps = np.clip(rng.normal(131, 17, n), 94, 200).round()
    chol = np.clip(rng.normal(246, 51, n), 126, 564).round()
    fbs = rng.binomial(1, 0.15, n)
    restecg = rng.choice([0, 1, 2], n, p=[0.5, 0.01, 0.49])
    thalach = np.clip(rng.normal(150, 23, n) - 0.5 * (age - 54), 71, 202).round()
    exang = rng.binomial(1, 0.33, n)
    oldpeak = np.clip(rng.gamma(1.0, 1.0, n), 0, 6.2).round(1)
    slope = rng.choice([1, 2, 3], n, p=[0.47, 0.46, 0.07])
    ca = rng.choice([0, 1, 2, 3], n, p=[0.59, 0.22, 0.12, 0.07])
    thal = rng.choice(["normal", "fixed", "reversible"], n, p=[0.55, 0.06, 0.39])
    logit = (-4.6 + 0.03 * (age - 54) + 0.9 * sex + 0.8 * (cp == 4) + 0.01 * (trestbps - 131)
             - 0.025 * (thalach - 150) + 0.8 * exang + 0.5 * oldpeak + 0.9 * ca
             + 1.2 * (thal == "reversible") + 0.5 * (thal == "fixed") + 0.3 * (slope - 1))
    target = rng.binomial(1, 1 / (1 + np.exp(-logit)))
    return pd.DataFrame({"age": age.astype(int), "sex": sex, "cp": cp,
                         "trestbps": trestbps.astype(int), "chol": chol.astype(int), "fbs": fbs,
                         "restecg": restecg, "thalach": thalach.astype(int), "exang": exang,
                         "oldpeak": oldpeak, "slope": slope, "ca": ca, "thal": thal,
                         "target": target})


def write_heart_like(path: str | Path, rows: int, seed: int = 0, chunk: int = 500_000) -> Path:
    """Write ``rows`` heart-like rows to a CSV in chunks (bounded memory)."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerow(COLUMNS)
        done, part = 0, 0
        while done < rows:
            n = min(chunk, rows - done)
            heart_like(n, seed + part).to_csv(fh, header=False, index=False)
            done += n
            part += 1
    return path
