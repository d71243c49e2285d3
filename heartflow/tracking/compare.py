"""How runs are ranked and chosen: `heartflow compare`, and the sweep's choice.

Runs are ranked on development rows only: the cross-validation mean when the runs were
cross-validated (on training + validation rows), else the metric on the validation rows.
Test metrics are shown, with their 95% intervals, and never used to rank. A metric that
is undefined (NaN) ranks last and is never chosen.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any

import numpy as np

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
        if f"cv_{metric}_mean" in m:
            row[f"cv_{metric}"] = m[f"cv_{metric}_mean"]
            row[f"cv_{metric}_ci95"] = m.get(f"cv_{metric}_ci95")
        row[f"validation_{metric}"] = m.get(f"validation_{metric}")
        row[f"test_{metric}"] = m.get(f"test_{metric}")
        row[f"test_{metric}_ci"] = (m.get(f"test_{metric}_ci_low"),
                                    m.get(f"test_{metric}_ci_high"))
        row["test_rows"] = tags.get("heartflow.split.test", "")
        row["parameters"] = tags.get("heartflow.parameters", "")
        row["epochs_run"] = tags.get("heartflow.epochs_run", "")
        row["train_seconds"] = m.get("train_seconds")
        rows.append(row)
    key = f"cv_{metric}" if any(f"cv_{metric}" in r for r in rows) else f"validation_{metric}"
    rows.sort(key=lambda row: _rank_key(row.get(key), metric))
    for i, row in enumerate(rows, start=1):
        row["rank"] = i if _defined(row.get(key)) else ""
    return rows, metric, varied


def _defined(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _rank_key(value: Any, metric: str) -> float:
    if not _defined(value):
        return math.inf  # undefined: last, never chosen
    return -value if metric in HIGHER_IS_BETTER else value


def selection_score(outcome: dict[str, Any], metric: str) -> tuple[float, str]:
    """What a finished run is chosen by: (CV mean, 'cv') or (validation metric, 'validation')."""
    if metric in outcome.get("cv", {}):
        return float(outcome["cv"][metric][0]), "cv"
    value = outcome.get("validation", {}).get(metric)
    return (float(value), "validation") if value is not None else (math.nan, "none")


def choose(outcomes: list[dict[str, Any]], metric: str, task: str,
           threshold: float) -> dict[str, Any]:
    """Rank runs on development rows; say whether the leader beats the runner-up.

    The leader and runner-up are compared on the same rows: fold by fold (Student t) when
    both were cross-validated on the same folds, else by a paired bootstrap on the same
    validation rows. Returns the ranked outcomes and a sentence for the user.
    """
    from heartflow.evaluation.intervals import paired_difference, paired_fold_difference

    scored = [(selection_score(o, metric), o) for o in outcomes]
    ranked = [o for (value, _source), o in sorted(
        scored, key=lambda item: _rank_key(item[0][0], metric)) if _defined(value)]
    out: dict[str, Any] = {"ranked": ranked, "source": scored[0][0][1] if scored else "none",
                           "distinguishable": None, "summary": "no run has a defined "
                           f"development-row {metric}"}
    if not ranked:
        return out
    leader = ranked[0]
    out["summary"] = f"chosen by {out['source']} {metric}: {leader['run_id']}"
    if len(ranked) < 2:
        return out
    runner = ranked[1]
    sign = 1 if metric in HIGHER_IS_BETTER else -1
    if out["source"] == "cv" and leader.get("cv_scores", {}).get(metric) and \
            len(leader["cv_scores"][metric]) == len(runner.get("cv_scores", {}).get(metric, [])):
        diff, low, high = paired_fold_difference(leader["cv_scores"][metric],
                                                 runner["cv_scores"][metric])
        how = f"fold by fold over {len(leader['cv_scores'][metric])} folds"
    elif leader.get("validation_output") and \
            leader.get("validation_labels") == runner.get("validation_labels"):
        diff, low, high = paired_difference(task, np.asarray(leader["validation_labels"]),
                                            np.asarray(leader["validation_output"]),
                                            np.asarray(runner["validation_output"]),
                                            threshold, metric)
        how = f"paired bootstrap on the same {len(leader['validation_labels'])} validation rows"
    else:
        out["summary"] += "; the runner-up was scored on other rows: no paired comparison"
        return out
    clear = sign * low > 0 if sign > 0 else sign * high > 0
    out["distinguishable"] = bool(clear)
    out["difference"] = [diff, low, high]
    verdict = "better than" if clear else "not distinguishable from"
    out["summary"] = (f"leader {leader['run_id'][:8]} is {verdict} the runner-up "
                      f"{runner['run_id'][:8]}: {metric} difference {diff:+.4f} "
                      f"[{low:+.4f}, {high:+.4f}] ({how}, 95%)")
    return out


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
    from rich.console import Console
    from rich.table import Table

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
