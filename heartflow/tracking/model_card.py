"""A model card for every registered version, built from what the registry holds: the
training run (spec, data fingerprint, population summary, test and CV figures with
intervals, subgroups), every site evaluated so far, and any recalibration. Each section
names the TRIPOD+AI items it answers (Collins et al., BMJ 2024;385:e078378).

Written with the version's run as ``model_card.md`` and ``model_card.html`` when the
version is registered, and written again after each ``heartflow evaluate`` or
``heartflow recalibrate`` of it, so the card always shows every site judged so far.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import math
from typing import Any

import pandas as pd

from heartflow.tracking import runs as tracking
from heartflow.tracking.registry import SITE_TAG
from heartflow.tracking.run_record import POPULATION_ARTIFACT

CARD_ARTIFACT = "model_card.md"
CARD_HTML_ARTIFACT = "model_card.html"
FIGURES = ("roc_auc", "brier", "calibration_intercept", "calibration_slope", "ece",
           "mean_risk", "prevalence", "sensitivity", "specificity")


def _ci(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    if value is None or value != value:
        return "not computed"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None and math.isfinite(
        low) and math.isfinite(high) else ""
    return f"{value:.3f}{ci}"


def _artifact_text(run_id: str, path: str) -> str | None:
    import mlflow.artifacts

    with contextlib.suppress(Exception):
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    return None


def _section(title: str, items: str, lines: list[str]) -> list[str]:
    return [f"## {title}", f"*TRIPOD+AI {items}*", "", *lines, ""]


def build_card(name: str, version: str) -> str:
    """The markdown card of ``name`` version ``version``, as the registry stands now."""
    client = tracking.client()
    mv = client.get_model_version(name, version)
    tags = dict(mv.tags)
    source_version = tags.get("heartflow.recalibrated_from")
    training = client.get_model_version(name, source_version) if source_version else mv
    run = client.get_run(training.run_id)
    params, rtags, metrics = run.data.params, run.data.tags, run.data.metrics
    spec_text = _artifact_text(run.info.run_id, "spec/resolved.yaml") or ""
    import yaml

    spec = yaml.safe_load(spec_text) or {}
    data = spec.get("data", {})
    target = data.get("target")
    target_rule = (f"`{target.get('column')}` {target.get('positive')}" if isinstance(target, dict)
                   and target.get("positive") is not None else f"`{target}`"
                   if not isinstance(target, dict) else f"`{target.get('column')}`")
    features = data.get("features", {})
    population = json.loads(_artifact_text(run.info.run_id, POPULATION_ARTIFACT) or "{}")
    threshold = rtags.get("heartflow.threshold", params.get("evaluate.threshold", ""))
    lines = [f"# Model card: {name} version {version}", ""]
    created = pd.Timestamp(mv.creation_timestamp, unit="ms")
    lines += [f"Spec `{rtags.get('heartflow.spec_name', '')}`; training run "
              f"`{run.info.run_id}`; registered {created:%Y-%m-%d %H:%M:%S} UTC; aliases: "
              f"{', '.join(a for a in mv.aliases) or 'none'}.", ""]
    lines += _section("Intended use", "3b, 4", [
        f"- Purpose: {spec.get('description') or 'not stated in the spec'}",
        f"- Predicts the risk of {target_rule} (a probability), and a decision at threshold "
        f"{threshold} ({rtags.get('heartflow.threshold_rule', 'given in the spec')}).",
        "- A research and teaching model: not validated for clinical decisions. Use only "
        "where the external-validation section shows it discriminates and is calibrated."])
    lines += _section("Data provenance", "5a, 6a, 7", [
        f"- Source: `{rtags.get('heartflow.data_source', '')}`",
        f"- sha256: `{rtags.get('heartflow.data_sha256', '')}`",
        f"- Rows: {rtags.get('heartflow.rows', '?')} (train "
        f"{rtags.get('heartflow.split.train', '?')}, validation "
        f"{rtags.get('heartflow.split.validation', '?')}, test "
        f"{rtags.get('heartflow.split.test', '?')}; split seed {data.get('split', {}).get('seed')}"
        f", stratified: {data.get('split', {}).get('stratify')})"])
    lines += _section("Outcome and predictors", "8a, 9a, 15", [
        f"- Outcome: {target_rule}",
        f"- Numeric predictors (standardised): {', '.join(features.get('numeric', [])) or 'none'}",
        f"- Categorical predictors (one-hot): "
        f"{', '.join(features.get('categorical', [])) or 'none'}",
        f"- Network: {rtags.get('heartflow.input_width', '?')} inputs, "
        f"{rtags.get('heartflow.parameters', '?')} parameters; hidden layers "
        f"{json.dumps(spec.get('model', {}).get('hidden', []))}; output "
        f"{json.dumps(spec.get('model', {}).get('output', {}))}"])
    lines += _section("Population", "20b", _population_lines(population))
    lines += _section("Missing data", "11, 27a", [
        f"- Missing markers: {data.get('na_values') or 'empty cells'} (an empty cell is always "
        "missing)",
        f"- Per-column missing codes: {json.dumps(data.get('missing_codes') or {})}",
        "- Imputation (fitted on training rows): numeric median, categorical mode; levels "
        "never seen in training encode as all zeros. Each scored row reports how many of its "
        "values were imputed (`imputed`)."])
    lines += _section("Development and internal validation", "12a, 12c, 12e, 13", [
        f"- Training: {json.dumps(spec.get('train', {}).get('optimizer', {}))}, batch "
        f"{spec.get('train', {}).get('batch_size')}, up to {spec.get('train', {}).get('epochs')} "
        f"epochs, early stopping {json.dumps(spec.get('train', {}).get('early_stopping'))}; "
        f"{rtags.get('heartflow.epochs_run', '?')} epochs run",
        f"- Class weights: {spec.get('train', {}).get('class_weight')}",
        "- Early stopping, comparisons and promotion use validation rows (or CV on development "
        "rows); the test rows are scored once, after the model and threshold are fixed."])
    test_n = rtags.get("heartflow.split.test", "?")
    perf = [f"| {f} | {_ci(metrics, f'test_{f}')} |" for f in FIGURES
            if f"test_{f}" in metrics]
    perf_lines = [f"Test rows (n={test_n}), 95% intervals (bootstrap; GLM for calibration):",
                  "", "| figure | value [95% CI] |", "|---|---|", *perf]
    if "cv_folds" in metrics:
        cv = [f"| {k.removeprefix('cv_').removesuffix('_mean')} | {metrics[k]:.3f} ± "
              f"{metrics.get(k.replace('_mean', '_ci95'), float('nan')):.3f} |"
              for k in sorted(metrics) if k.startswith("cv_") and k.endswith("_mean")
              and not k.startswith("cv_pooled_")]
        perf_lines += ["", f"Cross-validation on development rows ({int(metrics['cv_folds'])} "
                       "folds):", "", "| metric | mean ± 95% CI |", "|---|---|", *cv]
        if "cv_pooled_roc_auc" in metrics:
            perf_lines += ["", "Pooled out-of-fold: AUC "
                           f"{_ci(metrics, 'cv_pooled_roc_auc')}, calibration slope "
                           f"{_ci(metrics, 'cv_pooled_calibration_slope')}, intercept "
                           f"{_ci(metrics, 'cv_pooled_calibration_intercept')} (n="
                           f"{int(metrics.get('cv_pooled_rows', 0))})"]
    lines += _section("Performance", "23a, 12e", perf_lines)
    subgroups = _artifact_text(run.info.run_id, "evaluation/subgroups.csv")
    lines += _section("Subgroups", "14, 23b", _subgroup_lines(subgroups))
    sites = _site_lines(client, tags)
    lines += _section("External validation (other sites)", "12d, 16, 20c, 23a", sites[0])
    lines += _section("Model updating", "12f, 24", _updating_lines(tags))
    lines += _section("Limitations", "26", _limitations(metrics, test_n, subgroups, sites[1],
                                                        tags))
    return "\n".join(lines)


def _population_lines(population: dict[str, Any]) -> list[str]:
    if not population:
        return ["- Not recorded with this run (streamed data, or a run from before population "
                "summaries): see the data source."]
    out = [f"- Rows: {population['rows']}" + (
        f"; outcome rate {population['outcome_rate']:.3f}"
        if population.get("outcome_rate") is not None else "")]
    for part, info in population.get("parts", {}).items():
        rate = info.get("outcome_rate")
        out.append(f"- {part}: {info['rows']} rows" + (f", outcome rate {rate:.3f}"
                                                       if rate is not None else ""))
    for column, s in population.get("numeric", {}).items():
        if s["median"] is None:
            out.append(f"- {column}: all missing")
            continue
        out.append(f"- {column}: median {s['median']:.4g} (IQR {s['q1']:.4g}-{s['q3']:.4g}), "
                   f"missing {100 * s['missing']:.1f}%")
    for column, s in population.get("categorical", {}).items():
        levels = ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["levels"].items())
        out.append(f"- {column}: {levels}; missing {100 * s['missing']:.1f}%")
    return out


def _subgroup_lines(text: str | None) -> list[str]:
    if not text:
        return ["- None declared (evaluate.subgroups)."]
    table = pd.read_csv(io.StringIO(text))
    out = ["Test rows by subgroup (95% intervals):", "",
           "| subgroup | rows | cases | ROC AUC | calibration slope | mean risk / prevalence |"
           " |", "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        auc = "undefined" if r.roc_auc != r.roc_auc else (
            f"{r.roc_auc:.3f} [{r.roc_auc_ci_low:.3f}, {r.roc_auc_ci_high:.3f}]")
        out.append(f"| {r.subgroup} | {r.rows} | {r.cases} | {auc} | "
                   f"{r.calibration_slope:.2f} | {r.mean_risk:.2f} / {r.prevalence:.2f} | "
                   f"{'too small to judge' if r.too_small else ''} |")
    return out


def _site_lines(client: Any, tags: dict[str, str]
                ) -> tuple[list[str], list[tuple[str, dict[str, float]]]]:
    """Markdown lines and (site, metrics) for each site this version was evaluated on."""
    found = []
    for key, run_id in sorted(tags.items()):
        if key.startswith(SITE_TAG) and key.endswith(".run"):
            site = key.removeprefix(SITE_TAG).removesuffix(".run")
            with contextlib.suppress(Exception):
                found.append((site, client.get_run(run_id)))
    if not found:
        return ["- Not evaluated on another site yet: run `heartflow evaluate MODEL_URI DATA "
                "--site NAME`."], []
    out = ["| site | rows | ROC AUC | calibration intercept | calibration slope | mean risk / "
           "prevalence | data sha256 |", "|---|---|---|---|---|---|---|"]
    measured = []
    for site, run in found:
        m = run.data.metrics
        out.append(f"| {site} | {int(m.get('rows', 0))} | {_ci(m, 'roc_auc')} | "
                   f"{_ci(m, 'calibration_intercept')} | {_ci(m, 'calibration_slope')} | "
                   f"{m.get('mean_risk', float('nan')):.3f} / "
                   f"{m.get('prevalence', float('nan')):.3f} | "
                   f"`{run.data.tags.get('heartflow.data_sha256', '')[:16]}...` |")
        measured.append((site, m))
    return out, measured


def _updating_lines(tags: dict[str, str]) -> list[str]:
    if "heartflow.recalibrated_from" not in tags:
        return ["- None: the network's own risks."]
    return [f"- Recalibrated from version {tags['heartflow.recalibrated_from']}: "
            f"{tags.get('heartflow.recalibration', '')}. The network and its inputs are "
            "unchanged; risks pass through the fitted recalibration."]


def _limitations(metrics: dict[str, float], test_n: str, subgroups: str | None,
                 sites: list[tuple[str, dict[str, float]]], tags: dict[str, str]) -> list[str]:
    out = []
    with contextlib.suppress(ValueError):
        if int(test_n) < 100:
            out.append(f"- The test figures rest on {test_n} rows: their intervals are wide.")
    if subgroups:
        small = pd.read_csv(io.StringIO(subgroups)).query("too_small")
        if len(small):
            out.append(f"- Subgroups too small to judge: {', '.join(small.subgroup)}.")
    for site, m in sites:
        gap = m.get("mean_risk", math.nan) - m.get("prevalence", math.nan)
        low, high = m.get("calibration_slope_ci_low"), m.get("calibration_slope_ci_high")
        if abs(gap) > 0.05:
            out.append(f"- Miscalibrated at {site}: mean risk {m['mean_risk']:.2f} against a "
                       f"prevalence of {m['prevalence']:.2f}; recalibrate before use there.")
        if low is not None and high is not None and not low <= 1 <= high:
            out.append(f"- At {site} the calibration slope ({m['calibration_slope']:.2f}) "
                       "differs from 1: risks are "
                       + ("too extreme." if m["calibration_slope"] < 1 else "too modest."))
    if not sites and "heartflow.recalibrated_from" not in tags:
        out.append("- No external validation yet: performance elsewhere is unknown.")
    out.append("- Figures describe the rows they were computed on; populations, measurement "
               "and practice differ between sites and over time.")
    return out


def card_html(markdown: str) -> str:
    """The card as a plain HTML page (preformatted markdown, no renderer needed)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>model card</title></head>"
            f"<body><pre style='white-space:pre-wrap'>{html.escape(markdown)}</pre></body></html>")


def write_card(name: str, version: str) -> str:
    """Build the card and log it (markdown and HTML) with the version's run."""
    client = tracking.client()
    card = build_card(name, version)
    run_id = client.get_model_version(name, version).run_id
    client.log_text(run_id, card, CARD_ARTIFACT)
    client.log_text(run_id, card_html(card), CARD_HTML_ARTIFACT)
    return card


def card_for_uri(model_uri: str) -> str:
    """The card of ``models:/name/version`` or ``models:/name@alias``."""
    from heartflow.errors import DataError
    from heartflow.tracking.registry import model_version

    name, version = model_version(model_uri)
    if not name or not version:
        raise DataError(f"{model_uri!r} is not a registered version; use models:/NAME/VERSION "
                        "or models:/NAME@ALIAS")
    return build_card(name, version)
