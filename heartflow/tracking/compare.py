"""`heartflow compare`: the runs of an experiment or a sweep, read from MLflow and ranked
(on development rows; :mod:`heartflow.evaluation.ranking` says how)."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from rich.console import Console
from rich.table import Table

from heartflow.errors import HeartflowError
from heartflow.evaluation.ranking import defined as _defined
from heartflow.evaluation.ranking import rank_key
from heartflow.tracking import names as N
from heartflow.tracking.store import client

NOISE_PARAMS = {"description", "register.model_name", "register.enabled", "sweep.trials"}


def _runs(target: str) -> tuple[list[Any], str | None, list[str] | None]:
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
    return [r for r in runs if N.SWEEP not in r.data.tags], None, None


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
                                if N.BASELINE not in run.data.tags}) > 1)
    rows = []
    for run in finished:
        m, tags = run.data.metrics, run.data.tags
        row: dict[str, Any] = {
            "run": run.info.run_name or run.info.run_id[:8], "run_id": run.info.run_id,
            "status": run.info.status,
            "kind": f"baseline:{tags[N.BASELINE]}" if N.BASELINE in tags else "network"}
        try:
            overrides = json.loads(tags.get(N.OVERRIDES) or "{}")
        except ValueError:
            overrides = {}
        for key in varied:
            row[key] = overrides.get(key, run.data.params.get(key, ""))
        if f"cv_{metric}_mean" in m:
            row[f"cv_{metric}"] = m[f"cv_{metric}_mean"]
            row[f"cv_{metric}_ci95"] = m.get(f"cv_{metric}_ci95")
        row[f"validation_{metric}"] = m.get(f"validation_{metric}")
        row[f"test_{metric}"] = m.get(f"test_{metric}")
        row[f"test_{metric}_ci"] = (m.get(f"test_{metric}_ci_low"),
                                    m.get(f"test_{metric}_ci_high"))
        row["test_rows"] = tags.get(N.split_size("test"), "")
        row["parameters"] = tags.get(N.PARAMETERS, "")
        row["epochs_run"] = tags.get(N.EPOCHS_RUN, "")
        row["train_seconds"] = m.get("train_seconds")
        rows.append(row)
    key = f"cv_{metric}" if any(f"cv_{metric}" in r for r in rows) else f"validation_{metric}"
    rows.sort(key=lambda row: rank_key(row.get(key), metric))
    for i, row in enumerate(rows, start=1):
        row["rank"] = i if _defined(row.get(key)) else ""
    return rows, metric, varied


def render(rows: list[dict[str, Any]], metric: str, varied: list[str], fmt: str) -> str:
    """Rows as a table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows, indent=1, default=str)
    cv = any(f"cv_{metric}" in r for r in rows)
    chosen_by = f"cv_{metric}" if cv else f"validation_{metric}"
    columns = ["rank", "run", "kind", "status", *varied, chosen_by]
    if cv:
        columns.append(f"cv_{metric}_ci95")
    columns += [f"test_{metric}", f"test_{metric}_ci", "test_rows", "parameters",
                "epochs_run", "train_seconds"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    source = "CV (development rows)" if cv else "validation rows"
    table = Table(title=f"ranked by {metric} on {source}; test is reported, not used to rank",
                  caption="undefined figures rank last; intervals are 95%")
    heads = {f"cv_{metric}": f"CV {metric} ± 95%", f"validation_{metric}":
             f"validation {metric}", f"test_{metric}": f"test {metric} [95%] (reported)"}
    shown = [c for c in columns if c not in (f"cv_{metric}_ci95", f"test_{metric}_ci")]
    for column in shown:
        table.add_column(heads.get(column, column))
    for row in rows:
        table.add_row(*(_cell(row, column, metric) for column in shown))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def _cell(row: dict[str, Any], column: str, metric: str) -> str:
    value = row.get(column)
    if column == f"cv_{metric}" and _defined(value):
        return f"{value:.4f} ± {row.get(f'cv_{metric}_ci95') or 0:.4f}"
    if column == f"test_{metric}" and _defined(value):
        low, high = row.get(f"test_{metric}_ci") or (None, None)
        return f"{value:.4f} [{low:.4f}, {high:.4f}]" if _defined(low) and _defined(high) \
            else f"{value:.4f}"
    if column in (f"validation_{metric}", f"cv_{metric}", f"test_{metric}") \
            and not _defined(value):
        return "undefined"
    if isinstance(value, float):
        return f"{value:.4f}" if column != "train_seconds" else f"{value:.2f}s"
    return "" if value is None else str(value)
