"""`heartflow evaluate`: a registered model judged on another site's rows, recorded in MLflow.

The model's own preprocessing, missing-value codes and outcome rule are applied; rows with
missing feature values are scored (imputed by the training rule) and counted; rows with a
missing outcome cannot be judged and are counted apart. The result is an MLflow run in the
model's experiment, tagged with the model version, site, data sha256 and rows, and a summary
on the model version itself, which `heartflow models` shows.
"""

from __future__ import annotations

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
from heartflow.evaluation.clinical import ClinicalReport
from heartflow.evaluation.subgroups import Subgroup, subgroup_reports, subgroup_table
from heartflow.spec.schema import SubgroupSpec, ThresholdCosts
from heartflow.tracking import registry
from heartflow.tracking import runs as tracking


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
    subgroups: list[Subgroup] = field(default_factory=list)
    card: str = ""  # the version's model card after this evaluation (markdown)

    def summary(self) -> str:
        """One line for the model version's tag and `heartflow models`."""
        v = self.report.values
        return (f"AUC {v['roc_auc']:.3f}, slope {v['calibration_slope']:.2f}, "
                f"intercept {v['calibration_intercept']:+.2f}, risk {v['mean_risk']:.2f} vs "
                f"prevalence {v['prevalence']:.2f} (n={self.report.rows})")

    def html(self, sections: list[tuple[str, str]] | None = None) -> str:
        """A self-contained HTML report: facts, figures, subgroups, plots."""
        from heartflow.evaluation.report_html import render_report

        facts = [f"data: {self.source} (sha256 {self.data_sha256[:16]}...)",
                 f"{self.report.rows} rows scored, {self.report.rows_with_missing} with missing "
                 f"values imputed by the training rule, {self.rows_without_outcome} without an "
                 f"outcome (not judged); threshold {self.report.threshold:.3g}"]
        if self.card:
            import html

            sections = [*(sections or []), ("Model card", "<pre style='white-space:pre-wrap'>"
                                            f"{html.escape(self.card)}</pre>")]
        return render_report(f"{self.model_uri} on {self.site}", facts, self.report,
                             self.plots, self.subgroups, sections)


@dataclass
class SiteRows:
    """A site's rows as the model sees them: typed features and outcomes of judged rows."""

    source: str
    sha256: str
    default_site: str
    features: Any  # pandas DataFrame: typed feature columns, rows with an outcome
    y: np.ndarray
    rows_without_outcome: int


def read_site(meta: dict[str, Any], data: str) -> SiteRows:
    """Read ``data`` (a named data set or a CSV path) with the model's own rules: missing
    codes, types, outcome rule; rows without an outcome are counted and set apart."""
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
    return SiteRows(str(resolved.path), file_sha256(resolved.path),
                    named.name if named else os.path.basename(str(resolved.path)),
                    typed.iloc[np.flatnonzero(judged)].reset_index(drop=True), y[judged],
                    int((~judged).sum()))


def binary_scorer(model_uri: str):
    """The model's Scorer; a DataError unless it is a binary risk model."""
    from heartflow.tracking.logged_model import load_scorer

    scorer = load_scorer(model_uri)
    if scorer.task != "binary":
        raise DataError(f"{model_uri} is a {scorer.task} model; clinical evaluation and "
                        "recalibration are for binary risk models")
    return scorer


def evaluate_site(model_uri: str, data: str, site: str | None = None,
                  decision_thresholds: tuple[float, ...] | None = None,
                  report_path: str | None = None) -> SiteEvaluation:
    """Score ``data`` (a named data set or a CSV path) with the model and record the result."""
    from heartflow.evaluation import plots as P
    from heartflow.evaluation.clinical import clinical_report

    scorer = binary_scorer(model_uri)
    meta = scorer.meta
    rows = read_site(meta, data)
    judged_rows, y = rows.features, rows.y
    p = scorer.output(judged_rows)
    with_missing = int(judged_rows.isna().any(axis=1).sum())
    how = meta.get("evaluate", {})
    report_at = tuple(decision_thresholds or how.get("report_at") or (0.05, 0.1, 0.2, 0.3, 0.5))
    costs = ThresholdCosts(**how["costs"]) if how.get("costs") else None
    threshold = float(meta["threshold"])
    report = clinical_report(y, p, threshold, report_at, with_missing, costs=costs)
    groups = [SubgroupSpec(**g) for g in how.get("subgroups", [])]
    name, version = registry.model_version(model_uri)
    site = site or rows.default_site
    result = SiteEvaluation(model_uri, name, version, site, rows.source, rows.sha256, report,
                            rows.rows_without_outcome)
    result.subgroups = subgroup_reports(judged_rows, y, p, groups, threshold, report_at,
                                        int(how.get("min_subgroup_rows", 30)), costs=costs)
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
        if result.subgroups:
            recorder.text(subgroup_table(result.subgroups).to_csv(index=False),
                          "evaluation/subgroups.csv")
        result.run_id = recorder.run_id
    if result.version:
        client = tracking.client()
        client.set_model_version_tag(result.model_name, result.version,
                                     f"{registry.SITE_TAG}{result.site}", result.summary())
        client.set_model_version_tag(result.model_name, result.version,
                                     f"{registry.SITE_TAG}{result.site}.run", result.run_id)
        from heartflow.tracking.model_card import write_card

        result.card = write_card(result.model_name, result.version)  # now shows this site
