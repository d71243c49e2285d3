"""The model card of a registered version, rendered from :class:`CardFacts`: the training run
(spec, data fingerprint, population summary, test and CV figures with intervals, subgroups),
every site evaluated so far, and any recalibration. Each section names the TRIPOD+AI items
it answers (Collins et al., BMJ 2024;385:e078378).

Rendering only: the registry gathers the facts (:mod:`heartflow.tracking.version_record`)
and the card flow logs the card with the version's run (:mod:`heartflow.pipelines.model_card`).
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class SiteFigures:
    """A site's evaluation of the version: its figures and the data they rest on."""

    site: str
    metrics: dict[str, float]
    data_sha256: str = ""


@dataclass(frozen=True)
class CardFacts:
    """Everything a card says, as read from the registry and the training run."""

    name: str
    version: str
    aliases: tuple[str, ...]
    created_ms: int
    run_id: str
    spec_name: str
    spec: dict[str, Any]  # the resolved spec of the training run
    metrics: dict[str, float]  # the training run's metrics
    threshold: str = ""
    threshold_rule: str = ""
    data_source: str = ""
    data_sha256: str = ""
    rows: str = "?"
    split: dict[str, str] = field(default_factory=dict)  # part -> rows
    input_width: str = "?"
    parameters: str = "?"
    epochs_run: str = "?"
    population: dict[str, Any] = field(default_factory=dict)
    subgroups_csv: str | None = None
    sites: tuple[SiteFigures, ...] = ()
    recalibrated_from: str | None = None
    recalibration: str = ""


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


def _section(title: str, items: str, lines: list[str]) -> list[str]:
    return [f"## {title}", f"*TRIPOD+AI {items}*", "", *lines, ""]


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


def _limitations(metrics: dict[str, float], test_n: str, subgroups: str | None,
                 sites: list[tuple[str, dict[str, float]]], recalibrated: bool) -> list[str]:
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
    if not sites and not recalibrated:
        out.append("- No external validation yet: performance elsewhere is unknown.")
    out.append("- Figures describe the rows they were computed on; populations, measurement "
               "and practice differ between sites and over time.")
    return out


def card_html(markdown: str) -> str:
    """The card as a plain HTML page (preformatted markdown, no renderer needed)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>model card</title></head>"
            f"<body><pre style='white-space:pre-wrap'>{html.escape(markdown)}</pre></body></html>")


def render_card(f: CardFacts) -> str:
    """The markdown card."""
    spec = f.spec
    data = spec.get("data", {})
    target = data.get("target")
    target_rule = (f"`{target.get('column')}` {target.get('positive')}" if isinstance(target, dict)
                   and target.get("positive") is not None else f"`{target}`"
                   if not isinstance(target, dict) else f"`{target.get('column')}`")
    features = data.get("features", {})
    train = spec.get("train", {})
    lines = [f"# Model card: {f.name} version {f.version}", ""]
    created = pd.Timestamp(f.created_ms, unit="ms")
    lines += [f"Spec `{f.spec_name}`; training run `{f.run_id}`; registered "
              f"{created:%Y-%m-%d %H:%M:%S} UTC; aliases: {', '.join(f.aliases) or 'none'}.", ""]
    lines += _section("Intended use", "3b, 4", [
        f"- Purpose: {spec.get('description') or 'not stated in the spec'}",
        f"- Predicts the risk of {target_rule} (a probability), and a decision at threshold "
        f"{f.threshold} ({f.threshold_rule or 'given in the spec'}).",
        "- A research and teaching model: not validated for clinical decisions. Use only "
        "where the external-validation section shows it discriminates and is calibrated."])
    split = data.get("split", {})
    lines += _section("Data provenance", "5a, 6a, 7", [
        f"- Source: `{f.data_source}`",
        f"- sha256: `{f.data_sha256}`",
        f"- Rows: {f.rows} (train {f.split.get('train', '?')}, validation "
        f"{f.split.get('validation', '?')}, test {f.split.get('test', '?')}; split seed "
        f"{split.get('seed')}, stratified: {split.get('stratify')})"])
    lines += _section("Outcome and predictors", "8a, 9a, 15", [
        f"- Outcome: {target_rule}",
        f"- Numeric predictors (standardised): {', '.join(features.get('numeric', [])) or 'none'}",
        f"- Categorical predictors (one-hot): "
        f"{', '.join(features.get('categorical', [])) or 'none'}",
        f"- Network: {f.input_width} inputs, {f.parameters} parameters; hidden layers "
        f"{json.dumps(spec.get('model', {}).get('hidden', []))}; output "
        f"{json.dumps(spec.get('model', {}).get('output', {}))}"])
    lines += _section("Population", "20b", _population_lines(f.population))
    lines += _section("Missing data", "11, 27a", [
        f"- Missing markers: {data.get('na_values') or 'empty cells'} (an empty cell is always "
        "missing)",
        f"- Per-column missing codes: {json.dumps(data.get('missing_codes') or {})}",
        "- Imputation (fitted on training rows): numeric median, categorical mode; levels "
        "never seen in training encode as all zeros. Each scored row reports how many of its "
        "values were imputed (`imputed`)."])
    lines += _section("Development and internal validation", "12a, 12c, 12e, 13", [
        f"- Training: {json.dumps(train.get('optimizer', {}))}, batch "
        f"{train.get('batch_size')}, up to {train.get('epochs')} epochs, early stopping "
        f"{json.dumps(train.get('early_stopping'))}; {f.epochs_run} epochs run",
        f"- Class weights: {train.get('class_weight')}",
        "- Early stopping and comparisons use validation rows (or CV on development rows); "
        "the test rows are scored once, after the model and threshold are fixed. The "
        "promotion gate then compares this version with the champion on the test rows "
        "neither model trained or validated on, so a promoted version's test figure has been "
        "used once to choose it."])
    lines += _section("Performance", "23a, 12e", _performance_lines(f))
    lines += _section("Subgroups", "14, 23b", _subgroup_lines(f.subgroups_csv))
    lines += _section("External validation (other sites)", "12d, 16, 20c, 23a",
                      _site_lines(f.sites))
    lines += _section("Model updating", "12f, 24", _updating_lines(f))
    lines += _section("Limitations", "26", _limitations(
        f.metrics, f.split.get("test", "?"), f.subgroups_csv,
        [(s.site, s.metrics) for s in f.sites], f.recalibrated_from is not None))
    return "\n".join(lines)


def _performance_lines(f: CardFacts) -> list[str]:
    metrics = f.metrics
    perf = [f"| {name} | {_ci(metrics, f'test_{name}')} |" for name in FIGURES
            if f"test_{name}" in metrics]
    lines = [f"Test rows (n={f.split.get('test', '?')}), 95% intervals (bootstrap; GLM for "
             "calibration):", "", "| figure | value [95% CI] |", "|---|---|", *perf]
    if "cv_folds" in metrics:
        cv = [f"| {k.removeprefix('cv_').removesuffix('_mean')} | {metrics[k]:.3f} ± "
              f"{metrics.get(k.replace('_mean', '_ci95'), float('nan')):.3f} |"
              for k in sorted(metrics) if k.startswith("cv_") and k.endswith("_mean")
              and not k.startswith("cv_pooled_")]
        lines += ["", f"Cross-validation on development rows ({int(metrics['cv_folds'])} "
                  "folds):", "", "| metric | mean ± 95% CI |", "|---|---|", *cv]
        if "cv_pooled_roc_auc" in metrics:
            lines += ["", "Pooled out-of-fold: AUC "
                      f"{_ci(metrics, 'cv_pooled_roc_auc')}, calibration slope "
                      f"{_ci(metrics, 'cv_pooled_calibration_slope')}, intercept "
                      f"{_ci(metrics, 'cv_pooled_calibration_intercept')} (n="
                      f"{int(metrics.get('cv_pooled_rows', 0))})"]
    return lines


def _site_lines(sites: tuple[SiteFigures, ...]) -> list[str]:
    """A table row for each site this version was evaluated on."""
    if not sites:
        return ["- Not evaluated on another site yet: run `heartflow evaluate MODEL_URI DATA "
                "--site NAME`."]
    out = ["| site | rows | ROC AUC | calibration intercept | calibration slope | mean risk / "
           "prevalence | data sha256 |", "|---|---|---|---|---|---|---|"]
    for s in sites:
        m = s.metrics
        out.append(f"| {s.site} | {int(m.get('rows', 0))} | {_ci(m, 'roc_auc')} | "
                   f"{_ci(m, 'calibration_intercept')} | {_ci(m, 'calibration_slope')} | "
                   f"{m.get('mean_risk', float('nan')):.3f} / "
                   f"{m.get('prevalence', float('nan')):.3f} | `{s.data_sha256[:16]}...` |")
    return out


def _updating_lines(f: CardFacts) -> list[str]:
    if f.recalibrated_from is None:
        return ["- None: the network's own risks."]
    return [f"- Recalibrated from version {f.recalibrated_from}: {f.recalibration}. The "
            "network and its inputs are unchanged; risks pass through the fitted "
            "recalibration."]
