"""The evaluate step: score held-out rows, compute the spec's metrics, draw plots."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from heartflow import metrics as M
from heartflow.spec.models import Spec


@dataclass
class Evaluation:
    """Test-set metrics and the files that illustrate them."""

    metrics: dict[str, float]
    test_rows: int
    plots: list[str] = field(default_factory=list)


def network_output(model, x: np.ndarray) -> np.ndarray:
    """Network output for an encoded matrix (direct call for small inputs)."""
    if len(x) <= 4096:
        return np.asarray(model(x, training=False))
    return np.asarray(model.predict(x, batch_size=4096, verbose=0))


def evaluate(spec: Spec, model, x_test: np.ndarray, y_test: np.ndarray,
             history: dict[str, list[float]] | None = None, plot_dir: str | None = None,
             classes: list[str] | None = None) -> Evaluation:
    """Metrics on the test part, plus plots when ``plot_dir`` is given."""
    output = network_output(model, x_test)
    values = M.compute(spec.task, y_test, output if spec.task == "multiclass" else
                       output.reshape(-1), spec.evaluate.threshold, spec.metrics)
    plots: list[str] = []
    if plot_dir:
        from heartflow import plots as P

        if history:
            plots.append(P.learning_curves(history, f"{plot_dir}/learning_curves.png"))
        if spec.task == "binary":
            plots += P.binary_plots(y_test, output.reshape(-1), spec.evaluate.threshold,
                                    plot_dir)
        elif spec.task == "multiclass":
            plots += P.multiclass_plots(y_test, output, classes or [], plot_dir)
    return Evaluation(metrics=values, test_rows=len(y_test), plots=plots)
