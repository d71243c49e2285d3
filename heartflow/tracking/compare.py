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
from heartflow.tracking.retries import retrying
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
        varied = varied_parameters([run.data.params for run in finished
                                    if N.BASELINE not in run.data.tags])
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
            row[key] = _value(overrides.get(key, run.data.params.get(
                key, run.data.params.get(f"{AXIS}{key}"))))
        if f"cv_{metric}_mean" in m:
            row[f"cv_{metric}"] = m[f"cv_{metric}_mean"]
            row[f"cv_{metric}_ci95"] = m.get(f"cv_{metric}_ci95")
        if f"corrected_{metric}" in m:  # optimism bootstrap: the whole development's figure
            row[f"corrected_{metric}"] = m[f"corrected_{metric}"]
        row[f"validation_{metric}"] = m.get(f"validation_{metric}")
        row[f"test_{metric}"] = m.get(f"test_{metric}")
        row[f"test_{metric}_ci_low"] = m.get(f"test_{metric}_ci_low")
        row[f"test_{metric}_ci_high"] = m.get(f"test_{metric}_ci_high")
        row["test_rows"] = _value(tags.get(N.split_size("test")))
        row["parameters"] = _value(tags.get(N.PARAMETERS))
        row["epochs_run"] = _value(tags.get(N.EPOCHS_RUN))
        row["train_seconds"] = m.get("train_seconds")
        rows.append(row)
    key = ranking_column(rows, metric)
    source = key.removesuffix(f"_{metric}")
    for row in rows:  # the figure ranked by, under the name of the run's rank_<metric> metric
        row[N.rank_metric(metric)] = row.get(key)
        row["ranked_by"] = source
    rows.sort(key=lambda row: rank_key(row.get(key), metric))
    for i, row in enumerate(rows, start=1):
        row["rank"] = i if _defined(row.get(key)) else None
    return rows, metric, varied


AXIS = "axis."  # a sweep child's swept values, logged again as axis.<parameter>


def varied_parameters(params: list[dict[str, str]]) -> list[str]:
    """Parameters that take two or more values among the runs that have them: a run that
    lacks one (the 0-unit trial has no hidden activation, dropout or l2) does not make it
    vary. ``axis.<p>`` repeats ``<p>``, so it is shown once, as ``<p>``."""
    values: dict[str, set[str]] = {}
    for run in params:
        for key, value in run.items():
            values.setdefault(key.removeprefix(AXIS), set()).add(value)
    return sorted(k for k, seen in values.items()
                  if k not in NOISE_PARAMS and len(seen) > 1)


def _value(text: Any) -> Any:
    """A parameter or tag as a number when it is one (``"16"`` -> 16, ``"0.01"`` -> 0.01),
    else as it is (None stays None)."""
    if not isinstance(text, str):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def rank_figure(metrics: dict[str, float], metric: str) -> dict[str, float]:
    """``{rank_<metric>: figure}`` for one run's logged metrics: the figure ``compare``
    ranks it by (optimism-corrected, else CV mean, else validation), so the MLflow UI's
    saved view sorts by it too; empty when the run has none defined."""
    for key in (f"corrected_{metric}", f"cv_{metric}_mean", f"validation_{metric}"):
        if _defined(metrics.get(key)):
            return {N.rank_metric(metric): float(metrics[key])}
    return {}


def record_rank(run_id: str, metric: str) -> None:
    """Log the run's ranking figure as ``rank_<metric>`` (see :func:`rank_figure`)."""
    c = client()
    figure = rank_figure(retrying(c.get_run, run_id).data.metrics, metric)
    for key, value in figure.items():
        retrying(c.log_metric, run_id, key, value)
