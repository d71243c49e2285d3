"""The evaluate step: score held-out rows, compute the spec's metrics, draw plots.

In-memory test rows are scored in one batch (exact metrics); streamed test rows are
scored block by block into a constant-memory accumulator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from heartflow.evaluation import metrics as M
from heartflow.model.scorer import network_output
from heartflow.spec.schema import Spec


@dataclass
class Evaluation:
    """Test-set metrics and the files that illustrate them."""

    metrics: dict[str, float]
    test_rows: int
    plots: list[str] = field(default_factory=list)


def evaluate(spec: Spec, model, x_test: np.ndarray, y_test: np.ndarray,
             history: dict[str, list[float]] | None = None, plot_dir: str | None = None,
             classes: list[str] | None = None) -> Evaluation:
    """Metrics on in-memory test rows, plus plots when ``plot_dir`` is given."""
    output = network_output(model, x_test)
    values = M.compute(spec.task, y_test, output if spec.task == "multiclass" else
                       output.reshape(-1), spec.evaluate.threshold, spec.metrics)
    plots: list[str] = []
    if plot_dir:
        from heartflow.evaluation import plots as P

        if history:
            plots.append(P.learning_curves(history, f"{plot_dir}/learning_curves.png"))
        if spec.task == "binary":
            plots += P.binary_plots(y_test, output.reshape(-1), spec.evaluate.threshold,
                                    plot_dir)
        elif spec.task == "multiclass":
            plots += P.multiclass_plots(y_test, output, classes or [], plot_dir)
    return Evaluation(metrics=values, test_rows=len(y_test), plots=plots)


def evaluate_streamed(spec: Spec, model, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                      history: dict[str, list[float]] | None = None,
                      plot_dir: str | None = None) -> Evaluation:
    """Binary metrics over test rows that arrive in blocks, in constant memory."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    totals = M.BinaryAccumulator(spec.evaluate.threshold)
    for x, y in batches:
        totals.update(y, forward(x).numpy())
    everything = totals.result()
    plots: list[str] = []
    if plot_dir:
        from heartflow.evaluation import plots as P

        if history:
            plots.append(P.learning_curves(history, f"{plot_dir}/learning_curves.png"))
        plots += P.accumulated_plots(totals, plot_dir)
    return Evaluation(metrics={name: everything[name] for name in spec.metrics},
                      test_rows=totals.n, plots=plots)


def score_with(scorer: Any, features: pd.DataFrame, y: np.ndarray, spec: Spec,
               metric: str) -> float:
    """One metric of a loaded model (a Scorer, with its own encoder) on typed rows."""
    return M.compute(spec.task, y, scorer.output(features), spec.evaluate.threshold,
                     [metric])[metric]
