"""PNG plots logged with each run: ROC, precision-recall, confusion matrix, learning curves."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from heartflow.data.table import level_sort_key
from heartflow.evaluation import metrics as M
from heartflow.evaluation.clinical import calibration_bins, net_benefit, treat_all_benefit


def _pyplot():
    # lazy: matplotlib, only when a plot is drawn
    import matplotlib

    matplotlib.use("Agg", force=True)
    # lazy: matplotlib, only when a plot is drawn
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str, left: float, bottom: float, top: float = 0.92,
          right: float = 0.97, **spacing: float) -> str:
    """Write ``fig`` as a PNG (90 dpi) with fixed margins, then close it.

    Fixed margins, sized for each plot's labels at its figure size, instead of
    ``tight_layout``: measuring every text's extent to place the axes took 40% of the
    drawing time (about 0.35 s of each run's figures).
    """
    fig.subplots_adjust(left=left, bottom=bottom, right=right, top=top, **spacing)
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def learning_curves(history: dict[str, list[float]], path: str) -> str:
    """Loss (and val_loss) per epoch, so overfitting is visible."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(range(1, len(history[key]) + 1), history[key], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Learning curves")
    ax.legend()
    return _save(fig, path, left=0.12, bottom=0.13, top=0.91)


def _thin(a: np.ndarray, b: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` points of a curve (millions of test rows need no more to draw)."""
    if len(a) <= points:
        return a, b
    keep = np.unique(np.linspace(0, len(a) - 1, points).round().astype(int))
    return a[keep], b[keep]


def binary_plots(y: np.ndarray, p: np.ndarray, threshold: float, folder: str) -> list[str]:
    """ROC curve, precision-recall curve and confusion matrix for a binary model."""
    plt = _pyplot()
    paths = [roc_plot(y, p, os.path.join(folder, "roc_curve.png"), "ROC curve (test)")]
    precision, recall = _thin(*M.pr_curve(y, p))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.step(recall, precision, where="post",
            label=f"average precision {M.average_precision(y, p):.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall curve (test)")
    ax.legend(loc="lower left")
    paths.append(_save(fig, os.path.join(folder, "pr_curve.png"), left=0.14, bottom=0.11,
                       top=0.93))

    pred = (np.asarray(p).ravel() >= threshold).astype(int)
    truth = (np.asarray(y).ravel() > 0.5).astype(int)
    matrix = np.zeros((2, 2), dtype=int)
    for t, q in zip(truth, pred, strict=False):
        matrix[t, q] += 1
    paths.append(confusion_matrix(matrix, ["0", "1"], folder, f"threshold {threshold}"))
    return paths


def accumulated_plots(totals: M.BinaryAccumulator, folder: str) -> list[str]:
    """ROC, precision-recall and confusion matrix from a streamed BinaryAccumulator."""
    plt = _pyplot()
    fpr, tpr, precision, recall = totals.curves()
    scores = totals.result()
    paths = []
    for name, (x, y, label, xl, yl) in {
            "roc_curve": (fpr, tpr, f"AUC {scores['roc_auc']:.3f}", "false positive rate",
                          "true positive rate"),
            "pr_curve": (recall, precision, f"average precision {scores['pr_auc']:.3f}",
                         "recall", "precision")}.items():
        x, y = _thin(x, y)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(x, y, label=label)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{name.replace('_', ' ')} (test, {totals.n:,} rows)")
        ax.legend()
        paths.append(_save(fig, os.path.join(folder, f"{name}.png"), left=0.14, bottom=0.11,
                           top=0.93))
    matrix = np.array([[totals.tn, totals.fp], [totals.fn, totals.tp]])
    paths.append(confusion_matrix(matrix, ["0", "1"], folder, f"threshold {totals.threshold}"))
    return paths


def confusion_matrix(matrix: np.ndarray, labels: list[str], folder: str, note: str = "") -> str:
    """A labelled confusion-matrix heat map."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix (test{', ' + note if note else ''})")
    return _save(fig, os.path.join(folder, "confusion_matrix.png"), left=0.12, bottom=0.13,
                 top=0.9, right=0.95)


def multiclass_plots(y: np.ndarray, proba: np.ndarray, labels: list[str],
                     folder: str) -> list[str]:
    """Confusion matrix for a multi-class model."""
    k = len(labels)
    matrix = np.zeros((k, k), dtype=int)
    for t, q in zip(np.asarray(y).astype(int), np.asarray(proba).argmax(axis=1), strict=False):
        matrix[t, q] += 1
    return [confusion_matrix(matrix, labels, folder)]


def sweep_plots(results: list[Any], metric: str, axes: dict[str, list], folder: str
                ) -> list[str]:
    """For each varied parameter: the development-row metric against its values.

    ``results`` are finished trials (``overrides`` and an ``outcome`` with ``cv`` and
    ``validation``). The CV mean with its 95% interval when cross-validated, else the
    validation metric.
    """
    plt = _pyplot()
    paths = []
    source = "validation"
    for axis in axes:
        groups: dict[str, list[tuple[float, float]]] = {}
        for result in results:
            outcome = result.outcome
            value = result.overrides.get(axis)
            if metric in outcome.cv:
                mean, ci = outcome.cv[metric]
                source = "CV"
            else:
                mean, ci = outcome.validation.get(metric, float("nan")), 0.0
            groups.setdefault(str(value), []).append((mean, ci))
        labels = sorted(groups, key=level_sort_key)
        means = [float(np.mean([m for m, _ in groups[k]])) for k in labels]
        errors = [float(np.mean([c for _, c in groups[k]])) for k in labels]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar(range(len(labels)), means, yerr=errors, marker="o", capsize=4)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{source} {metric}")
        ax.set_title(f"{source} {metric} against {axis} (development rows)")
        fig.tight_layout()
        path = os.path.join(folder, f"sweep_{axis.replace('.', '_')}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths



def reliability_diagram(y: np.ndarray, p: np.ndarray, path: str, title: str = "",
                        bins: int = 10) -> str:
    """Observed outcome rate against mean predicted risk in quantile bins (those of
    scikit-learn's calibration_curve), with the rows' risks as a histogram below."""

    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    observed, predicted, _counts = calibration_bins(y, p, min(bins, max(2, len(y) // 5)))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set_ylabel("observed outcome rate")
    ax.set_title(title or "Reliability diagram")
    ax.legend(loc="upper left")
    hist.hist(p, bins=20, range=(0, 1), color="tab:blue", alpha=0.7)
    hist.set_xlabel("predicted risk")
    hist.set_ylabel("rows")
    return _save(fig, path, left=0.15, bottom=0.09, top=0.94, hspace=0.08)


def decision_curve(y: np.ndarray, p: np.ndarray, path: str, title: str = "",
                   thresholds: np.ndarray | None = None) -> str:
    """Net benefit of the model against treating everyone and no one, over thresholds."""

    plt = _pyplot()
    grid = np.linspace(0.01, 0.8, 80) if thresholds is None else thresholds
    prevalence = float(np.mean(y))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, [net_benefit(y, p, t) for t in grid], label="model")
    ax.plot(grid, [treat_all_benefit(prevalence, t) for t in grid], label="treat all")
    ax.axhline(0.0, color="black", linewidth=1, label="treat none")
    ax.set_ylim(min(-0.05, -0.1 * prevalence), max(prevalence, 0.05) * 1.1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title(title or "Decision curve")
    ax.legend()
    return _save(fig, path, left=0.13, bottom=0.13, top=0.91)


def roc_plot(y: np.ndarray, p: np.ndarray, path: str, title: str = "") -> str:
    """One ROC curve with its AUC."""
    plt = _pyplot()
    fpr, tpr = _thin(*M.roc_curve(y, p))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC {M.roc_auc(np.asarray(y) > 0.5, p):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC curve")
    ax.legend(loc="lower right")
    return _save(fig, path, left=0.14, bottom=0.11, top=0.93)


def instability_plot(original: np.ndarray, refits: np.ndarray, path: str,
                     title: str = "Prediction instability (bootstrap refits)") -> str:
    """Each patient's risk from every bootstrap refit against the development model's risk
    (Riley and Collins 2023), with the 2.5th and 97.5th percentiles of the refits' risks."""
    plt = _pyplot()
    order = np.argsort(original)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    xs = np.broadcast_to(original, refits.shape).ravel()
    ax.scatter(xs, refits.ravel(), s=2, alpha=0.08, color="tab:blue", rasterized=True)
    low, high = np.percentile(refits, [2.5, 97.5], axis=0)
    ax.plot(original[order], low[order], color="tab:red", lw=1, label="2.5th / 97.5th pct")
    ax.plot(original[order], high[order], color="tab:red", lw=1)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("risk from the development model")
    ax.set_ylabel("risk from bootstrap refits")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return _save(fig, path, left=0.13, bottom=0.11, top=0.93)
