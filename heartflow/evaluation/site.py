"""A binary risk model judged on another site's rows: the site's rows read with the model's own
rules, then discrimination, calibration, threshold figures, net benefit and subgroups, each
with a 95% interval, and the plots.

The model's own preprocessing, missing-value codes and outcome rule are applied; rows with
missing feature values are scored (imputed by the training rule) and counted; rows with a
missing outcome cannot be judged and are counted apart. Recording the result is the site
evaluation flow's job (:mod:`heartflow.pipelines.site_evaluation`).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.dataset import binary_outcome, prepare_features
from heartflow.data.sources import NAMED_DATASETS, file_sha256, resolve_source
from heartflow.data.table import read_csv
from heartflow.errors import DataError
from heartflow.evaluation import plots as P
from heartflow.evaluation.card import APPARENT
from heartflow.evaluation.clinical import ClinicalReport, clinical_report
from heartflow.evaluation.reading import read_report
from heartflow.evaluation.report_html import render_report
from heartflow.evaluation.subgroups import Subgroup, subgroup_reports
from heartflow.model.meta import ModelMeta
from heartflow.spec.schema import SubgroupSpec, ThresholdCosts


@dataclass(frozen=True)
class SiteRows:
    """A site's rows as the model sees them: typed features and outcomes of judged rows."""

    source: str
    sha256: str
    default_site: str
    features: pd.DataFrame  # typed feature columns of the rows with an outcome
    y: np.ndarray
    rows_without_outcome: int


def read_site(meta: ModelMeta, data: str) -> SiteRows:
    """Read ``data`` (a named data set or a CSV path) with the model's own rules: missing
    codes, types, outcome rule; rows without an outcome are counted and set apart."""
    named = NAMED_DATASETS.get(data)
    resolved = resolve_source(data, os.getcwd())
    table = read_csv(resolved.path, columns=named.columns if named else None,
                     label=str(resolved.path))
    typed = prepare_features(table.frame, list(meta.numeric), list(meta.categorical),
                             list(meta.na_values), table.where, table.source,
                             meta.missing_codes)
    y = binary_outcome(table, meta.target, meta.target_positive, list(meta.na_values))
    judged = ~np.isnan(y)
    if not judged.any():
        raise DataError(f"{table.source}: no row has an outcome in column {meta.target!r}")
    return SiteRows(str(resolved.path), file_sha256(resolved.path),
                    named.name if named else os.path.basename(str(resolved.path)),
                    typed.iloc[np.flatnonzero(judged)].reset_index(drop=True), y[judged],
                    int((~judged).sum()))


def require_binary(scorer: Any, model_uri: str) -> Any:
    """``scorer`` itself; a DataError unless it is a binary risk model."""
    if scorer.task != "binary":
        raise DataError(f"{model_uri} is a {scorer.task} model; clinical evaluation and "
                        "recalibration are for binary risk models")
    return scorer


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
    apparent: str = ""  # why the figures are apparent, not external ("" when external)

    def summary(self) -> str:
        """One line for the model version's tag and `heartflow models`."""
        v = self.report.values
        return (f"AUC {_shown(v['roc_auc'], '.3f')}, slope "
                f"{_shown(v['calibration_slope'], '.2f')}, intercept "
                f"{_shown(v['calibration_intercept'], '+.2f')}, risk "
                f"{_shown(v['mean_risk'], '.2f')} vs prevalence "
                f"{_shown(v['prevalence'], '.2f')} (n={self.report.rows})"
                + (f"; {APPARENT}" if self.apparent else ""))

    def __repr__(self) -> str:
        """A few lines at a prompt: the model, the site, its figures, how to see more."""
        return (f"heartflow evaluation of {self.model_uri} at {self.site}\n  {self.summary()}\n"
                "  more: .reading() in words, .report.values, .html(), hf.figures(...)")

    def reading(self) -> list[str]:
        """The figures read in plain sentences, each citing its figure (the report's
        opening and ``heartflow evaluate``'s): discrimination, calibration, net benefit
        against treating everyone, subgroups too small to judge."""
        return read_report(self.report, self.subgroups)

    def html(self, sections: list[tuple[str, str]] | None = None) -> str:
        """A self-contained HTML report: facts, figures, subgroups, plots."""
        facts = [*([self.apparent] if self.apparent and self.apparent not in self.report.notes
                   else []),
                 f"data: {self.source} (sha256 {self.data_sha256[:16]}...)",
                 f"{self.report.rows} rows scored, {self.report.rows_with_missing} with missing "
                 f"values imputed by the training rule, {self.rows_without_outcome} without an "
                 f"outcome (not judged); threshold {self.report.threshold:.3g}"]
        if self.card:
            sections = [*(sections or []), ("Model card", "<pre style='white-space:pre-wrap'>"
                                            f"{html.escape(self.card)}</pre>")]
        title = f"{self.model_uri} on {self.site}" + (" (apparent, not external validation)"
                                                      if self.apparent else "")
        return render_report(title, facts, self.report,
                             self.plots, self.subgroups, sections)


def _shown(value: float, spec: str) -> str:
    return "undefined" if value != value else format(value, spec)


def apparent(meta: ModelMeta, rows: SiteRows) -> str:
    """Why figures of the model on ``rows`` are apparent rather than external: the rows are
    those its recalibration was fitted on (the same data sha256); "" otherwise."""
    rule = meta.recalibration or {}
    if rule.get("data_sha256") and rule["data_sha256"] == rows.sha256:
        return (f"{APPARENT}: this data (sha256 {rows.sha256[:16]}...) is the data the "
                f"version's {rule.get('method', '')} recalibration was fitted on at "
                f"{rule.get('site', 'its site')}, so its figures flatter it")
    return ""


def judge_site(scorer: Any, rows: SiteRows, folder: str, label: str,
               decision_thresholds: tuple[float, ...] | None = None
               ) -> tuple[ClinicalReport, list[Subgroup], dict[str, str]]:
    """The clinical report, subgroups and plots (PNG files in ``folder``) of a binary model
    on a site's rows, at the model's own threshold and by its evaluation plan. When the
    rows are those the model's recalibration was fitted on, the report's first note says
    its figures are apparent, not external validation (:func:`apparent`)."""
    meta: ModelMeta = scorer.meta
    features, y = rows.features, rows.y
    p = scorer.output(features)
    with_missing = int(features.isna().any(axis=1).sum())
    plan = meta.evaluate
    report_at = tuple(decision_thresholds or plan.report_at)
    costs = ThresholdCosts(**plan.costs) if plan.costs else None
    report = clinical_report(y, p, meta.threshold, report_at, with_missing, costs=costs)
    if apparent(meta, rows):
        report.notes.insert(0, apparent(meta, rows))
    groups = [SubgroupSpec(**g) for g in plan.subgroups]
    subgroups = subgroup_reports(features, y, p, groups, meta.threshold, report_at,
                                 plan.min_subgroup_rows, costs=costs)
    plots = {
        "reliability": P.reliability_diagram(y, p, f"{folder}/reliability.png",
                                             f"Reliability: {label}"),
        "decision curve": P.decision_curve(y, p, f"{folder}/decision_curve.png",
                                           f"Decision curve: {label}"),
        "ROC": P.roc_plot(y, p, f"{folder}/roc_curve.png", f"ROC: {label}")}
    return report, subgroups, plots
