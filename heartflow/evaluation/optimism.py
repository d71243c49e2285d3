"""Internal validation by the optimism bootstrap (Harrell, *Regression Modeling Strategies*,
5.3.5; the R functions rms::validate and pminternal), and prediction instability (Riley and
Collins, Biometrical Journal 2023).

The whole development is repeated on B bootstrap samples of the development rows
(training + validation): each sample is split into fitting and validation rows as the spec
splits its own, gets its own encoder statistics, its own network with its own early
stopping, and (with ``evaluate.threshold.method: validation``) its own threshold. Each refit
is scored on its own sample (its apparent figure) and on the original development rows;
the mean difference is the optimism, and

    corrected = apparent - mean optimism,

where apparent is the development model scored on the development rows. The refits share
one compiled program (:func:`heartflow.model.together.fit_together`), as cross-validation's
folds do.

From the same refits, each patient's risk across the B refits against the development
model's risk gives the prediction instability: the mean absolute difference per patient,
and the share of patients whose decision at the threshold flips in more than
``FLIP_SHARE`` of the refits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from heartflow.data.dataset import Dataset
from heartflow.data.encoder import TabularEncoder
from heartflow.evaluation import metrics as M
from heartflow.evaluation.clinical import calibration_intercept_slope
from heartflow.evaluation.cv import Fold
from heartflow.evaluation.thresholds import least_cost_threshold
from heartflow.model.together import fit_together
from heartflow.spec.schema import Spec

FLIP_SHARE = 0.2  # a patient's decision is unstable when it flips in more than this share
CALIBRATION = ("calibration_intercept", "calibration_slope")


@dataclass
class Optimism:
    """Apparent, optimism and corrected figures, and the instability of the risks."""

    resamples: int
    apparent: dict[str, float]
    optimism: dict[str, float]        # mean over the refits that gave a defined figure
    optimism_sd: dict[str, float]     # spread of the optimism over refits
    corrected: dict[str, float]
    failed: dict[str, int]            # refits whose figure was undefined (one class, ...)
    mean_abs_difference: float        # instability: per patient, then averaged
    patient_mad: np.ndarray = field(repr=False)  # per development row
    flip_share: float = 0.0           # patients whose decision flips in > FLIP_SHARE refits
    refit_risks: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    original_risks: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    samples: list[np.ndarray] = field(default_factory=list, repr=False)  # each refit's rows

    def as_metrics(self) -> dict[str, float]:
        """MLflow metrics: apparent_<m>, optimism_<m>, optimism_<m>_sd, corrected_<m>, and
        the instability figures."""
        out: dict[str, float] = {"bootstrap_resamples": float(self.resamples),
                                 "instability_mean_abs_difference": self.mean_abs_difference,
                                 "instability_flip_share": self.flip_share}
        for name, value in self.corrected.items():
            out.update({f"apparent_{name}": self.apparent[name],
                        f"optimism_{name}": self.optimism[name],
                        f"optimism_{name}_sd": self.optimism_sd[name],
                        f"corrected_{name}": value})
        out.update({f"optimism_{name}_failed": float(n) for name, n in self.failed.items()
                    if n})
        return out

    def rows(self) -> list[tuple[str, str]]:
        """(figure, 'apparent - optimism = corrected') for a summary table."""
        return [(name, f"{self.apparent[name]:.3f} - {self.optimism[name]:+.3f} = "
                       f"{value:.3f}" if value == value else "undefined")
                for name, value in self.corrected.items()]


def bootstrap_plan(spec: Spec, dataset: Dataset, resamples: int, seed: int) -> list[Fold]:
    """B bootstrap samples of the development rows, each carved into fitting and validation
    rows in the spec's proportions, with an encoder fitted on its fitting rows. Each fold's
    ``test_rows`` are all development rows (where each refit is scored)."""
    split = spec.data.split
    fraction = split.validation / max(1e-9, 1 - split.test)
    feats = spec.data.features
    n = len(dataset.y)
    rng = np.random.default_rng([seed, 7919])
    plan = []
    for _ in range(resamples):
        sample = rng.integers(0, n, n)
        cut = round(n * fraction)
        val_rows, fit_rows = sample[:cut], sample[cut:]  # the draw is already random
        encoder = TabularEncoder(list(feats.numeric), list(feats.categorical),
                                 list(spec.data.na_values)).fit(dataset.features, fit_rows)
        plan.append(Fold(fit_rows, val_rows, np.arange(n), encoder))
    return plan


def figures(spec: Spec, y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The spec's metrics and the calibration intercept and slope of risks ``p``."""
    values = M.compute(spec.task, y, p, threshold, spec.metrics)
    calibration = calibration_intercept_slope(y, p)
    values["calibration_intercept"] = calibration["intercept"]
    values["calibration_slope"] = calibration["slope"]
    return values


def refit_threshold(spec: Spec, y_val: np.ndarray, p_val: np.ndarray) -> float:
    """A refit's threshold, chosen as the development chose its own."""
    costs = spec.evaluate.costs
    if costs is not None and costs.method == "validation" and len(y_val):
        return least_cost_threshold(y_val, p_val, costs)
    return spec.evaluate.decision_threshold


def optimism(spec: Spec, y: np.ndarray, original: np.ndarray, threshold: float,
             plan: list[Fold], outputs: np.ndarray) -> Optimism:
    """The optimism-corrected figures from refits' ``outputs`` (B, rows) on all development
    rows ``y``, and the development model's risks ``original`` there."""
    apparent = figures(spec, y, original, threshold)
    names = list(apparent)
    diffs = {name: [] for name in names}
    for fold, p in zip(plan, outputs, strict=True):
        sample = np.concatenate([fold.fit_rows, fold.val_rows])
        t = refit_threshold(spec, y[fold.val_rows], p[fold.val_rows])
        on_sample = figures(spec, y[sample], p[sample], t)
        on_original = figures(spec, y, p, t)
        for name in names:
            diffs[name].append(on_sample[name] - on_original[name])
    table = {name: np.asarray(v, dtype=np.float64) for name, v in diffs.items()}
    mean = {name: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for name, v in table.items()}
    sd = {name: float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan")
          for name, v in table.items()}
    corrected = {name: apparent[name] - mean[name] for name in names}
    failed = {name: int((~np.isfinite(v)).sum()) for name, v in table.items()}
    mad = np.mean(np.abs(outputs - original[None, :]), axis=0)
    flips = np.mean((outputs >= threshold) != (original >= threshold)[None, :], axis=0)
    return Optimism(len(plan), apparent, mean, sd, corrected, failed, float(mad.mean()), mad,
                    float(np.mean(flips > FLIP_SHARE)), outputs, original,
                    [np.concatenate([f.fit_rows, f.val_rows]) for f in plan])


def validate_network(spec: Spec, dataset: Dataset, original: np.ndarray, threshold: float,
                     resamples: int) -> Optimism:
    """The optimism bootstrap of the spec's network on its development rows; ``original``
    holds the development model's risks on those rows."""
    plan = bootstrap_plan(spec, dataset, resamples, spec.train.seed)
    widths = [fold.encoder.width for fold in plan]
    x = np.zeros((len(plan), len(dataset.y), max(widths)), dtype=np.float32)
    for m, fold in enumerate(plan):  # a sample that lacks a level is narrower: pad 0s
        x[m, :, :widths[m]] = fold.encoder.transform(dataset.features)
    result = fit_together(spec, x, dataset.y, [f.fit_rows for f in plan],
                          [f.val_rows for f in plan],
                          M.epoch_metrics(spec.task, spec.evaluate.decision_threshold))
    outputs = np.asarray(result.outputs)[:, :, 0]
    return optimism(spec, dataset.y.astype(np.float64), np.asarray(original).reshape(-1),
                    threshold, plan, outputs)
