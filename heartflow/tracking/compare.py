"""`heartflow compare`: rank the runs of an experiment or of a sweep's parent run."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any

from heartflow.errors import HeartflowError
from heartflow.spec.vocabulary import HIGHER_IS_BETTER

NOISE_PARAMS = {"description", "register.model_name", "register.enabled", "sweep.trials"}


def _runs(target: str) -> tuple[list[Any], str | None, list[str] | None]:
    from heartflow.tracking.runs import client

    c = client()
    if re.fullmatch(r"[0-9a-f]{32}", target):
        try:
            parent = c.get_run(target)
        except Exception:
            raise HeartflowError(f"no MLflow run with id {target}") from None
        children = c.search_runs([parent.info.experiment_id],
                                 filter_string=f"tags.mlflow.parentRunId = '{target}'",
                                 max_results=5000)
        axes = [k.removeprefix("sweep.axis.") for k in parent.data.params
                if k.startswith("sweep.axis.")]
        return children, parent.data.params.get("sweep.metric"), axes
    experiment = c.get_experiment_by_name(target)
    if experiment is None:
        raise HeartflowError(f"no experiment or run called {target!r}; experiments: "
                             + ", ".join(e.name for e in c.search_experiments()))
    runs = c.search_runs([experiment.experiment_id], max_results=5000)
    return [r for r in runs if "heartflow.sweep" not in r.data.tags], None, None


def rows_for(target: str, metric: str | None = None) -> tuple[list[dict[str, Any]], str,
                                                                 list[str]]:
    """Ranked rows, the ranking metric and the varied parameter names."""
    finished, sweep_metric, axes = _runs(target)
    metric = metric or sweep_metric or "roc_auc"
    if axes is not None:
        varied = axes
    else:
        keys = set()
        for run in finished:
            keys |= set(run.data.params)
        varied = sorted(k for k in keys - NOISE_PARAMS
                        if len({run.data.params.get(k) for run in finished
                                if "heartflow.baseline" not in run.data.tags}) > 1)
    rows = []
    for run in finished:
        m, tags = run.data.metrics, run.data.tags
        row: dict[str, Any] = {
            "run": run.info.run_name or run.info.run_id[:8], "run_id": run.info.run_id,
            "status": run.info.status,
            "kind": f"baseline:{tags['heartflow.baseline']}" if "heartflow.baseline" in tags
            else "network"}
        try:
            overrides = json.loads(tags.get("heartflow.overrides") or "{}")
        except ValueError:
            overrides = {}
        for key in varied:
            row[key] = overrides.get(key, run.data.params.get(key, ""))
        row[metric] = m.get(f"test_{metric}")
        if f"cv_{metric}_mean" in m:
            row[f"cv_{metric}"] = m[f"cv_{metric}_mean"]
            row[f"cv_{metric}_ci95"] = m.get(f"cv_{metric}_ci95")
        for other in ("accuracy", "log_loss"):
            if other != metric and f"test_{other}" in m:
                row[other] = m[f"test_{other}"]
        row["parameters"] = tags.get("heartflow.parameters", "")
        row["epochs_run"] = tags.get("heartflow.epochs_run", "")
        row["train_seconds"] = m.get("train_seconds")
        rows.append(row)
    key = f"cv_{metric}" if any(f"cv_{metric}" in r for r in rows) else metric
    higher = metric in HIGHER_IS_BETTER

    def rank(row: dict[str, Any]) -> float:
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return math.inf
        return -value if higher else value

    rows.sort(key=rank)
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    return rows, metric, varied


def render(rows: list[dict[str, Any]], metric: str, varied: list[str], fmt: str) -> str:
    """Rows as a table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows, indent=1, default=str)
    columns = ["rank", "run", "kind", "status", *varied, metric]
    if any(f"cv_{metric}" in r for r in rows):
        columns += [f"cv_{metric}", f"cv_{metric}_ci95"]
    columns += [c for c in ("accuracy", "log_loss") if c != metric and any(c in r for r in rows)]
    columns += ["parameters", "epochs_run", "train_seconds"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ranked by {metric}")
    shown = [c for c in columns if c != f"cv_{metric}_ci95"]
    for column in shown:
        table.add_column(f"CV {metric} ± 95%" if column == f"cv_{metric}" else column)
    for row in rows:
        cells = []
        for column in shown:
            value = row.get(column)
            if column == f"cv_{metric}" and value is not None:
                cells.append(f"{value:.4f} ± {row.get(f'cv_{metric}_ci95') or 0:.4f}")
            elif isinstance(value, float):
                cells.append(f"{value:.4f}" if column != "train_seconds" else f"{value:.2f}s")
            else:
                cells.append("" if value is None else str(value))
        table.add_row(*cells)
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()
