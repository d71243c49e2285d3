"""Repeated stratified k-fold cross-validation for the network and the baselines.

Each fold refits the encoder on its own training rows; the network keeps a
validation slice of those rows for early stopping. Figures are mean ± a 95%
confidence interval (Student t over the folds; folds of repeated CV are not
independent, so read it as an honest spread, not an exact interval).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.dataset import Dataset
from heartflow.data.encoder import TabularEncoder
from heartflow.errors import DataError
from heartflow.evaluation import metrics as M
from heartflow.evaluation.clinical import clinical_report
from heartflow.model.scorer import network_output
from heartflow.model.training import EpochMetrics, TrainResult, train_model
from heartflow.spec.schema import Spec

_INPUTS_KEPT = 4  # fold plans (with encoded rows) kept per process, most recent first
_INPUTS_MAX_VALUES = 20_000_000  # larger stacked inputs are not kept (80 MB)


@dataclass
class CVSummary:
    """Per-metric fold scores and their summary."""

    scores: dict[str, list[float]] = field(default_factory=dict)
    pooled_y: np.ndarray | None = None  # binary: labels of the development rows
    pooled_p: np.ndarray | None = None  # their out-of-fold risks (first repeat: each row once)

    pooled_threshold: float = 0.5
    epochs_run: list[int] = field(default_factory=list)  # per fold, when trained together
    fold_rows: list[int] = field(default_factory=list)  # held-out rows of each fold
    folds_per_repeat: int = 0

    @cached_property
    def pooled_report(self):
        """The clinical report of the pooled out-of-fold risks (binary), or None; computed
        once (its bootstrap is the costly part)."""
        if self.pooled_y is None or self.pooled_p is None:
            return None

        return clinical_report(self.pooled_y, self.pooled_p, self.pooled_threshold)

    def pooled_metrics(self) -> dict[str, float]:
        """Pooled out-of-fold figures and the rows they rest on."""
        report = self.pooled_report
        if report is None:
            return {}
        values = {k.replace("@", "_at_"): v for k, v in report.values.items()}
        return {**values, "rows": float(report.rows)}

    def mean(self, metric: str) -> float:
        """Mean over folds."""
        return float(np.nanmean(self.scores[metric]))

    def ci95(self, metric: str) -> float:
        """Half-width of the 95% interval of the mean."""
        values = np.asarray(self.scores[metric], dtype=float)
        values = values[~np.isnan(values)]
        if len(values) < 2:
            return float("nan")
        # lazy: SciPy's stats (0.3 s), only when an interval is computed
        from scipy.stats import t

        return float(t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))

    @property
    def folds(self) -> int:
        """Number of fold scores."""
        return len(next(iter(self.scores.values()), []))

    def fold_table(self) -> pd.DataFrame:
        """One row per fold: repeat and fold (from 1), its held-out rows, epochs run (when
        the folds trained together) and each metric on its held-out rows (NaN where
        undefined) — the figures :meth:`as_metrics` summarises."""
        n = self.folds
        per = self.folds_per_repeat or n
        table = pd.DataFrame({"repeat": [i // per + 1 for i in range(n)],
                              "fold": [i % per + 1 for i in range(n)]})
        if len(self.fold_rows) == n:
            table["rows"] = self.fold_rows
        if len(self.epochs_run) == n:
            table["epochs_run"] = self.epochs_run
        for metric, values in self.scores.items():
            table[metric] = np.asarray(values, dtype=float)
        return table

    def as_metrics(self, prefix: str = "cv_") -> dict[str, float]:
        """Flat metrics for MLflow: cv_<m>_mean, cv_<m>_ci95, cv_<m>_std."""
        out = {}
        for metric, values in self.scores.items():
            out[f"{prefix}{metric}_mean"] = self.mean(metric)
            out[f"{prefix}{metric}_ci95"] = self.ci95(metric)
            out[f"{prefix}{metric}_std"] = float(np.nanstd(values, ddof=1)) if len(
                values) > 1 else 0.0
        out[f"{prefix}folds"] = float(self.folds)
        return out


def folds(y: np.ndarray, n_folds: int, repeats: int, seed: int, stratify: bool):
    """Yield (train_rows, test_rows) for each repeat and fold."""
    for repeat in range(repeats):
        rng = np.random.default_rng(seed + repeat)
        assignment = np.empty(len(y), dtype=np.int64)
        groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [
            np.arange(len(y))]
        offset = 0
        for idx in groups:
            idx = rng.permutation(idx)
            assignment[idx] = (np.arange(len(idx)) + offset) % n_folds
            offset += len(idx)
        for k in range(n_folds):
            yield np.flatnonzero(assignment != k), np.flatnonzero(assignment == k)


def check_folds(y: np.ndarray, folds_: int, repeats: int, seed: int, stratify: bool,
                min_per_class: int) -> None:
    """Raise a DataError when a fold's held-out rows would lack a class (classification)."""
    for i, (_train, held_out) in enumerate(folds(y, folds_, repeats, seed, stratify), start=1):
        for label in np.unique(y):
            count = int(np.sum(y[held_out] == label))
            if count < min_per_class:
                raise DataError(
                    f"cross-validation fold {i} of {folds_ * repeats} would hold {count} "
                    f"row(s) of class {label:g} (at least {min_per_class} needed, "
                    f"data.split.min_per_class); use fewer folds (evaluate.cv.folds) or "
                    "more rows")


def _carve_validation(rows: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    if fraction <= 0:
        return rows, rows[:0]
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y[rows]):
        members = rng.permutation(rows[y[rows] == c])
        val.append(members[: round(len(members) * fraction)])
    val_rows = np.sort(np.concatenate(val))
    return np.setdiff1d(rows, val_rows), val_rows


@dataclass
class Fold:
    """One fold: the rows that fit, validate (early stopping) and are held out, and the
    encoder fitted on the fitting rows."""

    fit_rows: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray
    encoder: TabularEncoder


def plan_folds(spec: Spec, dataset: Dataset, use_validation: bool = True) -> list[Fold]:
    """Every (repeat, fold) of ``evaluate.cv``, each with its own encoder."""
    cv = spec.evaluate.cv
    assert cv is not None
    split = spec.data.split
    y = dataset.y
    classification = spec.task != "regression"
    fraction = split.validation / max(1e-9, 1 - split.test) if use_validation else 0.0
    feats = spec.data.features
    if classification:
        check_folds(y, cv.folds, cv.repeats, split.seed, split.stratify, split.min_per_class)
    out = []
    for i, (train_rows, test_rows) in enumerate(folds(y, cv.folds, cv.repeats, split.seed,
                                                      split.stratify and classification)):
        fit_rows, val_rows = _carve_validation(train_rows, y, fraction if classification
                                               else 0.0, split.seed + 1000 + i)
        encoder = TabularEncoder(list(feats.numeric), list(feats.categorical),
                                 list(spec.data.na_values)).fit(dataset.features, fit_rows)
        out.append(Fold(fit_rows, val_rows, test_rows, encoder))
    return out


def summarise(spec: Spec, y: np.ndarray, plan: list[Fold], outputs: list[np.ndarray],
              threshold: float) -> CVSummary:
    """Each fold's metrics on its held-out rows; binary risks of the first repeat pooled."""
    summary = CVSummary()
    folds_per_repeat = spec.evaluate.cv.folds if spec.evaluate.cv else len(plan)
    pooled = np.full(len(y), np.nan) if spec.task == "binary" else None
    summary.folds_per_repeat = folds_per_repeat
    for i, (fold, output) in enumerate(zip(plan, outputs, strict=True)):
        summary.fold_rows.append(len(fold.test_rows))
        output = np.asarray(output)
        output = output if spec.task == "multiclass" else output.reshape(-1)
        scores = M.compute(spec.task, y[fold.test_rows], output, threshold, spec.metrics)
        for metric, value in scores.items():
            summary.scores.setdefault(metric, []).append(value)
        if pooled is not None and i < folds_per_repeat:
            pooled[fold.test_rows] = output
    if pooled is not None:
        summary.pooled_y, summary.pooled_p = y.astype(np.float64), pooled
        summary.pooled_threshold = threshold
    return summary


def cross_validate(spec: Spec, dataset: Dataset,
                   fit_and_predict: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                              np.ndarray], np.ndarray],
                   use_validation: bool = True, threshold: float | None = None) -> CVSummary:
    """Score ``fit_and_predict(xtr, ytr, xval, yval, xte)`` (the output for ``xte``) on every
    fold with the spec's metrics, one fold after another (at ``threshold``, by default the
    spec's declared one)."""
    y = dataset.y
    plan = plan_folds(spec, dataset, use_validation)
    outputs = []
    for fold in plan:
        x = fold.encoder.transform(dataset.features)
        outputs.append(fit_and_predict(x[fold.fit_rows], y[fold.fit_rows], x[fold.val_rows],
                                       y[fold.val_rows], x[fold.test_rows]))
    return summarise(spec, y, plan, outputs, _threshold(spec, threshold))


def _threshold(spec: Spec, threshold: float | None) -> float:
    return spec.evaluate.decision_threshold if threshold is None else float(threshold)


@dataclass
class FoldFits:
    """The folds' networks, fitted: each one's output on its held-out rows."""

    plan: list[Fold]
    outputs: list[np.ndarray]
    epochs_run: list[int]


_inputs: OrderedDict[tuple, tuple[list[Fold], np.ndarray | None, list[int]]] = OrderedDict()


def fold_inputs(spec: Spec, dataset: Dataset, extra_models: int = 0
                ) -> tuple[list[Fold], np.ndarray | None, list[int]]:
    """The folds (:func:`plan_folds`), each fold's encoding of every row stacked as
    (folds, rows, widest) (a fold whose rows lack a level is narrower: zeros beyond its
    width; None when the folds' networks and ``extra_models`` more would not fit in memory
    together), and the widths.

    Kept for the process: the same rows (the file's fingerprint, and a digest of these
    rows' labels and row keys) under the same ``data`` section,
    task and ``evaluate.cv`` give the same folds, so a re-run that changes only the
    network (a notebook trying 4, 8, 16 units) does not refit and re-apply 25 encoders."""
    # lazy: Keras (the together module imports it)
    from heartflow.model.together import fits_together

    cv = spec.evaluate.cv
    assert cv is not None
    rows = hashlib.sha256(dataset.y.tobytes() + (b"" if dataset.keys is None else
                                                 dataset.keys.tobytes())).hexdigest()
    key = (dataset.sha256, rows, spec.task, cv.folds, cv.repeats,
           json.dumps(spec.data.model_dump(mode="json"), sort_keys=True))
    if dataset.sha256 and key in _inputs:
        _inputs.move_to_end(key)
        plan, x, widths = _inputs[key]
    else:
        plan = plan_folds(spec, dataset)
        widths = [fold.encoder.width for fold in plan]
        x = None
        if fits_together(len(plan), len(dataset.y), max(widths)):
            x = np.zeros((len(plan), len(dataset.y), max(widths)), dtype=np.float32)
            for m, fold in enumerate(plan):
                x[m, :, :widths[m]] = fold.encoder.transform(dataset.features)
            x.setflags(write=False)  # shared by later runs of this process
        if dataset.sha256 and (x is None or x.size <= _INPUTS_MAX_VALUES):
            _inputs[key] = (plan, x, widths)
            while len(_inputs) > _INPUTS_KEPT:
                _inputs.popitem(last=False)
    if x is not None and not fits_together(len(plan) + extra_models, len(dataset.y),
                                           max(widths)):
        x = None
    return plan, x, widths


def trains_with_folds(spec: Spec, data: Any) -> bool:
    """Whether the run's network can train in the same compiled program as its folds'
    networks (:func:`fit_with_folds`): in-memory rows, ``evaluate.cv`` with ``together``,
    full precision on the CPU, validation rows for the network and for every fold (a
    classifier's folds keep some for early stopping; a regression's do not), and K + 1
    copies of the development rows that fit."""
    # lazy: Keras (device_for asks TensorFlow for its devices)
    from heartflow.model.builder import count_parameters
    from heartflow.model.devices import device_for
    from heartflow.model.together import fits_together

    cv = spec.evaluate.cv
    if cv is None or not cv.together or data.streaming or spec.train.mixed_precision or \
            getattr(data, "dataset", None) is None or spec.task == "regression" or \
            not len(data.split.validation):
        return False
    if device_for(spec.train.device, count_parameters(spec, data.width)) != "cpu":
        return False
    plan, x, widths = fold_inputs(spec, data.development(), extra_models=1)
    return (x is not None and all(len(f.val_rows) for f in plan)
            and fits_together(len(plan) + 1, x.shape[1], max(*widths, data.width)))


def fit_with_folds(spec: Spec, data: Any, validation_metrics: EpochMetrics | None = None,
                   on_epoch: Callable[[int, dict[str, float]], None] | None = None
                   ) -> tuple[TrainResult, FoldFits]:
    """The run's network and its folds' networks trained in one compiled program
    (:func:`heartflow.model.together.fit_together`): the K fold networks as
    :func:`cross_validate_network` trains them (the same draws; a batched product over
    K + 1 models sums in another order, so their figures agree up to float rounding that
    early stopping may amplify), and one more on the run's own training rows (validation
    rows for early stopping), drawing its initial weights and batch order from
    ``train.seed`` alone, at its own input width. Each network's gradient, optimiser
    state and early stopping are its own; its history is the one Keras' fit gives
    (training and validation metrics each epoch) and ``on_epoch`` sees its epochs.
    ``data`` is in-memory prepared data (:func:`trains_with_folds`)."""
    from heartflow.model.together import fit_together  # lazy: Keras

    dataset = data.development()
    plan, x_folds, widths = fold_inputs(spec, dataset)
    rows = np.sort(np.concatenate([data.split.train, data.split.validation]))
    widest = max(*widths, data.width)
    k = len(plan)
    x = np.zeros((k + 1, len(rows), widest), dtype=np.float32)
    x[:k, :, :x_folds.shape[2]] = x_folds
    x[k, :, :data.width] = data.x[rows]
    result = fit_together(
        spec, x, dataset.y, [f.fit_rows for f in plan] + [np.searchsorted(rows, data.split.train)],
        [f.val_rows for f in plan] + [np.searchsorted(rows, data.split.validation)],
        validation_metrics, seeds=[None] * k + [spec.train.seed], widths=[*widths, data.width],
        report=k, on_epoch=on_epoch)
    trained = TrainResult(model=result.keras_model(spec, k), history=result.histories[k],
                          epochs_run=result.epochs_run[k], best_epoch=result.best_epochs[k],
                          seconds=result.seconds, epochs_planned=spec.train.epochs)
    fits = FoldFits(plan, [result.outputs[m][fold.test_rows] for m, fold in enumerate(plan)],
                    result.epochs_run[:k])
    return trained, fits


def cross_validate_network(spec: Spec, dataset: Dataset, threshold: float | None = None,
                           fits: FoldFits | None = None) -> CVSummary:
    """The spec's network refitted and scored on every fold (encoder refitted per fold).

    With ``evaluate.cv.together`` (the default) the folds' networks train at once in one
    compiled program (:mod:`heartflow.model.together`); otherwise one after another.
    ``fits``: the folds already trained with the run's network (:func:`fit_with_folds`).
    """
    from heartflow.model.together import fit_together  # lazy: Keras

    cv = spec.evaluate.cv
    assert cv is not None
    threshold = _threshold(spec, threshold)
    if fits is None:
        per_epoch = M.epoch_metrics(spec.task, spec.evaluate.decision_threshold)
        plan, x, _widths = fold_inputs(spec, dataset)
        if not cv.together or x is None:
            return cross_validate(spec, dataset, _sequential_network(spec, per_epoch),
                                  threshold=threshold)
        result = fit_together(spec, x, dataset.y, [f.fit_rows for f in plan],
                              [f.val_rows for f in plan], per_epoch)
        fits = FoldFits(plan, [result.outputs[m][fold.test_rows]
                               for m, fold in enumerate(plan)], result.epochs_run)
    summary = summarise(spec, dataset.y, fits.plan, fits.outputs, threshold)
    summary.epochs_run = fits.epochs_run
    return summary


def _sequential_network(spec: Spec, per_epoch):
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    def fit_and_predict(xtr, ytr, xval, yval, xte):
        keras.backend.clear_session()
        fitted = train_model(spec, xtr.shape[1], xtr, ytr, xval if len(xval) else None,
                             yval if len(yval) else None, validation_metrics=per_epoch)
        return network_output(fitted.model, xte)

    return fit_and_predict
