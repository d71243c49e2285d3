"""The recalibration flow: ``heartflow recalibrate`` / ``hf.recalibrate``.

Refit a binary model's calibration on a site's rows and register the result as a new
version whose pyfunc applies it (scores raw rows, serves like any other version). The
network and encoder are the source version's, unchanged.

The "after" figures on the fitting rows flatter the recalibration (it was fitted there),
so they are shown next to cross-fitted ones: each fifth of the site's rows recalibrated by
a rule fitted on the other four fifths, the honest estimate of what a new patient from that
site gets. The new version is registered, not promoted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import flow, task

from heartflow.errors import DataError
from heartflow.evaluation.clinical import ClinicalReport, clinical_report
from heartflow.evaluation.site import SiteRows, read_site, require_binary
from heartflow.model.recalibration import apply_recalibration, cross_fitted, fit_recalibration
from heartflow.model.scorer import Scorer
from heartflow.pipelines.model_card import write_card
from heartflow.pipelines.task_options import RETRYING
from heartflow.tracking import names as N
from heartflow.tracking.logged_model import load_scorer, log_scorer
from heartflow.tracking.recorder import tracked_run
from heartflow.tracking.registry import model_version, register_version, version_tags

REPORTS = (("before", "before_"), ("after_fitted", "after_fitted_"),
           ("after_cross_fitted", "after_cross_fitted_"))
"""The recalibration run's reports and the prefixes of their metrics (read by the card)."""


@dataclass
class Recalibration:
    """A recalibrated version and its before/after figures on the site."""

    model_uri: str
    site: str
    method: str
    rule: dict
    before: ClinicalReport
    after_fitted: ClinicalReport  # on the rows it was fitted on (optimistic)
    after_cross_fitted: ClinicalReport  # each fold by a rule fitted without it
    new_version: str | None
    new_model_uri: str
    run_id: str


@task(name="register-recalibration", **RETRYING)
def register_task(result: Recalibration, recalibrated: Scorer, rows: SiteRows
                  ) -> Recalibration:
    """Log the recalibrated model with its figures; register it as a new version."""
    name, version = model_version(result.model_uri)
    tags = {N.RECALIBRATION_MODEL_URI: result.model_uri, N.RECALIBRATION_SITE: result.site,
            N.RECALIBRATION_METHOD: result.method, N.DATA_SHA256: rows.sha256,
            N.DATA_SOURCE: rows.source, N.ROWS: str(len(rows.y))}
    run_name = f"recalibrate {result.site} {result.method} {time.strftime('%Y%m%d-%H%M%S')}"
    with tracked_run(N.evaluations_experiment(name), run_name, tags=tags) as recorder:
        recorder.params({"method": result.method, **{
            k: str(v) for k, v in result.rule.items() if k in ("intercept", "slope", "rows")}})
        for attribute, prefix in REPORTS:
            report: ClinicalReport = getattr(result, attribute)
            recorder.metrics(report.as_metrics(prefix))
            undefined = {N.undefined(prefix + name.replace("@", "_at_")): why
                         for name, why in report.undefined.items()}
            if undefined:  # NaN is never logged as a metric: say why
                recorder.tags(undefined)
        logged_uri = log_scorer(recorder.run_id, recorder.experiment_id, recalibrated,
                                recalibrated.encoder.synthetic_record())  # no site's row
    result.run_id, result.new_model_uri = recorder.run_id, logged_uri
    if name:
        source = version_tags(name, version) if version else {}
        result.new_version = register_version(logged_uri, name, recorder.run_id, {
            **{k: v for k, v in source.items() if k in (N.SPEC_NAME, N.DATA_SHA256)},
            N.RECALIBRATED_FROM: str(version),
            N.RECALIBRATION: f"{result.method} on {result.site} ({len(rows.y)} rows)"})
        result.new_model_uri = f"models:/{name}/{result.new_version}"
    return result


@flow(name="heartflow-recalibrate", persist_result=False, validate_parameters=False)
def recalibration_flow(model_uri: str, data: str, method: str = "logistic",
                       site: str | None = None) -> Recalibration:
    """Fit ``method`` on ``data``'s rows, log and register the recalibrated model."""
    scorer = require_binary(load_scorer(model_uri), model_uri)
    rows = read_site(scorer.meta, data)
    site = site or rows.default_site
    raw_meta = scorer.meta.with_recalibration(None)
    raw = Scorer(scorer.encoder, scorer.network, raw_meta).output(rows.features)
    y = rows.y
    rule = fit_recalibration(y, raw, method)
    if method == "logistic" and rule["slope"] <= 0:
        raise DataError(f"logistic recalibration on {site} gives a slope of "
                        f"{rule['slope']:.3f}: at or below 0 it would reverse the model's "
                        "ranking of patients. The model does not discriminate at this site; "
                        "use --method intercept, or revise or retrain the model")
    threshold = scorer.meta.threshold
    before = clinical_report(y, scorer.output(rows.features), threshold)  # as it is now
    after = clinical_report(y, apply_recalibration(raw, rule), threshold)
    honest = clinical_report(y, cross_fitted(y, raw, method), threshold)
    rule = {**rule, "site": site, "data_sha256": rows.sha256, "source_model": model_uri}
    recalibrated = Scorer(scorer.encoder, scorer.network, raw_meta.with_recalibration(rule))
    result = Recalibration(model_uri, site, method, rule, before, after, honest, None, "", "")
    result = register_task(result, recalibrated, rows)
    name = model_version(model_uri)[0]
    if name and result.new_version:
        write_card(name, result.new_version)
    return result
