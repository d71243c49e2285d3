"""`heartflow evaluate`: a registered model judged on another site's rows, recorded in MLflow.

The model's own preprocessing, missing-value codes and outcome rule are applied; rows with
missing feature values are scored (imputed by the training rule) and counted; rows with a
missing outcome cannot be judged and are counted apart. The result is an MLflow run in the
model's experiment, tagged with the model version, site, data sha256 and rows, and a summary
on the model version itself, which `heartflow models` shows.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heartflow.data.dataset import binary_outcome, prepare_features
from heartflow.data.sources import NAMED_DATASETS, file_sha256, resolve_source
from heartflow.data.table import read_csv
from heartflow.errors import DataError
from heartflow.evaluation.clinical import DEFAULT_DECISION_THRESHOLDS, ClinicalReport
from heartflow.tracking import runs as tracking

SITE_TAG = "heartflow.site."  # model-version tags: heartflow.site.<site>.<figure>


@dataclass
class SiteEvaluation:
    """One model on one site."""

    model_uri: str
    model_name: str | None
    version: str | None
    site: str
    source: str
    data_sha256: str
    report: ClinicalReport
    rows_without_outcome: int
    run_id: str = ""
    plots: dict[str, str] = field(default_factory=dict)  # name -> local PNG path

    def summary(self) -> str:
        """One line for the model version's tag and `heartflow models`."""
        v = self.report.values
        return (f"AUC {v['roc_auc']:.3f}, slope {v['calibration_slope']:.2f}, "
                f"intercept {v['calibration_intercept']:+.2f}, risk {v['mean_risk']:.2f} vs "
                f"prevalence {v['prevalence']:.2f} (n={self.report.rows})")

    def html(self) -> str:
        """A self-contained HTML report: the table and the plots."""
        rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c}</td></tr>"
                       for a, b, c in self.report.table())
        images = "".join(
            f"<figure><img src='data:image/png;base64,{_b64(path)}'/><figcaption>"
            f"{html.escape(name)}</figcaption></figure>" for name, path in self.plots.items())
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.report.notes)
        title = f"{self.model_uri} on {self.site}"
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                f"</title></head><body><h1>{html.escape(title)}</h1>"
                f"<p>data: {html.escape(self.source)} (sha256 {self.data_sha256[:16]}...), "
                f"{self.report.rows} rows scored, {self.report.rows_with_missing} with missing "
                f"values imputed, {self.rows_without_outcome} without an outcome (not "
                f"judged); threshold {self.report.threshold}</p><ul>{notes}</ul>"
                f"<table border='1' cellpadding='4'><tr><th>figure</th><th>value</th>"
                f"<th>95% interval</th></tr>{rows}</table>{images}</body></html>")


def _b64(path: str) -> str:
    with open(path, "rb") as fh:
        return base64.b64encode(fh.read()).decode()


def _model_version(uri: str) -> tuple[str | None, str | None]:
    """(name, version) of a ``models:/name/3`` or ``models:/name@alias`` URI."""
    if not uri.startswith("models:/"):
        return None, None
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        from heartflow.tracking.registry import alias_version

        return name, alias_version(name, alias)
    name, _, version = rest.partition("/")
    return name, version or None


def evaluate_site(model_uri: str, data: str, site: str | None = None,
                  decision_thresholds: tuple[float, ...] = DEFAULT_DECISION_THRESHOLDS,
                  report_path: str | None = None) -> SiteEvaluation:
    """Score ``data`` (a named data set or a CSV path) with the model and record the result."""
    from heartflow.evaluation import plots as P
    from heartflow.evaluation.clinical import clinical_report
    from heartflow.tracking.logged_model import load_scorer

    scorer = load_scorer(model_uri)
    meta = scorer.meta
    if meta["task"] != "binary":
        raise DataError(f"{model_uri} is a {meta['task']} model; clinical evaluation is for "
                        "binary risk models")
    named = NAMED_DATASETS.get(data)
    resolved = resolve_source(data, os.getcwd())
    table = read_csv(resolved.path, columns=named.columns if named else None,
                     label=str(resolved.path))
    typed = prepare_features(table.frame, meta["numeric"], meta["categorical"],
                             meta["na_values"], table.where, table.source,
                             meta.get("missing_codes"))
    y = binary_outcome(table, meta["target"], meta.get("target_positive"), meta["na_values"])
    judged = ~np.isnan(y)
    if not judged.any():
        raise DataError(f"{table.source}: no row has an outcome in column {meta['target']!r}")
    p = scorer.output(typed)[judged]
    y = y[judged]
    with_missing = int(typed.iloc[np.flatnonzero(judged)].isna().any(axis=1).sum())
    report = clinical_report(y, p, float(meta["threshold"]), tuple(decision_thresholds),
                             with_missing)
    name, version = _model_version(model_uri)
    site = site or (named.name if named else os.path.basename(str(resolved.path)))
    result = SiteEvaluation(model_uri, name, version, site, str(resolved.path),
                            file_sha256(resolved.path), report, int((~judged).sum()))
    folder = tempfile.mkdtemp(prefix="heartflow-evaluate-")
    label = f"{name or model_uri} v{version} on {site}" if version else f"{model_uri} on {site}"
    result.plots = {
        "reliability": P.reliability_diagram(y, p, f"{folder}/reliability.png",
                                             f"Reliability: {label}"),
        "decision curve": P.decision_curve(y, p, f"{folder}/decision_curve.png",
                                           f"Decision curve: {label}"),
        "ROC": P.roc_plot(y, p, f"{folder}/roc_curve.png", f"ROC: {label}")}
    _record(result, folder)
    if report_path:
        with open(report_path, "w", encoding="utf-8") as fh:
            fh.write(result.html())
    return result


def _record(result: SiteEvaluation, folder: str) -> None:
    """An MLflow evaluation run linked to the model version, and a tag on the version."""
    experiment = f"{result.model_name or 'models'}-evaluations"
    tags: dict[str, Any] = {"heartflow.evaluation.model_uri": result.model_uri,
                            "heartflow.evaluation.site": result.site,
                            "heartflow.data_sha256": result.data_sha256,
                            "heartflow.data_source": result.source,
                            "heartflow.rows": result.report.rows}
    if result.version:
        tags.update({"heartflow.evaluation.model_name": result.model_name,
                     "heartflow.evaluation.model_version": result.version})
    run_name = f"evaluate {result.site} {time.strftime('%Y%m%d-%H%M%S')}"
    with tracking.tracked_run(experiment, run_name, tags=tags) as recorder:
        recorder.metrics(result.report.as_metrics())
        recorder.directory(folder, "plots")
        recorder.text(result.html(), "report.html")
        result.run_id = recorder.run_id
    if result.version:
        client = tracking.client()
        client.set_model_version_tag(result.model_name, result.version,
                                     f"{SITE_TAG}{result.site}", result.summary())
        client.set_model_version_tag(result.model_name, result.version,
                                     f"{SITE_TAG}{result.site}.run", result.run_id)
