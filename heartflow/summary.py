"""Rich tables for run outcomes and registry listings."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table


def print_outcome(outcome, console: Console | None = None) -> None:
    """The end-of-run summary."""
    from heartflow.tracking import redact, tracking_uri

    console = console or _console()
    table = Table(title=f"heartflow run: {outcome.spec_name}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("inputs", str(outcome.input_width))
    table.add_row("parameters", str(outcome.parameters))
    split = outcome.split
    table.add_row("rows (train/val/test)",
                  f"{split['train']}/{split['validation']}/{split['test']}")
    stopped = 0 < outcome.epochs_run < (outcome.epochs_planned or outcome.epochs_run + 1)
    stop = (f" (early stop, best epoch {outcome.best_epoch})" if stopped and outcome.best_epoch
            else f" (best epoch {outcome.best_epoch})" if outcome.best_epoch else "")
    table.add_row("epochs run", f"{outcome.epochs_run}{stop}")
    table.add_row("train time", f"{outcome.train_seconds:.2f} s")
    for name, value in outcome.metrics.items():
        table.add_row(f"test {name}", f"{value:.4f}  (n={outcome.test_rows} test rows)")
    for name, (mean, ci) in outcome.cv.items():
        table.add_row(f"CV {name}", f"{mean:.4f} ± {ci:.4f}  ({outcome.cv_folds} folds, 95% CI)")
    for base, scores in outcome.baselines.items():
        shown = "  ".join(f"{k} {scores[k]:.4f}" for k in list(outcome.metrics)[:2])
        first = next(iter(outcome.metrics), "")
        if f"cv_{first}" in scores:
            mean, ci = scores[f"cv_{first}"], scores[f"cv_{first}_ci95"]
            shown += f"  (CV {first} {mean:.4f} ± {ci:.4f})"
        table.add_row(f"baseline {base}", shown)
    table.add_row("MLflow run", outcome.run_id)
    if outcome.version:
        verdict = "champion" if outcome.promoted else "not promoted"
        table.add_row("registered", f"{outcome.model_name} v{outcome.version} ({verdict})")
        table.add_row("promotion", outcome.decision)
    console.print(table)
    uri = redact(tracking_uri())
    console.print(f"Open the MLflow UI:  mlflow ui --backend-store-uri {uri}  "
                  f"(then http://127.0.0.1:5000/#/experiments/{outcome.experiment_id}/runs/"
                  f"{outcome.run_id})")


def _console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=160)


def print_versions(rows: list[dict[str, object]], console: Console | None = None) -> None:
    """Registered versions as a table."""
    console = console or _console()
    table = Table(title="registered models")
    for column in ("model", "version", "aliases", "spec", "roc_auc", "accuracy", "run",
                   "created"):
        table.add_column(column)
    for row in rows:
        metrics = row["metrics"] or {}
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(int(row["created"]) / 1000))
        table.add_row(str(row["name"]), str(row["version"]), ",".join(row["aliases"]),
                      str(row["spec"]), _fmt(metrics, "roc_auc"),
                      _fmt(metrics, "accuracy"),
                      str(row["run_id"] or "")[:12], created)
    console.print(table)


def _fmt(metrics: dict, key: str) -> str:
    return f"{metrics[key]:.4f}" if key in metrics else ""
