"""What the registry holds about one version, read into plain facts (for its model card),
and the card logged back with the version's run."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import yaml

from heartflow.evaluation.card import CardFacts, SiteFigures
from heartflow.tracking import names as N
from heartflow.tracking.store import client


def artifact_text(run_id: str, path: str) -> str | None:
    """A text artifact of a run, or None when it is absent or unreadable."""
    import mlflow.artifacts  # lazy: MLflow costs 1.3 s to import

    with contextlib.suppress(Exception):
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    return None


def card_facts(name: str, version: str) -> CardFacts:
    """The facts of ``name`` version ``version`` as the registry stands now. A recalibrated
    version answers with its source version's training run (the same network)."""
    c = client()
    mv = c.get_model_version(name, version)
    tags = dict(mv.tags)
    source = tags.get(N.RECALIBRATED_FROM)
    training = c.get_model_version(name, source) if source else mv
    run = c.get_run(training.run_id)
    run_id, rtags = run.info.run_id, run.data.tags
    spec = yaml.safe_load(artifact_text(run_id, N.RESOLVED_SPEC_ARTIFACT) or "") or {}
    undefined = _undefined(rtags)
    own: dict[str, float] = {}
    if source:  # the version's own run is its recalibration run: its figures are its own
        recalibration_run = c.get_run(mv.run_id)
        own = dict(recalibration_run.data.metrics)
        undefined.update(_undefined(recalibration_run.data.tags))
    return CardFacts(
        name=name, version=str(version), aliases=tuple(mv.aliases or ()),
        created_ms=int(mv.creation_timestamp), run_id=run_id,
        spec_name=rtags.get(N.SPEC_NAME, ""), spec=spec, metrics=dict(run.data.metrics),
        threshold=rtags.get(N.THRESHOLD, run.data.params.get("evaluate.threshold", "")),
        threshold_rule=rtags.get(N.THRESHOLD_RULE, ""),
        data_source=rtags.get(N.DATA_SOURCE, ""), data_sha256=rtags.get(N.DATA_SHA256, ""),
        rows=rtags.get(N.ROWS, "?"),
        split={p: rtags.get(N.split_size(p), "?") for p in ("train", "validation", "test")},
        input_width=rtags.get(N.INPUT_WIDTH, "?"), parameters=rtags.get(N.PARAMETERS, "?"),
        epochs_run=rtags.get(N.EPOCHS_RUN, "?"),
        population=card_population(
            json.loads(artifact_text(run_id, N.POPULATION_ARTIFACT) or "{}")),
        subgroups_csv=artifact_text(run_id, N.SUBGROUPS_ARTIFACT),
        sites=tuple(_sites(c, tags)), recalibrated_from=source,
        recalibration=tags.get(N.RECALIBRATION, ""), undefined=undefined,
        recalibration_metrics=own)


def _undefined(tags: dict[str, str]) -> dict[str, str]:
    """metric name -> why it is undefined, from a run's ``heartflow.undefined.*`` tags."""
    prefix = N.undefined("")
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}


def card_population(population: dict[str, Any]) -> dict[str, Any]:
    """The population summary as the card renders it: a suppressed figure (``null`` in
    ``data/population.json``, see :mod:`heartflow.data.summary`) becomes NaN, never a
    number, with the column's name saying what was suppressed; the pooled small levels
    show as one ``other`` level."""
    if not population:  # not recorded (streamed data, older runs)
        return population
    nan = float("nan")
    numeric, categorical = {}, {}
    for column, s in population.get("numeric", {}).items():
        s = dict(s)
        if s.get("suppressed"):
            column = f"{column} [suppressed: {s['suppressed']}]"
            if s.get("median") is None and s.get("missing") != 1.0:
                s.update(median=nan, q1=nan, q3=nan)  # suppressed, not "all missing"
            if s.get("missing") is None:
                s["missing"] = nan
        numeric[column] = s
    for column, s in population.get("categorical", {}).items():
        s = dict(s, levels=dict(s.get("levels", {})))
        other = s.get("other")
        if other:
            label = f"other ({other['levels']} level(s)" + (
                " and missing" if other.get("with_missing") else "") + ")"
            s["levels"][label] = nan if other.get("share") is None else other["share"]
        if s.get("missing") is None:
            s["missing"] = nan
        if s.get("suppressed"):
            column = f"{column} [suppressed: {s['suppressed']}]"
        categorical[column] = s
    return {**population, "numeric": numeric, "categorical": categorical}


def _sites(c: Any, tags: dict[str, str]) -> list[SiteFigures]:
    """Each site this version was evaluated on, with its evaluation run's figures."""
    found = []
    for key, run_id in sorted(tags.items()):
        if key.startswith(N.SITE_PREFIX) and key.endswith(".run"):
            site = key.removeprefix(N.SITE_PREFIX).removesuffix(".run")
            with contextlib.suppress(Exception):
                run = c.get_run(run_id)
                found.append(SiteFigures(site, dict(run.data.metrics),
                                         run.data.tags.get(N.DATA_SHA256, ""),
                                         _undefined(run.data.tags)))
    return found


def log_card(name: str, version: str, markdown: str, page: str) -> None:
    """Log the card (markdown and HTML) with the version's own run."""
    c = client()
    run_id = c.get_model_version(name, version).run_id
    c.log_text(run_id, markdown, N.CARD_ARTIFACT)
    c.log_text(run_id, page, N.CARD_HTML_ARTIFACT)
