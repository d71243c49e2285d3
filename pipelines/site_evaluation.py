"""The site evaluation flow: ``heartflow evaluate`` / ``hf.evaluate``.

load the model -> read the site's rows with its rules -> judge -> record (an MLflow run in
``<model>-evaluations``, tagged with the version, site, data sha256 and rows; a summary tag
on the version) -> rewrite the version's model card.
"""

from __future__ import annotations

import tempfile
import time

from prefect import flow, task

from heartflow.evaluation.site import (
    SiteEvaluation,
    apparent,
    judge_site,
    read_site,
    require_binary,
)
from heartflow.evaluation.subgroups import subgroup_table
from heartflow.pipelines.model_card import write_card
from heartflow.pipelines.task_options import RETRYING
from heartflow.tracking import names as N
from heartflow.tracking.logged_model import load_scorer
from heartflow.tracking.recorder import tracked_run
from heartflow.tracking.registry import model_version, record


@task(name="record-site-evaluation", **RETRYING)
def record_task(result: SiteEvaluation, folder: str) -> str:
    """An MLflow evaluation run linked to the model version, and a tag on the version."""
    tags: dict[str, object] = {N.EVALUATED_MODEL_URI: result.model_uri,
                               N.EVALUATED_SITE: result.site, N.DATA_SHA256: result.data_sha256,
                               N.DATA_SOURCE: result.source, N.ROWS: result.report.rows}
    if result.version:
        tags.update({N.EVALUATED_MODEL_NAME: result.model_name,
                     N.EVALUATED_MODEL_VERSION: result.version})
    run_name = f"evaluate {result.site} {time.strftime('%Y%m%d-%H%M%S')}"
    with tracked_run(N.evaluations_experiment(result.model_name), run_name,
                     tags={k: str(v) for k, v in tags.items()}) as recorder:
        # apparent: 1 when the rows are those the version's recalibration was fitted on
        # (its model card labels the site so); NaN figures are never logged: tags say why.
        recorder.metrics({**result.report.as_metrics(), "apparent": float(bool(
            result.apparent))})
        undefined = {N.undefined(name.replace("@", "_at_")): why
                     for name, why in result.report.undefined.items()}
        if undefined:
            recorder.tags(undefined)
        recorder.directory(folder, N.PLOTS_FOLDER)
        recorder.text(result.html(), N.REPORT_ARTIFACT)
        if result.subgroups:
            recorder.text(subgroup_table(result.subgroups).to_csv(index=False),
                          N.SUBGROUPS_ARTIFACT)
    if result.version and result.model_name:
        record(result.model_name, result.version, None,
               {N.site_summary(result.site): result.summary(),
                N.site_run(result.site): recorder.run_id})
    return recorder.run_id


@flow(name="heartflow-evaluate", persist_result=False, validate_parameters=False)
def site_evaluation_flow(model_uri: str, data: str, site: str | None = None,
                         decision_thresholds: tuple[float, ...] | None = None,
                         report_path: str | None = None) -> SiteEvaluation:
    """Score ``data`` (a named data set or a CSV path) with the model and record the result."""
    scorer = require_binary(load_scorer(model_uri), model_uri)
    rows = read_site(scorer.meta, data)
    name, version = model_version(model_uri)
    site = site or rows.default_site
    label = f"{name or model_uri} v{version} on {site}" if version else f"{model_uri} on {site}"
    folder = tempfile.mkdtemp(prefix="heartflow-evaluate-")
    report, subgroups, plots = judge_site(scorer, rows, folder, label, decision_thresholds)
    result = SiteEvaluation(model_uri, name, version, site, rows.source, rows.sha256, report,
                            rows.rows_without_outcome, plots=plots, subgroups=subgroups,
                            apparent=apparent(scorer.meta, rows))
    result.run_id = record_task(result, folder)
    if version and name:
        result.card = write_card(name, version)  # the card now shows this site
    if report_path:
        with open(report_path, "w", encoding="utf-8") as fh:
            fh.write(result.html())
    return result
