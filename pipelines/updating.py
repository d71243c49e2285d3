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
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.runtime import deployment, flow_run

from heartflow.data.dataset import binary_outcome
from heartflow.data.sources import NAMED_DATASETS, file_sha256, resolve_source
from heartflow.data.split import RowKeyer, row_keys
from heartflow.data.table import read_csv
from heartflow.errors import DataError, HeartflowError, TrackingError
from heartflow.evaluation.clinical import clinical_report
from heartflow.evaluation.gate import Decision, GateRows
from heartflow.evaluation.site import SiteRows, read_site
from heartflow.evaluation.updating import (
    CHOICES,
    UpdateEvidence,
    choose_update,
    cross_fitted,
    require_updatable,
    updated_scorer,
)
from heartflow.model.meta import ModelMeta
from heartflow.model.plugins import load_plugins
from heartflow.model.revision import output_inputs
from heartflow.model.scorer import Scorer
from heartflow.pipelines.model_card import write_card
from heartflow.pipelines.promotion import gate_task
from heartflow.pipelines.task_options import RETRYING
from heartflow.spec.loading import load_spec_text
from heartflow.spec.schema import Spec
from heartflow.tracking import names as N
from heartflow.tracking.logged_model import load_scorer, log_scorer
from heartflow.tracking.recorder import tracked_run
from heartflow.tracking.registry import model_version, record, register_version, version_tags
from heartflow.tracking.row_secret import row_key_secret


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

    def __repr__(self) -> str:
        """A few lines at a prompt: the update chosen, why, and the version registered."""
        made = (f"registered {self.new_model_uri}" if self.new_version
                else "nothing registered")
        return (f"heartflow update of {self.model_uri} at {self.site}: {self.method} ({made})\n"
                f"  {self.reason}\n  more: .evidence, .as_dict()")

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


ROW = "__heartflow_row"  # the gate rows' position in the batch (no model reads it)
GATE_SCORING = ("cross-fitted on the batch: each fifth of its rows scored by the update "
                "refitted on the other four (the update itself was fitted on all of them)")


@dataclass(frozen=True)
class CrossFitted:
    """An update as the promotion gate judges it on the rows it was fitted on: each row's
    risk from the update refitted without the row's fold (:func:`cross_fitted`), looked up
    by the row's position in the batch, so the gate's own row selection keeps each row's
    honest risk."""

    scorer: Scorer  # the registered update (its meta: inputs, threshold)
    risks: np.ndarray  # the cross-fitted risk of each batch row, in the batch's order

    @property
    def meta(self) -> ModelMeta:
        """The update's meta (inputs, task, decision threshold)."""
        return self.scorer.meta

    @property
    def task(self) -> str:
        """binary."""
        return self.scorer.task

    def output(self, typed: pd.DataFrame) -> np.ndarray:
        """The cross-fitted risk of each row (by its position column)."""
        return self.risks[typed[ROW].to_numpy(dtype=np.int64)]


def batch_keys(meta: ModelMeta, spec: Spec, data: str) -> list[str]:
    """The keyed row keys of the batch's rows with an outcome (the rows :func:`read_site`
    keeps, in its order), made as the training run made its split manifest's keys, so the
    gate can leave out rows the champion trained or validated on."""
    named = NAMED_DATASETS.get(data)
    resolved = resolve_source(data, os.getcwd())
    table = read_csv(resolved.path, columns=named.columns if named else None,
                     label=str(resolved.path))
    y = binary_outcome(table, meta.target, meta.target_positive, list(meta.na_values))
    keys = row_keys(table.frame, spec.data.id, spec.data.na_values)[~np.isnan(y)]
    try:
        keyer = RowKeyer(row_key_secret())
    except TrackingError:  # no secret here: the champion's keys cannot be matched, and the
        keyer = RowKeyer.ephemeral()  # gate says so (undecided) rather than guess
    return keyer.hex(keys)


def gate_update(result: UpdateResult, spec: Spec, data: str) -> Decision:
    """The promotion gate on an update's new version: against the champion, on the batch's
    rows the champion never trained or validated on, the update scored by cross-fitted
    risks; the spec's ``register.promote`` rule (``require_approval`` included) applies."""
    name, version = model_version(result.new_model_uri)
    source = load_scorer(result.model_uri)
    rows = read_site(source.meta, data)
    p = source.output(rows.features)
    try:
        h = output_inputs(source.network, source.encoder.transform(rows.features))
    except ValueError:  # revision was refused for this network; no other update needs h
        h = None
    honest = cross_fitted(rows.y, p, h, result.method)
    keys = batch_keys(source.meta, spec, data)
    if len(keys) != len(rows.y):
        raise DataError(f"{rows.source}: {len(keys)} row keys for {len(rows.y)} rows with "
                        "an outcome; the batch changed while it was read, run it again")
    challenger = CrossFitted(load_scorer(result.new_model_uri), np.asarray(honest, np.float64))
    gate = GateRows(rows.features.assign(**{ROW: np.arange(len(rows.y))}), rows.y, keys,
                    kind="rows of the drifted batch", scoring=GATE_SCORING)
    return gate_task(str(name), str(version), result.run_id, challenger, gate,
                     spec.register.promote, spec.promotion_metric)


def check_batch(batch: str, sha256: str) -> str:
    """The batch to read, once its bytes are the ones the drift event was about: its path,
    or the named data set whose pinned bytes it holds (a header-less UCI file is read with
    its named columns, as ``heartflow monitor uci-va`` read it)."""
    try:
        path = resolve_source(batch, os.getcwd()).path
    except HeartflowError as exc:
        raise DataError(f"the drifted batch {batch} cannot be read here ({exc}); the update "
                        "needs the batch the drift event was about, at the same path") from None
    found = file_sha256(path)
    if found != sha256:
        raise DataError(f"the batch {path} changed since the drift event: its sha256 is "
                        f"{found[:16]}..., the event's is {sha256[:16]}...; nothing was "
                        f"updated. Monitor the batch again (heartflow monitor MODEL {path}) "
                        "to judge the rows it now holds")
    named = [d.name for d in NAMED_DATASETS.values() if found in (d.sha256, *d.also_accepted)]
    return named[0] if named else str(path)


@flow(name="heartflow-update-on-drift", persist_result=False, validate_parameters=False)
def drift_update_flow(model_uri: str, batch: str, batch_sha256: str, version: str = "",
                      site: str | None = None, spec_text: str = "",
                      spec_path: str = "deployed-spec.yaml", plugins: list[str] | None = None,
                      event_id: str = "") -> dict[str, Any]:
    """``heartflow update MODEL BATCH --method auto`` started by a drift event, then the
    promotion gate on the new version: it stays challenger unless the gate passes it (and,
    under ``require_approval``, until ``heartflow approve``).

    ``model_uri`` is the URI the drift was found on and ``version`` the version it resolved
    to then (the event's resource), which is the one updated; ``batch`` and
    ``batch_sha256`` come from the event's payload; ``spec_text`` is the deployed spec (the
    promotion rule and the row-key rules)."""
    load_plugins(plugins)
    loaded = load_spec_text(spec_text, spec_path)
    name = model_version(model_uri)[0] if model_uri.startswith("models:/") else None
    if name != loaded.spec.model_name:
        raise HeartflowError(f"the drift event is about {model_uri}, but this deployment "
                             f"updates {loaded.spec.model_name}; deploy the spec of "
                             f"{name or model_uri} with heartflow deploy SPEC --on-drift")
    target = f"models:/{name}/{version}" if version else model_uri
    data = check_batch(batch, batch_sha256)
    result = update_flow(target, data, "auto", site or None)
    out: dict[str, Any] = {"event_id": event_id, "flow_run": str(flow_run.id or ""),
                           "monitored": model_uri, **result.as_dict(), "promoted": False,
                           "awaiting_approval": False, "gate": "nothing registered"}
    if result.new_version:
        record(str(name), result.new_version, result.run_id, {
            N.UPDATE_DRIFT_EVENT: event_id, N.DEPLOYMENT: str(deployment.name or ""),
            N.PREFECT_FLOW_RUN: str(flow_run.id or ""), N.REGISTERED_MODEL: str(name),
            N.REGISTERED_VERSION: result.new_version,
            N.UPDATE_GATE_SCORING: GATE_SCORING})
        decision = gate_update(result, loaded.spec, data)
        write_card(str(name), result.new_version)  # the card with the gate's decision
        out.update(promoted=decision.promoted, awaiting_approval=decision.awaiting_approval,
                   gate=decision.reason)
    return out
