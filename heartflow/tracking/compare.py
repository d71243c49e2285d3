"""`heartflow compare`: the runs of an experiment or a sweep, read from MLflow and ranked
(on development rows; :mod:`heartflow.evaluation.ranking` says how). They are written as
text by :mod:`heartflow.evaluation.tables`."""

from __future__ import annotations

import json
import re
from typing import Any

from heartflow.errors import HeartflowError
from heartflow.evaluation.ranking import defined as _defined
from heartflow.evaluation.ranking import rank_key
from heartflow.tracking import names as N
from heartflow.tracking.store import client

NOISE_PARAMS = {"description", "register.model_name", "register.enabled", "sweep.trials"}


def ranking_column(rows: list[dict[str, Any]], metric: str) -> str:
    """The development-row figure the rows are ranked by (as the sweep's choice is):
    optimism-corrected, else cross-validated, else validation."""
    for key in (f"corrected_{metric}", f"cv_{metric}"):
        if any(key in r for r in rows):
            return key
    return f"validation_{metric}"


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
        if f"corrected_{metric}" in m:  # optimism bootstrap: the whole development's figure
            row[f"corrected_{metric}"] = m[f"corrected_{metric}"]
        row[f"validation_{metric}"] = m.get(f"validation_{metric}")
        row[f"test_{metric}"] = m.get(f"test_{metric}")
        row[f"test_{metric}_ci"] = (m.get(f"test_{metric}_ci_low"),
                                    m.get(f"test_{metric}_ci_high"))
        row["test_rows"] = tags.get(N.split_size("test"), "")
        row["parameters"] = tags.get(N.PARAMETERS, "")
        row["epochs_run"] = tags.get(N.EPOCHS_RUN, "")
        row["train_seconds"] = m.get("train_seconds")
        rows.append(row)
    key = ranking_column(rows, metric)
    rows.sort(key=lambda row: rank_key(row.get(key), metric))
    for i, row in enumerate(rows, start=1):
        row["rank"] = i if _defined(row.get(key)) else ""
    return rows, metric, varied
