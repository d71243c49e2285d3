"""The minimum sample size for developing a binary risk model (Riley et al., BMJ 2020;368:m441;
the R package pmsampsize).

Three criteria, each giving the rows needed for a model with ``P`` parameters, from the
outcome's prevalence and an anticipated Cox-Snell R² (or a C statistic, converted to one):

1. expected uniform shrinkage of at least ``S`` = 0.9:
   ``n = P / ((S - 1) ln(1 - R²cs / S))``;
2. a small optimism in the apparent Nagelkerke R² (at most ``delta`` = 0.05): criterion 1
   with ``S = R²cs / (R²cs + delta · max R²cs)``, ``max R²cs = 1 - (φ^φ (1-φ)^(1-φ))²``;
3. the overall risk estimated within ``margin`` = 0.05: ``n = (1.96 / margin)² φ (1 - φ)``.

The sample size is the largest of the three (each rounded up). As pmsampsize does (and so
its published cases are reproduced exactly), max R²cs is rounded to 2 decimals and
criterion 2's shrinkage to 3 before use. A C statistic is turned into
a Cox-Snell R² as pmsampsize does (Riley et al., Stat Med 2021): a linear predictor normal
in each class, separated by ``sqrt(2) Φ⁻¹(C)``, the Nagelkerke R² of a logistic fit on it,
scaled by max R²cs; here on a deterministic large sample (normal quantiles) rather than a
random one, so the answer does not change from call to call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from heartflow.model.builder import count_parameters
from heartflow.spec.schema import SampleSizeSpec, Spec

SHRINKAGE = 0.9
OPTIMISM = 0.05
MARGIN = 0.05
C_SAMPLE = 200_000  # rows of the deterministic sample that turns a C statistic into R²


def max_r2_cs(prevalence: float) -> float:
    """The largest Cox-Snell R² a model can reach at this prevalence."""
    p = prevalence
    return 1.0 - (p ** p * (1.0 - p) ** (1.0 - p)) ** 2


def r2_cs_from_c(c_statistic: float, prevalence: float, rows: int = C_SAMPLE) -> float:
    """The Cox-Snell R² a model with this C statistic has at this prevalence."""
    mu = math.sqrt(2.0) * norm.ppf(c_statistic)
    events = round(prevalence * rows)
    grid = norm.ppf((np.arange(rows) + 0.5) / rows)
    lp0 = grid[np.round(np.linspace(0, rows - 1, rows - events)).astype(int)]
    lp1 = grid[np.round(np.linspace(0, rows - 1, events)).astype(int)] + mu
    x = np.concatenate([lp0, lp1])
    y = np.concatenate([np.zeros(len(lp0)), np.ones(len(lp1))])
    a, b = _logistic_fit(x, y)
    z = a + b * x
    loglik = float(np.sum(y * z - np.logaddexp(0.0, z)))
    p = y.mean()
    null = len(y) * (p * math.log(p) + (1 - p) * math.log(1 - p))
    r2_cs = 1.0 - math.exp(2.0 * (null - loglik) / len(y))
    nagelkerke = r2_cs / max_r2_cs(p)
    return nagelkerke * max_r2_cs(prevalence)


def _logistic_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of a logistic regression of ``y`` on ``x`` (Newton-Raphson)."""
    beta = np.zeros(2)
    design = np.column_stack([np.ones(len(x)), x])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        gradient = design.T @ (y - p)
        hessian = (design * (p * (1 - p))[:, None]).T @ design
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(beta[0]), float(beta[1])


@dataclass(frozen=True)
class SampleSize:
    """Riley's three criteria for one parameter count."""

    parameters: int
    prevalence: float
    r2_cs: float
    shrinkage_rows: int       # criterion 1
    optimism_rows: int        # criterion 2
    overall_risk_rows: int    # criterion 3
    shrinkage: float = SHRINKAGE

    @property
    def rows(self) -> int:
        """The minimum sample size: the largest of the three."""
        return max(self.shrinkage_rows, self.optimism_rows, self.overall_risk_rows)

    @property
    def events(self) -> int:
        """Events (outcome = 1 rows) the minimum sample size holds."""
        return math.ceil(self.rows * self.prevalence)

    @property
    def events_per_parameter(self) -> float:
        """Events per parameter at the minimum sample size."""
        return self.rows * self.prevalence / self.parameters

    def shortfall(self, rows: int) -> int:
        """Rows missing for ``rows`` development rows to meet the criteria (0 when met)."""
        return max(0, self.rows - rows)


def minimum_sample_size(parameters: int, prevalence: float, *, r2_cs: float | None = None,
                        c_statistic: float | None = None, shrinkage: float = SHRINKAGE,
                        optimism: float = OPTIMISM, margin: float = MARGIN) -> SampleSize:
    """Riley's criteria for a binary outcome; give ``r2_cs`` or ``c_statistic``."""
    if (r2_cs is None) == (c_statistic is None):
        raise ValueError("give exactly one of r2_cs and c_statistic")
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must lie in (0, 1), got {prevalence}")
    if r2_cs is None:
        if not 0.5 < float(c_statistic) < 1.0:
            raise ValueError(f"a C statistic in (0.5, 1), got {c_statistic}")
        r2_cs = r2_cs_from_c(float(c_statistic), prevalence)
    if not 0.0 < r2_cs < max_r2_cs(prevalence):
        raise ValueError(f"a Cox-Snell R² in (0, {max_r2_cs(prevalence):.3f}) at prevalence "
                         f"{prevalence:.3f}, got {r2_cs}")
    crit1 = parameters / ((shrinkage - 1.0) * math.log(1.0 - r2_cs / shrinkage))
    s_vh = round(r2_cs / (r2_cs + optimism * round(max_r2_cs(prevalence), 2)), 3)
    crit2 = parameters / ((s_vh - 1.0) * math.log(1.0 - r2_cs / s_vh))
    crit3 = (1.96 / margin) ** 2 * prevalence * (1.0 - prevalence)
    return SampleSize(parameters, prevalence, r2_cs, math.ceil(crit1), math.ceil(crit2),
                      math.ceil(crit3), shrinkage)


@dataclass(frozen=True)
class DevelopmentCheck:
    """A binary model's development rows against Riley's criteria, with its parameters
    counted two ways: the input width (the logistic-regression view) and the network's
    trainable weights."""

    rows: int  # development rows (training + validation)
    events: int
    anticipated: str  # "C 0.80" or "R² 0.200"
    by_inputs: SampleSize
    by_weights: SampleSize

    def warning(self) -> str:
        """A plain warning when the development rows fall short, else ''."""
        short = [(what, s) for what, s in (("input width", self.by_inputs),
                                           ("trainable weights", self.by_weights))
                 if s.shortfall(self.rows)]
        if not short:
            return ""
        parts = "; ".join(f"{s.rows} rows counting the {s.parameters} {what} as parameters"
                          for what, s in short)
        return (f"the {self.rows} development rows fall short of Riley's minimum sample size "
                f"({self.anticipated}): {parts}. Expect overfitting; prefer fewer parameters "
                "(a smaller network, or logistic regression) or more data")

    def as_metrics(self) -> dict[str, float]:
        """Figures for MLflow: sample_size_<view>_rows, ..._epp, development rows/events."""
        out = {"development_rows": float(self.rows), "development_events": float(self.events)}
        for view, s in (("inputs", self.by_inputs), ("weights", self.by_weights)):
            out.update({f"sample_size_{view}_rows": float(s.rows),
                        f"sample_size_{view}_parameters": float(s.parameters),
                        f"sample_size_{view}_shrinkage_rows": float(s.shrinkage_rows),
                        f"sample_size_{view}_optimism_rows": float(s.optimism_rows),
                        f"sample_size_{view}_overall_risk_rows": float(s.overall_risk_rows)})
        out["sample_size_r2_cs"] = self.by_inputs.r2_cs
        return out


def development_check(y: np.ndarray, input_width: int, weights: int, *,
                      c_statistic: float | None, r2_cs: float | None) -> DevelopmentCheck:
    """Riley's criteria for a binary model developed on rows with outcomes ``y``."""
    y = np.asarray(y, dtype=np.float64)
    events = int(y.sum())
    prevalence = events / len(y)
    given = {"c_statistic": c_statistic} if r2_cs is None else {"r2_cs": r2_cs}
    anticipated = f"anticipated C {c_statistic:.2f}" if r2_cs is None else \
        f"anticipated Cox-Snell R² {r2_cs:.3f}"
    return DevelopmentCheck(len(y), events, anticipated,
                            minimum_sample_size(input_width, prevalence, **given),
                            minimum_sample_size(weights, prevalence, **given))


def check_for(spec: Spec, data: object) -> DevelopmentCheck | None:
    """Riley's check of a binary spec on prepared in-memory data (its development rows:
    training + validation); None for other tasks and for streamed data."""
    if spec.task != "binary" or getattr(data, "streaming", True):
        return None
    wanted = spec.evaluate.sample_size or SampleSizeSpec()
    width = data.width
    return development_check(data.development().y, width, count_parameters(spec, width),
                             c_statistic=wanted.c_statistic, r2_cs=wanted.anticipated_r2)
