"""Monitoring's MLflow side: the reference a model was trained with (an artifact of its
training run), and the monitoring runs of a model version so far (for the report's
trends)."""

from __future__ import annotations

from heartflow.errors import DataError
from heartflow.evaluation.drift import MonitorReport, Reference
from heartflow.evaluation.monitor_report import MonitoredBatch
from heartflow.tracking import names as N
from heartflow.tracking.registry import model_version, version_tags
from heartflow.tracking.store import client
from heartflow.tracking.version_record import artifact_text

MAX_HISTORY = 1000  # monitoring runs read back for the trends


def training_run(model_uri: str) -> tuple[str | None, str | None, str, str | None]:
    """(name, version, training run id, source version) of a ``models:/`` or ``runs:/``
    URI; the source version is the one a recalibrated version was made from (its network
    and training run)."""
    if model_uri.startswith("runs:/"):
        return None, None, model_uri.removeprefix("runs:/").split("/", 1)[0], None
    name, version = model_version(model_uri)
    if not name:
        raise DataError(f"{model_uri}: monitoring needs a logged model's URI "
                        "(models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/model)")
    if not version:
        raise DataError(f"{model_uri}: no such version or alias of model {name!r}")
    source = version_tags(name, version).get(N.RECALIBRATED_FROM)
    run_id = client().get_model_version(name, source or version).run_id
    return name, version, run_id, source


def reference_of(model_uri: str) -> tuple[Reference, str | None, str | None]:
    """The model's monitoring reference, name and version. A recalibrated version is judged
    on its source version's variables only: its risks are no longer the ones the reference
    describes."""
    name, version, run_id, source = training_run(model_uri)
    text = artifact_text(run_id, N.MONITORING_REFERENCE_ARTIFACT)
    if text is None:
        why = ""
        try:
            why = client().get_run(run_id).data.tags.get(N.MONITORING_REFERENCE, "")
        except Exception:  # the run itself is unreadable: say so below
            why = "its training run cannot be read"
        raise DataError(f"{model_uri}: its training run {run_id} holds no monitoring "
                        f"reference ({why or 'it was trained before heartflow kept one'}); "
                        "train it again to monitor it")
    reference = Reference.from_json(text)
    if source:
        reference = reference.without_predictions(
            f"v{version} is v{source} recalibrated: its risks are not those of the "
            "reference, so prediction and performance checks are skipped")
    return reference, name, version


def monitoring_tags(report: MonitorReport) -> dict[str, str]:
    """Tags of a monitoring run: model, version, site, batch, rows, as-of, verdict."""
    tags = {N.MONITORED_MODEL_URI: report.model_uri, N.MONITORED_SITE: report.site,
            N.DATA_SHA256: report.data_sha256, N.DATA_SOURCE: report.source,
            N.ROWS: str(report.rows), N.MONITORED_AS_OF: report.as_of,
            N.MONITORING_DRIFT: "true" if report.drift else "false",
            N.MONITORING_FAILED_CHECKS: ",".join(c.name for c in report.failed)[:5000]}
    if report.model_name:
        tags[N.MONITORED_MODEL_NAME] = report.model_name
    if report.version:
        tags[N.MONITORED_MODEL_VERSION] = report.version
    return tags


def monitoring_history(report: MonitorReport) -> list[MonitoredBatch]:
    """The finished monitoring runs of the report's model version (or model URI), oldest
    as-of first, each with the values of the report's checks."""
    c = client()
    experiment = c.get_experiment_by_name(N.monitoring_experiment(report.model_name))
    if experiment is None:
        return []
    if report.model_name and report.version:
        where = (f"tags.`{N.MONITORED_MODEL_NAME}` = '{report.model_name}' and "
                 f"tags.`{N.MONITORED_MODEL_VERSION}` = '{report.version}'")
    else:
        where = f"tags.`{N.MONITORED_MODEL_URI}` = '{report.model_uri}'"
    runs = c.search_runs([experiment.experiment_id], f"{where} and attributes.status = "
                         "'FINISHED'", max_results=MAX_HISTORY)
    runs = sorted(runs, key=lambda r: (r.data.tags.get(N.MONITORED_AS_OF, ""),
                                       r.info.start_time))
    out = []
    for run in runs:
        metrics = run.data.metrics
        values = {k.name: metrics.get(N.check_metric(k.name)) for k in report.checks}
        drift = {k.name: metrics.get(N.check_metric(k.name) + ".drift") == 1.0
                 for k in report.checks}
        label = (f"{run.data.tags.get(N.MONITORED_AS_OF, '?')} "
                 f"{run.data.tags.get(N.MONITORED_SITE, '')}")
        out.append(MonitoredBatch(label, run.info.run_id, values, drift))
    return out
