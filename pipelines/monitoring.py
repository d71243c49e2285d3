"""The monitoring flow: ``heartflow monitor`` / ``hf.monitor``.

the as-of date -> load the model and its reference (stored with its training run) -> read
the batch with the model's rules -> judge every check -> draw the report (each drifting
check across the version's batches so far) -> record an MLflow run in
``<model>-monitoring`` -> if a check drifted, emit the Prefect event
``heartflow.model.drift``.

The event is emitted only once the run is recorded FINISHED: a monitoring run that fails
half-way records a FAILED run (or none) and emits nothing.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from prefect import flow, task
from prefect.events import emit_event

from heartflow.evaluation.drift import MonitorReport, as_of_date, judge_batch, read_batch
from heartflow.evaluation.monitor_report import MonitoredBatch, monitor_page
from heartflow.evaluation.site import require_binary
from heartflow.pipelines.task_options import RETRYING
from heartflow.tracking import names as N
from heartflow.tracking.logged_model import load_scorer
from heartflow.tracking.monitoring import monitoring_history, monitoring_tags, reference_of
from heartflow.tracking.recorder import tracked_run
from heartflow.tracking.run_record import record_monitoring


@task(name="record-monitoring", **RETRYING)
def record_task(report: MonitorReport) -> str:
    """The monitoring run: tags, checks as metrics, the report (JSON and HTML)."""
    run_name = f"monitor {report.site} {report.as_of} {time.strftime('%Y%m%d-%H%M%S')}"
    with tracked_run(N.monitoring_experiment(report.model_name), run_name,
                     tags=monitoring_tags(report)) as recorder:
        record_monitoring(recorder, replace(report, run_id=recorder.run_id))
    return recorder.run_id


def drift_event(report: MonitorReport, spec_name: str) -> dict[str, Any]:
    """The ``heartflow.model.drift`` event's fields: the model version as its resource, the
    failed checks and the batch in its payload."""
    name = report.model_name or spec_name
    version = report.version or "unregistered"
    return {
        "event": N.DRIFT_EVENT,
        "resource": {"prefect.resource.id": N.model_resource(name, version),
                     "prefect.resource.name": f"{name} v{version}",
                     "heartflow.model.name": name, "heartflow.model.version": version,
                     "heartflow.model.uri": report.model_uri},
        "related": [{"prefect.resource.id": f"mlflow.run.{report.run_id}",
                     "prefect.resource.role": "monitoring-run"}],
        "payload": {"failed_checks": [c.as_dict() for c in report.failed],
                    "batch": {"location": report.source, "sha256": report.data_sha256,
                              "rows": report.rows, "site": report.site, "as_of": report.as_of},
                    "summary": report.summary(), "model_uri": report.model_uri,
                    "run_id": report.run_id}}


@flow(name="heartflow-monitor", persist_result=False, validate_parameters=False)
def monitoring_flow(model_uri: str, data: str, site: str | None = None,
                    as_of: str | None = None, report_path: str | None = None
                    ) -> MonitorReport:
    """Judge ``data`` (a named data set or a CSV path, with or without outcomes) against
    the model's development reference; record the run; emit the drift event when a check
    drifted. ``as_of``: the ISO date the batch stands for (default today)."""
    as_of = as_of_date(as_of)  # a DataError before anything is read or recorded
    scorer = require_binary(load_scorer(model_uri), model_uri)
    reference, name, version = reference_of(model_uri)
    batch = read_batch(scorer.meta, data)
    risks = scorer.output(batch.features)
    report = judge_batch(reference, batch, risks, scorer.meta.threshold, model_uri=model_uri,
                         model_name=name, version=version, site=site, as_of=as_of)
    history = [*monitoring_history(report), MonitoredBatch.of(report)]
    report = replace(report, page=monitor_page(report, history))
    if report_path:  # (before the run: a report that cannot be written records nothing)
        with open(report_path, "w", encoding="utf-8") as fh:
            fh.write(report.page)
    report = replace(report, run_id=record_task(report))
    if report.drift:
        event = emit_event(**drift_event(report, scorer.meta.spec_name))
        report = replace(report, event_id=str(event.id) if event is not None else None)
    return report
