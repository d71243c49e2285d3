"""Rich tables for run outcomes and registry listings."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table


def print_outcome(outcome, console: Console | None = None) -> None:
    """The end-of-run summary."""
    from heartflow.tracking.store import redact, runs_page, tracking_uri

    console = console or _console()
    table = Table(title=f"heartflow run: {outcome.spec_name}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for what, value in outcome.rows():
        table.add_row(what, value)
    console.print(table)
    uri = redact(tracking_uri())
    page = runs_page("http://127.0.0.1:5000", outcome.experiment_id)
    console.print(f"Open the MLflow UI:  heartflow ui  (or mlflow ui --backend-store-uri {uri})"
                  f", then {page}  (this run: .../runs/{outcome.run_id})")


def _console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=160)


def print_versions(rows: list[dict[str, object]], console: Console | None = None) -> None:
    """Registered versions as a table."""
    console = console or _console()
    table = Table(title="registered models")
    for column in ("model", "version", "aliases", "spec", "test roc_auc [95%]",
                   "test accuracy [95%]", "other sites", "run", "created"):
        table.add_column(column)
    for row in rows:
        metrics = row["metrics"] or {}
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(int(row["created"]) / 1000))
        table.add_row(str(row["name"]), str(row["version"]), ",".join(row["aliases"]),
                      str(row["spec"]), _fmt(metrics, "roc_auc"),
                      _fmt(metrics, "accuracy"),
                      "\n".join([*([str(row["recalibration"])] if row.get("recalibration")
                                   else []),
                                 *(f"{s}: {v}" for s, v in (row.get("sites") or {}).items())]),
                      str(row["run_id"] or "")[:12], created)
    console.print(table)


def _fmt(metrics: dict, key: str) -> str:
    if key not in metrics:
        return ""
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{metrics[key]:.4f}{ci}"


def subgroup_rich_table(subgroups) -> Table:
    """Subgroups with counts, AUC and calibration (95% intervals); small ones flagged."""
    table = Table(title="subgroups")
    for column in ("subgroup", "rows", "cases", "ROC AUC", "calibration slope", "intercept",
                   "mean risk / prevalence", ""):
        table.add_column(column)

    def shown(report, name: str) -> str:
        value = report.values.get(name, float("nan"))
        low, high = report.intervals.get(name, (float("nan"), float("nan")))
        if value != value:
            return "undefined"
        return f"{value:.3f}" + (f" [{low:.2f}, {high:.2f}]" if low == low and high == high
                                 else "")

    for g in subgroups:
        r = g.report
        table.add_row(g.name, str(g.rows), str(g.cases), shown(r, "roc_auc"),
                      shown(r, "calibration_slope"), shown(r, "calibration_intercept"),
                      f"{r.values['mean_risk']:.2f} / {r.values['prevalence']:.2f}",
                      "too small to judge" if g.too_small else "")
    return table
