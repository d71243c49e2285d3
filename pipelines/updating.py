"""The updating flow: updating a deployed binary model by evidence at a site.

Fits the nested updates (none, intercept, logistic recalibration, revision of the output
layer) on the site's rows and chooses one by the closed testing procedure of Vergouwe et al.
(Stat Med 2017;36:4529; :mod:`heartflow.evaluation.updating` says how), or as forced. The
evidence (every candidate, every test with its LR statistic, df and p-value, the choice and
why) is recorded as a run in ``<model>-evaluations``. A chosen update is logged as a model
whose pyfunc applies it (intercept and logistic as the meta's recalibration rule, revision
as a new network) and registered as a new version, not promoted, with the
``heartflow.update.*`` tags; the model card is rewritten. With ``none`` nothing is
registered and the result says why.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import flow, task

from heartflow.evaluation.clinical import clinical_report
from heartflow.evaluation.site import SiteRows, read_site
from heartflow.evaluation.updating import (
    CHOICES,
    UpdateEvidence,
    choose_update,
    cross_fitted,
    require_updatable,
    updated_scorer,
)
from heartflow.model.revision import output_inputs
from heartflow.model.scorer import Scorer
from heartflow.pipelines.model_card import write_card
from heartflow.pipelines.task_options import RETRYING
from heartflow.tracking import names as N
from heartflow.tracking.logged_model import load_scorer, log_scorer
from heartflow.tracking.recorder import tracked_run
from heartflow.tracking.registry import model_version, register_version, version_tags


@dataclass
class UpdateResult:
    """The evidence at a site, the update chosen and the version that applies it."""

    model_uri: str
    site: str
    source: str  # the site's data: a path
    data_sha256: str
    evidence: UpdateEvidence
    new_version: str | None = None  # None when nothing was registered
    new_model_uri: str = ""
    run_id: str = ""  # the evaluations run holding the evidence

    @property
    def method(self) -> str:
        """The update chosen: none, intercept, logistic or revision."""
        return self.evidence.method

    @property
    def reason(self) -> str:
        """Why that update (or why nothing was registered)."""
        if self.method == "none":
            return f"{self.evidence.reason}; nothing registered"
        return self.evidence.reason

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``heartflow update --json``)."""
        return {"model_uri": self.model_uri, "site": self.site, "data": self.source,
                "data_sha256": self.data_sha256, **self.evidence.as_dict(),
                "reason": self.reason, "version": self.new_version,
                "new_model_uri": self.new_model_uri or None, "run_id": self.run_id}


def _metrics(evidence: UpdateEvidence) -> dict[str, float]:
    out = {"rows": float(evidence.rows), "events": float(evidence.events)}
    for update in evidence.updates.values():
        out[f"parameters_{update.method}"] = float(update.parameters)
        if update.usable:
            out[f"log_likelihood_{update.method}"] = update.log_likelihood
    for t in evidence.tests:
        key = f"{t.update}_vs_{t.against}"
        out.update({f"lr_{key}": t.statistic, f"df_{key}": float(t.df),
                    f"p_{key}": t.p_value})
    return out


def _params(evidence: UpdateEvidence) -> dict[str, str]:
    out = {"requested": evidence.requested, "method": evidence.method,
           "alpha": str(evidence.alpha)}
    chosen = evidence.chosen
    if evidence.method in ("intercept", "logistic"):
        out.update(intercept=str(chosen.intercept), slope=str(chosen.slope))
    elif evidence.method == "revision":
        out.update(bias=str(chosen.bias), kernel=json.dumps(list(chosen.kernel))[:6000])
    for update in evidence.updates.values():
        if update.refused:
            out[f"refused_{update.method}"] = update.refused[:6000]
    return out


def judged(y: np.ndarray, p: np.ndarray, h: np.ndarray | None, evidence: UpdateEvidence,
           threshold: float) -> dict[str, float]:
    """The clinical figures (95% intervals) of a chosen update at the site, as the
    recalibration flow records them: ``before_`` (the model as it is), ``after_fitted_``
    (apparent: on the rows it was fitted on) and ``after_cross_fitted_`` (each fifth by the
    update refitted on the other four)."""
    honest = cross_fitted(y, p, h, evidence.method)
    return {**clinical_report(y, p, threshold).as_metrics("before_"),
            **clinical_report(y, evidence.chosen.fitted, threshold).as_metrics("after_fitted_"),
            **clinical_report(y, honest, threshold).as_metrics("after_cross_fitted_")}


@task(name="record-update", **RETRYING)
def record_task(result: UpdateResult, updated: Scorer | None, rows: SiteRows,
                figures: dict[str, float]) -> UpdateResult:
    """Record the evidence as a run in ``<model>-evaluations``; log and register the updated
    model as a new version when an update was chosen."""
    name, version = model_version(result.model_uri)
    evidence = result.evidence
    tests = json.dumps([t.as_dict() for t in evidence.tests])
    facts = {N.UPDATE_METHOD: evidence.method, N.UPDATE_REQUESTED: evidence.requested,
             N.UPDATE_TESTS: tests, N.UPDATE_REASON: result.reason[:5000],
             N.UPDATE_SITE: result.site, N.UPDATE_DATA_SHA256: result.data_sha256,
             N.UPDATE_FROM: str(version or "")}
    tags = {**facts, N.UPDATE_MODEL_URI: result.model_uri, N.DATA_SOURCE: rows.source,
            N.ROWS: str(len(rows.y))}
    run_name = f"update {result.site} {evidence.method} {time.strftime('%Y%m%d-%H%M%S')}"
    with tracked_run(N.evaluations_experiment(name), run_name, tags=tags) as recorder:
        recorder.params(_params(evidence))
        recorder.metrics({**_metrics(evidence), **figures})
        evidence_json = {k: v for k, v in result.as_dict().items()
                         if k not in ("version", "new_model_uri", "run_id")}  # not yet known
        recorder.text(json.dumps(evidence_json, indent=1), N.UPDATE_EVIDENCE_ARTIFACT)
        logged_uri = (log_scorer(recorder.run_id, recorder.experiment_id, updated,
                                 rows.features.head(5)) if updated is not None else "")
    result.run_id, result.new_model_uri = recorder.run_id, logged_uri
    if name and updated is not None:
        source = version_tags(name, version) if version else {}
        # The version whose run trained the network (an updated or recalibrated source
        # names it already), so the card and the gate's seen rows answer for it.
        trained = source.get(N.RECALIBRATED_FROM) or str(version)
        what = ("revision (the output layer re-estimated on the frozen hidden layers)"
                if evidence.method == "revision" else f"{evidence.method} update")
        described = (f"{what} on {result.site} ({len(rows.y)} rows; {evidence.requested}: "
                     f"{evidence.reason})")
        result.new_version = register_version(logged_uri, name, recorder.run_id, {
            **{k: v for k, v in source.items() if k in (N.SPEC_NAME, N.DATA_SHA256)},
            **facts, N.RECALIBRATED_FROM: trained, N.RECALIBRATION: described[:5000]})
        result.new_model_uri = f"models:/{name}/{result.new_version}"
    return result


@flow(name="heartflow-update", persist_result=False, validate_parameters=False)
def update_flow(model_uri: str, data: str, method: str = "auto",
                site: str | None = None) -> UpdateResult:
    """Choose an update of ``model_uri`` on ``data``'s rows (``auto``: the closed testing
    procedure; or a forced ``none``, ``intercept``, ``logistic`` or ``revision``), record
    the evidence and register the updated model (not promoted) unless ``none`` is chosen."""
    if method not in CHOICES:
        raise ValueError(f"unknown update method {method!r}; use one of {', '.join(CHOICES)}")
    scorer = load_scorer(model_uri)
    require_updatable(scorer, model_uri)
    rows = read_site(scorer.meta, data)
    site = site or rows.default_site
    p = scorer.output(rows.features)  # the model's risks as it stands (any recalibration)
    try:
        h, why = output_inputs(scorer.network, scorer.encoder.transform(rows.features)), ""
    except ValueError as error:  # not a network ending in one sigmoid unit
        h, why = None, str(error)
    evidence = choose_update(rows.y, p, h, method, revision_refused=why)
    updated = updated_scorer(scorer, evidence, {
        "site": site, "data_sha256": rows.sha256, "source_model": model_uri,
        "update": evidence.requested})
    figures = (judged(rows.y, p, h, evidence, scorer.meta.threshold) if updated is not None
               else {})
    result = UpdateResult(model_uri, site, rows.source, rows.sha256, evidence)
    result = record_task(result, updated, rows, figures)
    name = model_version(model_uri)[0]
    if name and result.new_version:
        write_card(name, result.new_version)
    return result
