"""Evaluation metrics in plain NumPy (checked against scikit-learn in the tests).

Plain NumPy keeps scikit-learn's import off the `heartflow run` path. An output that is NaN or
infinite (a diverged network) makes every metric of the rows undefined (NaN): ranking such
outputs as ties would report an AUC of 0.5 and a defined accuracy for a network that said
nothing (scikit-learn refuses such input outright).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-15
BINARY_NAMES = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss",
                "brier")
MULTICLASS_NAMES = ("accuracy", "macro_f1", "log_loss", "roc_auc")
REGRESSION_NAMES = ("mse", "rmse", "mae", "r2")
NAN = float("nan")


def all_finite(output: np.ndarray) -> bool:
    """Whether every output is a finite number (no NaN, no infinity)."""
    return bool(np.isfinite(np.asarray(output, dtype=np.float64)).all())


def _undefined(names: tuple[str, ...]) -> dict[str, float]:
    return dict.fromkeys(names, NAN)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    _values, inverse, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = (ends - counts + 1 + ends) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = average[inverse]
    return ranks


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN if only one class is present or an
    output is not finite."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0 or not all_finite(p):
        return NAN
    ranks = _ranks(np.asarray(p, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _cumulative_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """Truth as bool, and true positives and predicted positives at each distinct threshold."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(p), kind="mergesort")
    p_sorted, y_sorted = np.asarray(p)[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    return y, np.cumsum(y_sorted)[distinct], distinct + 1


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold."""
    y, tps, predicted = _cumulative_counts(y, p)
    fps = predicted - tps
    tpr = np.r_[0.0, tps / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fps / max(int((~y).sum()), 1)]
    return fpr, tpr


def pr_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold (recall increasing)."""
    y, tps, predicted = _cumulative_counts(y, p)
    precision = tps / predicted
    recall = tps / max(int(y.sum()), 1)
    return np.r_[1.0, precision], np.r_[0.0, recall]


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's definition); NaN
    if an output is not finite."""
    if not all_finite(p):
        return NAN
    precision, recall = pr_curve(y, p)
    return float(np.sum(np.diff(recall) * precision[1:]))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5,
                   names: list[str] | None = None) -> dict[str, float]:
    """Binary metrics (all, or the ``names``) for probabilities ``p`` of the positive class;
    all NaN if an output is not finite."""
    y = np.asarray(y).astype(np.float64).ravel()
    if not all_finite(p):
        return _undefined(BINARY_NAMES)
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), 0.0, 1.0)
    pred = p >= threshold
    truth = y > 0.5
    tp = float(np.sum(pred & truth))
    fp = float(np.sum(pred & ~truth))
    fn = float(np.sum(~pred & truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    q = np.clip(p, EPS, 1 - EPS)
    wanted = set(names or ("roc_auc", "pr_auc"))
    return {
        "roc_auc": roc_auc(truth, p) if "roc_auc" in wanted else NAN,
        "pr_auc": average_precision(truth, p) if "pr_auc" in wanted else NAN,
        "accuracy": float(np.mean(pred == truth)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
        "brier": float(np.mean((p - y) ** 2)),
    }


ROW_NAMES = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")
"""The binary metrics :func:`binary_metrics_resampled` computes for many row sets at once."""


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0.0 where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator != 0, numerator / denominator, 0.0)


def _counts(key: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """(sets, size) counts of ``key[rows]`` in each row of ``rows``."""
    offset = size * np.arange(len(rows))[:, None]
    return np.bincount((key[rows] + offset).ravel(),
                       minlength=size * len(rows)).reshape(len(rows), size)


def binary_metrics_resampled(y: np.ndarray, p: np.ndarray, rows: np.ndarray,
                             threshold: float, names: list[str]) -> dict[str, np.ndarray]:
    """:func:`binary_metrics` of many row sets at once (a bootstrap's resamples): value ``k``
    of each of the ``names`` (all from :data:`ROW_NAMES`) is that of
    ``binary_metrics(y[rows[k]], p[rows[k]], threshold)``, ``rows`` being (sets, m) indices.

    No sort per set: the counts come from ``np.bincount`` of per-row keys, and the ROC AUC
    (Mann-Whitney, ties 1/2) from each set's counts of cases and non-cases at each distinct
    output, ranked once. Memory is a few times that of ``rows``."""
    unknown = sorted(set(names) - set(ROW_NAMES))
    if unknown:
        raise ValueError(f"binary_metrics_resampled cannot compute {unknown}; it computes "
                         f"{list(ROW_NAMES)}. Use binary_metrics one row set at a time for "
                         "the others.")
    rows = np.asarray(rows, dtype=np.intp)
    y = np.asarray(y).astype(np.float64).ravel()
    if rows.ndim != 2 or np.size(p) != len(y):
        raise ValueError(f"binary_metrics_resampled needs one output per label ({np.size(p)} "
                         f"outputs, {len(y)} labels) and a 2-D (sets, rows) index array (got "
                         f"{rows.ndim}-D). Pass the row sets as the rows of one array.")
    sets, m = rows.shape
    if not all_finite(p):
        return {name: np.full(sets, NAN) for name in names}
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), 0.0, 1.0)
    pred, truth = p >= threshold, y > 0.5
    values: dict[str, np.ndarray] = {}
    if {"accuracy", "precision", "recall", "f1"} & set(names):
        tn, fn, fp, tp = _counts(2 * pred + truth, rows, 4).astype(np.float64).T
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        values.update(accuracy=(tn + tp) / m, precision=precision, recall=recall,
                      f1=_ratio(2 * precision * recall, precision + recall))
    if "log_loss" in names:
        q = np.clip(p, EPS, 1 - EPS)
        values["log_loss"] = -np.mean((y * np.log(q) + (1 - y) * np.log(1 - q))[rows], axis=1)
    if "brier" in names:
        values["brier"] = np.mean(((p - y) ** 2)[rows], axis=1)
    if "roc_auc" in names:
        distinct, level = np.unique(p, return_inverse=True)
        both = _counts(2 * level.ravel() + truth, rows, 2 * len(distinct)).astype(np.float64)
        neg, pos = both[:, 0::2], both[:, 1::2]
        below = np.cumsum(neg, axis=1) - neg
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = np.sum(pos * (below + neg / 2.0), axis=1) / (n_pos * n_neg)
        values["roc_auc"] = np.where((n_pos > 0) & (n_neg > 0), auc, NAN)
    return {name: values[name] for name in names}


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1, log loss and one-vs-rest macro ROC AUC (NaN for non-finite output)."""
    y = np.asarray(y).astype(np.int64).ravel()
    proba = np.asarray(proba, dtype=np.float64)
    if not all_finite(proba):
        return _undefined(MULTICLASS_NAMES)
    k = proba.shape[1]
    pred = proba.argmax(axis=1)
    f1s, aucs = [], []
    for c in range(k):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0)
        aucs.append(roc_auc(y == c, proba[:, c]))
    q = np.clip(proba[np.arange(len(y)), y], EPS, 1.0)
    finite = [a for a in aucs if not np.isnan(a)]
    return {"accuracy": float(np.mean(pred == y)), "macro_f1": float(np.mean(f1s)),
            "log_loss": float(-np.mean(np.log(q))),
            "roc_auc": float(np.mean(finite)) if finite else NAN}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE and R² (NaN for non-finite output)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if not all_finite(pred):
        return _undefined(REGRESSION_NAMES)
    mse = float(np.mean((y - pred) ** 2))
    var = float(np.var(y))
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(y - pred))),
            "r2": 1.0 - mse / var if var > 0 else NAN}


def compute(task: str, y: np.ndarray, output: np.ndarray, threshold: float,
            names: list[str]) -> dict[str, float]:
    """The named metrics for a task, from the network's raw output."""
    if task == "binary":
        values = binary_metrics(y, output, threshold, names)
    elif task == "multiclass":
        values = multiclass_metrics(y, output)
    else:
        values = regression_metrics(y, output)
    return {name: values[name] for name in names}


def epoch_metrics(task: str, threshold: float = 0.5):
    """Per-epoch validation metrics for training (labels in the network's output shape); NaN
    when an output is not finite (early stopping then never counts the epoch as best)."""
    names = {"binary": ("auc", "accuracy"), "multiclass": ("accuracy",)}.get(task,
                                                                              ("rmse", "mae"))

    def compute(truth: np.ndarray, p: np.ndarray) -> dict[str, float]:
        if not all_finite(p):
            return _undefined(names)
        if task == "binary":
            t, q = truth.ravel() > 0.5, p.ravel()
            return {"auc": roc_auc(t, q), "accuracy": float(np.mean((q >= threshold) == t))}
        if task == "multiclass":
            return {"accuracy": float(np.mean(p.argmax(1) == truth.argmax(1)))}
        err = p.ravel() - truth.ravel()
        return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}

    return compute


class BinaryAccumulator:
    """Binary metrics over batches in constant memory (for streamed test sets).

    Counts, log loss and Brier score are exact; ROC and PR AUC come from score histograms
    with ``bins`` equal-width bins (ties within a bin count as ties: error below 1/bins).
    Outputs that are NaN or infinite are counted in ``non_finite`` (and in ``n``), kept out
    of the histograms and counts, and make every metric of :meth:`result` undefined (NaN).
    """

    def __init__(self, threshold: float = 0.5, bins: int = 100_000) -> None:
        self.threshold, self.bins = threshold, bins
        self.pos = np.zeros(bins, dtype=np.int64)
        self.neg = np.zeros(bins, dtype=np.int64)
        self.tp = self.fp = self.fn = self.tn = 0
        self.log_loss_sum = self.brier_sum = 0.0
        self.n = 0
        self.non_finite = 0

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        """Add a batch of labels and positive-class probabilities."""
        y = np.asarray(y).ravel() > 0.5
        p = np.asarray(p, dtype=np.float64).ravel()
        self.n += len(y)
        finite = np.isfinite(p)
        if not finite.all():
            self.non_finite += int(np.sum(~finite))
            y, p = y[finite], p[finite]
        p = np.clip(p, 0.0, 1.0)
        index = np.minimum((p * self.bins).astype(np.int64), self.bins - 1)
        self.pos += np.bincount(index[y], minlength=self.bins)
        self.neg += np.bincount(index[~y], minlength=self.bins)
        pred = p >= self.threshold
        self.tp += int(np.sum(pred & y))
        self.fp += int(np.sum(pred & ~y))
        self.fn += int(np.sum(~pred & y))
        self.tn += int(np.sum(~pred & ~y))
        q = np.clip(p, EPS, 1 - EPS)
        self.log_loss_sum += float(-np.sum(np.where(y, np.log(q), np.log(1 - q))))
        self.brier_sum += float(np.sum((p - y) ** 2))

    def curves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(fpr, tpr, precision, recall) from the highest score bin down."""
        tps = np.cumsum(self.pos[::-1])
        fps = np.cumsum(self.neg[::-1])
        keep = (self.pos[::-1] + self.neg[::-1]) > 0
        tps, fps = tps[keep], fps[keep]
        total_pos, total_neg = max(int(self.pos.sum()), 1), max(int(self.neg.sum()), 1)
        return (np.r_[0.0, fps / total_neg], np.r_[0.0, tps / total_pos],
                np.r_[1.0, tps / np.maximum(tps + fps, 1)], np.r_[0.0, tps / total_pos])

    def result(self) -> dict[str, float]:
        """The same metric names as :func:`binary_metrics` (all NaN after a non-finite output)."""
        if self.non_finite:
            return _undefined(BINARY_NAMES)
        fpr, tpr, precision, recall = self.curves()
        tp, fp, fn = self.tp, self.fp, self.fn
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        both = self.pos.sum() > 0 and self.neg.sum() > 0
        return {
            "roc_auc": float(np.trapezoid(tpr, fpr)) if both else NAN,
            "pr_auc": float(np.sum(np.diff(recall) * precision[1:])),
            "accuracy": (tp + self.tn) / max(self.n, 1),
            "precision": prec, "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "log_loss": self.log_loss_sum / max(self.n, 1),
            "brier": self.brier_sum / max(self.n, 1),
        }
