"""`heartflow recalibrate`: refit a binary model's calibration on a site's rows and register
the result as a new version whose pyfunc applies it (scores raw rows, serves like any
other version). The network and encoder are the source version's, unchanged.

The "after" figures on the fitting rows flatter the recalibration (it was fitted there),
so they are shown next to cross-fitted ones: each fifth of the site's rows recalibrated
by a rule fitted on the other four fifths, the honest estimate of what a new patient
from that site gets. The new version is registered, not promoted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from heartflow.evaluation.clinical import ClinicalReport, clinical_report
from heartflow.model.recalibration import apply_recalibration, fit_recalibration
from heartflow.model.scorer import Scorer
from heartflow.tracking import runs as tracking
from heartflow.tracking.registry import model_version
from heartflow.tracking.site_evaluation import binary_scorer, read_site

CROSS_FIT_FOLDS = 5


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


def cross_fitted(y: np.ndarray, p: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """Each row's risk recalibrated by a rule fitted on the other folds (stratified)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold[rows] = np.arange(len(rows)) % CROSS_FIT_FOLDS
    out = np.empty(len(y))
    for k in range(CROSS_FIT_FOLDS):
        held = fold == k
        out[held] = apply_recalibration(p[held], fit_recalibration(y[~held], p[~held], method))
    return out


def recalibrate_site(model_uri: str, data: str, method: str = "logistic",
                     site: str | None = None) -> Recalibration:
    """Fit ``method`` on ``data``'s rows, log and register the recalibrated model."""
    scorer = binary_scorer(model_uri)
    rows = read_site(scorer.meta, data)
    site = site or rows.default_site
    base_meta = {k: v for k, v in scorer.meta.items() if k != "recalibration"}
    raw = Scorer(scorer.encoder, scorer.network, base_meta).output(rows.features)
    current = scorer.output(rows.features)  # the model as it is (maybe recalibrated already)
    y = rows.y
    rule = fit_recalibration(y, raw, method)
    threshold = float(scorer.meta["threshold"])
    before = clinical_report(y, current, threshold)
    after = clinical_report(y, apply_recalibration(raw, rule), threshold)
    honest = clinical_report(y, cross_fitted(y, raw, method), threshold)
    name, version = model_version(model_uri)
    rule = {**rule, "site": site, "data_sha256": rows.sha256, "source_model": model_uri}
    meta = {**base_meta, "recalibration": rule}
    experiment = f"{name or 'models'}-evaluations"
    tags = {"heartflow.recalibration.model_uri": model_uri, "heartflow.recalibration.site": site,
            "heartflow.recalibration.method": method, "heartflow.data_sha256": rows.sha256,
            "heartflow.data_source": rows.source, "heartflow.rows": str(len(y))}
    run_name = f"recalibrate {site} {method} {time.strftime('%Y%m%d-%H%M%S')}"
    from heartflow.tracking.logged_model import log_scorer

    with tracking.tracked_run(experiment, run_name, tags=tags) as recorder:
        recorder.params({"method": method, **{k: str(v) for k, v in rule.items()
                                              if k in ("intercept", "slope", "rows")}})
        recorder.metrics(before.as_metrics("before_"))
        recorder.metrics(after.as_metrics("after_fitted_"))
        recorder.metrics(honest.as_metrics("after_cross_fitted_"))
        logged_uri = log_scorer(recorder.run_id, recorder.experiment_id,
                                Scorer(scorer.encoder, scorer.network, meta),
                                rows.features.head(5))
        run_id = recorder.run_id
    new_version, new_uri = None, logged_uri
    if name:
        from heartflow.tracking import registry

        source_tags = tracking.client().get_model_version(name, version).tags if version else {}
        new_version = registry.register_version(logged_uri, name, run_id, {
            **{k: v for k, v in source_tags.items() if k in ("heartflow.spec_name",
                                                             "heartflow.data_sha256")},
            "heartflow.recalibrated_from": str(version),
            "heartflow.recalibration": f"{method} on {site} ({len(y)} rows)"})
        new_uri = f"models:/{name}/{new_version}"
        from heartflow.tracking.model_card import write_card

        write_card(name, new_version)
    return Recalibration(model_uri, site, method, rule, before, after, honest, new_version,
                         new_uri, run_id)
