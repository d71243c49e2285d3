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

from heartflow.evaluation.subgroups import MIN_EACH_OUTCOME
from heartflow.spec.schema import MIN_SUBGROUP_ROWS

APPARENT = "apparent (the rows the recalibration was fitted on), not external validation"
"""How a site evaluation on the very rows a version's recalibration was fitted on is
labelled: its figures flatter the version (``SiteFigures.metrics["apparent"] == 1``)."""


@dataclass(frozen=True)
class SiteFigures:
    """A site's evaluation of the version: its figures and the data they rest on."""

    site: str
    metrics: dict[str, float]
    data_sha256: str = ""
    undefined: dict[str, str] = field(default_factory=dict)  # figure -> why it is undefined

    @property
    def apparent(self) -> bool:
        """The rows are the ones the version's recalibration was fitted on."""
        return self.metrics.get("apparent") == 1.0


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
    undefined: dict[str, str] = field(default_factory=dict)
    """Why a figure of ``metrics`` or ``recalibration_metrics`` is undefined (NaN is never
    logged) or its interval withheld: metric name -> reason."""
    recalibration_metrics: dict[str, float] = field(default_factory=dict)
    """A recalibrated version's own figures: its recalibration run's metrics (``before_*``,
    ``after_fitted_*``, ``after_cross_fitted_*``)."""


FIGURES = ("roc_auc", "brier", "calibration_intercept", "calibration_slope", "ece",
           "mean_risk", "prevalence", "sensitivity", "specificity")


def _ci(metrics: dict[str, float], key: str, undefined: dict[str, str] | None = None) -> str:
    """A figure with its 95% interval; ``undefined (why)`` when it is undefined (NaN is never
    logged, so a figure with a reason and no value is undefined), the figure and why its
    interval is withheld when it is; ``not recorded`` when the run has neither."""
    why = (undefined or {}).get(key)
    value = metrics.get(key)
    if value is None or value != value:
        if why or value is not None:
            return f"undefined ({why})" if why else "undefined"
        return "not recorded"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if _finite(low) and _finite(high):
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"
    return f"{value:.3f} ({why})" if why else f"{value:.3f}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _num(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "undefined"


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


def _subgroup_lines(text: str | None, min_rows: int = MIN_SUBGROUP_ROWS) -> list[str]:
    if not text:
        return ["- None declared (evaluate.subgroups)."]
    table = pd.read_csv(io.StringIO(text))
    out = ["Test rows by subgroup (95% intervals). A subgroup with fewer than "
           f"{min_rows} rows or {MIN_EACH_OUTCOME} of either outcome is too small to judge: "
           "it shows its counts only.", "",
           "| subgroup | rows | cases | ROC AUC | calibration slope | mean risk / prevalence |"
           " |", "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        if bool(r.too_small):
            out.append(f"| {r.subgroup} | {r.rows} | {r.cases} | | | | too small to judge: "
                       "counts only |")
            continue
        auc = _num(r.roc_auc, 3)
        if _finite(r.roc_auc) and _finite(r.roc_auc_ci_low) and _finite(r.roc_auc_ci_high):
            auc += f" [{r.roc_auc_ci_low:.3f}, {r.roc_auc_ci_high:.3f}]"
        out.append(f"| {r.subgroup} | {r.rows} | {r.cases} | {auc} | "
                   f"{_num(r.calibration_slope, 2)} | {_num(r.mean_risk, 2)} / "
                   f"{_num(r.prevalence, 2)} | |")
    return out


def _limitations(metrics: dict[str, float], test_n: str, subgroups: str | None,
                 sites: list[SiteFigures], recalibrated: bool) -> list[str]:
    out = []
    with contextlib.suppress(ValueError):
        if int(test_n) < 100:
            out.append(f"- The test figures rest on {test_n} rows: their intervals are wide.")
    if subgroups:
        small = pd.read_csv(io.StringIO(subgroups)).query("too_small")
        if len(small):
            out.append(f"- Subgroups too small to judge: {', '.join(small.subgroup)}.")
    for s in sites:
        m, site = s.metrics, s.site
        gap = m.get("mean_risk", math.nan) - m.get("prevalence", math.nan)
        low, high = m.get("calibration_slope_ci_low"), m.get("calibration_slope_ci_high")
        if abs(gap) > 0.05:
            out.append(f"- Miscalibrated at {site}: mean risk {m['mean_risk']:.2f} against a "
                       f"prevalence of {m['prevalence']:.2f}; recalibrate before use there.")
        if low is not None and high is not None and not low <= 1 <= high:
            out.append(f"- At {site} the calibration slope ({m['calibration_slope']:.2f}) "
                       "differs from 1: risks are "
                       + ("too extreme." if m["calibration_slope"] < 1 else "too modest."))
    if not [s for s in sites if not s.apparent]:
        out.append("- No external validation yet: performance elsewhere is unknown"
                   + (" (an evaluation on the rows the recalibration was fitted on is "
                      "apparent, not external)." if recalibrated else "."))
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
        *_choosing_lines(spec), *(f"- {line}" for line in rigour_lines(f.metrics, spec))])
    lines += _section("Performance", "23a, 12e", _performance_lines(f))
    lines += _section("Subgroups", "14, 23b", [
        *([f"Version {f.recalibrated_from}'s network before recalibration, on its test rows:",
           ""] if f.recalibrated_from is not None and f.subgroups_csv else []),
        *_subgroup_lines(f.subgroups_csv, int(spec.get("evaluate", {}).get(
            "min_subgroup_rows") or MIN_SUBGROUP_ROWS))])
    lines += _section("External validation (other sites)", "12d, 16, 20c, 23a",
                      _site_lines(f.sites))
    lines += _section("Model updating", "12f, 24", _updating_lines(f))
    lines += _section("Limitations", "26", _limitations(
        f.metrics, f.split.get("test", "?"), f.subgroups_csv, list(f.sites),
        f.recalibrated_from is not None))
    return "\n".join(lines)


RIGOUR_FIGURES = ("roc_auc", "calibration_slope", "calibration_intercept", "brier")


def rigour_lines(metrics: dict[str, float], spec: dict[str, Any]) -> list[str]:
    """Riley's minimum sample size against the development rows, the optimism-corrected
    figures (apparent - optimism = corrected) and the prediction instability, from a
    training run's logged metrics; each says "not computed" with its reason when the run
    did not compute it."""
    evaluate = spec.get("evaluate", {}) or {}
    output = (spec.get("model", {}) or {}).get("output", {}) or {}
    binary = output.get("activation", "sigmoid") == "sigmoid"
    streamed = bool((spec.get("data", {}) or {}).get("streaming"))
    out = []
    if _finite(metrics.get("sample_size_inputs_rows")):
        have, events = metrics.get("development_rows"), metrics.get("development_events")
        need = {v: int(metrics[f"sample_size_{v}_rows"]) for v in ("inputs", "weights")}
        counts = {v: int(metrics.get(f"sample_size_{v}_parameters", 0))
                  for v in ("inputs", "weights")}
        short = [v for v in need if _finite(have) and have < need[v]]
        wanted = evaluate.get("sample_size") or {}
        anticipated = (f"anticipated R² {wanted['anticipated_r2']}" if wanted.get("anticipated_r2")
                       else f"anticipated C {wanted.get('anticipated_c', 0.8)}")
        out.append(
            f"Riley's minimum sample size ({anticipated}): {need['inputs']} rows counting "
            f"the {counts['inputs']} inputs, {need['weights']} counting the "
            f"{counts['weights']} trainable weights; the development rows: "
            f"{int(have or 0)} ({int(events or 0)} events): "
            + (f"short of the {' and '.join(f'{v} count' for v in short)}: expect "
               "overfitting" if short else "enough by both counts"))
    else:
        why = ("Riley's criteria here are for binary outcomes" if not binary else
               "streamed data" if streamed else
               "the run did not record it (a run from before the sample-size check)")
        out.append(f"Riley's minimum sample size: not computed ({why}).")
    shown = [n for n in RIGOUR_FIGURES if _finite(metrics.get(f"corrected_{n}"))
             or f"optimism_{n}" in metrics]
    if shown:
        resamples = int(metrics.get("bootstrap_resamples", 0))
        out.append(f"Optimism-corrected on development rows ({resamples} bootstrap refits of "
                   "the whole development), apparent - optimism = corrected: " + "; ".join(
                       f"{n} {_num(metrics.get(f'apparent_{n}'), 3)} - "
                       f"{_num(metrics.get(f'optimism_{n}'), 3)} = "
                       f"{_num(metrics.get(f'corrected_{n}'), 3)}" for n in shown))
    else:
        why = ("set evaluate.validation: {method: bootstrap, resamples: 200} in the spec"
               if binary and not evaluate.get("validation") else
               "the bootstrap is for binary outcomes" if not binary else
               "the run did not record it")
        out.append(f"Optimism-corrected figures: not computed ({why}).")
    if _finite(metrics.get("instability_mean_abs_difference")):
        out.append("Prediction instability across the refits: mean |refit risk - risk| "
                   f"{metrics['instability_mean_abs_difference']:.3f} per patient; the "
                   "decision flips in more than 20% of refits for "
                   f"{100 * metrics.get('instability_flip_share', math.nan):.0f}% of patients "
                   "(plot: plots/instability.png).")
    else:
        out.append("Prediction instability: not computed (it comes from the optimism "
                   "bootstrap's refits, which this run did not make).")
    return out


RULES = {
    "superior": "it is promoted only if the lower bound of the 95% interval of the "
                "difference (challenger minus champion; a paired bootstrap on those rows) "
                "exceeds the margin",
    "non_inferior": "it is promoted only if the lower bound of the 95% interval of the "
                    "difference (challenger minus champion; a paired bootstrap on those rows) "
                    "exceeds minus the margin",
    "point": "it is promoted if the point difference exceeds the margin (the 95% interval "
             "of the difference, a paired bootstrap on those rows, is recorded, not used)"}


def _choosing_lines(spec: dict[str, Any]) -> list[str]:
    """Which rows chose what: validation rows for training and comparisons, and the test
    rows for the promotion gate, by its rule."""
    promote = spec.get("register", {}).get("promote", {}) or {}
    rule = promote.get("rule", "superior")
    metric = promote.get("metric") or "the task's default metric (roc_auc when binary)"
    margin = promote.get("margin", promote.get("min_improvement", 0.0))
    baselines = (" It must also beat each baseline on the same rows."
                 if promote.get("must_beat_baselines") else "")
    return [
        "- Early stopping, the comparison and ranking of runs, and a threshold chosen on "
        "data (`method: validation`) use validation rows (or CV on development rows), never "
        "test rows. The test rows are scored once, after the model and threshold are fixed.",
        "- Promotion uses test rows: the gate scores this version and the champion, each at "
        "its own decision threshold, on this run's test rows that neither model trained or "
        f"validated on, and compares them on {metric} by rule `{rule}` with margin {margin}: "
        f"{RULES.get(rule, rule)}. With no champion yet "
        + ("a defined figure on those test rows is enough (rule `point`)." if rule == "point"
           else "it must beat the no-information model (every row at the outcome rate) on "
                "its test rows, the whole 95% interval of the difference above 0.")
        + baselines
        + " So a promoted version's test figure has been used once, to choose it: it is not "
        "an untouched estimate of its performance."]


def _performance_lines(f: CardFacts) -> list[str]:
    lines = _recalibrated_lines(f) if f.recalibrated_from is not None else []
    metrics, why = f.metrics, f.undefined
    perf = [f"| {name} | {_ci(metrics, f'test_{name}', why)} |" for name in FIGURES
            if f"test_{name}" in metrics or f"test_{name}" in why]
    whose = (f"Version {f.recalibrated_from}'s network before recalibration, on its test rows"
             if f.recalibrated_from is not None else "Test rows")
    lines += [f"{whose} (n={f.split.get('test', '?')}), 95% intervals (bootstrap; GLM for "
              "calibration):", "", "| figure | value [95% CI] |", "|---|---|", *perf]
    if "cv_folds" in metrics:
        cv = [f"| {k.removeprefix('cv_').removesuffix('_mean')} | {metrics[k]:.3f}"
              + (f" ± {metrics[k.replace('_mean', '_ci95')]:.3f}"
                 if _finite(metrics.get(k.replace("_mean", "_ci95"))) else "") + " |"
              for k in sorted(metrics) if k.startswith("cv_") and k.endswith("_mean")
              and not k.startswith("cv_pooled_")]
        lines += ["", f"Cross-validation on development rows ({int(metrics['cv_folds'])} "
                  "folds):", "", "| metric | mean ± 95% CI |", "|---|---|", *cv]
        if "cv_pooled_rows" in metrics or "cv_pooled_roc_auc" in metrics:
            lines += ["", "Pooled out-of-fold: AUC "
                      f"{_ci(metrics, 'cv_pooled_roc_auc', why)}, calibration slope "
                      f"{_ci(metrics, 'cv_pooled_calibration_slope', why)}, intercept "
                      f"{_ci(metrics, 'cv_pooled_calibration_intercept', why)} (n="
                      f"{int(metrics.get('cv_pooled_rows', 0))})"]
    return lines


RECALIBRATED_COLUMNS = (
    ("after_cross_fitted_", "after, cross-fitted (each fifth by a rule fitted on the other "
                            "four: the estimate for new patients there)"),
    ("after_fitted_", "after, fitted rows (apparent: the rows it was fitted on)"),
    ("before_", "before (version {source}'s risks)"))


def _recalibrated_lines(f: CardFacts) -> list[str]:
    """A recalibrated version's own figures: its recalibration run's, at the site."""
    m = f.recalibration_metrics
    rows = []
    for name in FIGURES:
        cells = [_ci(m, f"{prefix}{name}", f.undefined) for prefix, _ in RECALIBRATED_COLUMNS]
        if any(c != "not recorded" for c in cells):
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if not rows:
        return [f"This version's own figures (its recalibration run's) were not available "
                f"to this card; the table below is version {f.recalibrated_from}'s, before "
                "recalibration, and does not describe this version's risks.", ""]
    what = f.recalibration or f"{int(m.get('after_fitted_rows', 0))} rows"
    heads = [head.format(source=f.recalibrated_from) for _, head in RECALIBRATED_COLUMNS]
    return [f"This version's own figures, from its recalibration ({what}), 95% intervals:",
            "",
            "| figure | " + " | ".join(heads) + " |", "|---|---|---|---|", *rows, "",
            "These rest on the recalibration site's rows only; the fitted-rows column "
            "flatters the recalibration, the cross-fitted one does not.", ""]


def _site_lines(sites: tuple[SiteFigures, ...]) -> list[str]:
    """A table row for each site this version was evaluated on; an evaluation on the rows
    its recalibration was fitted on is labelled apparent."""
    if not sites:
        return ["- Not evaluated on another site yet: run `heartflow evaluate MODEL_URI DATA "
                "--site NAME`."]
    out = ["| site | rows | ROC AUC | calibration intercept | calibration slope | mean risk / "
           "prevalence | data sha256 |", "|---|---|---|---|---|---|---|"]
    for s in sites:
        m, why = s.metrics, s.undefined
        label = f"{s.site}: {APPARENT}" if s.apparent else s.site
        out.append(f"| {label} | {int(m.get('rows', 0))} | {_ci(m, 'roc_auc', why)} | "
                   f"{_ci(m, 'calibration_intercept', why)} | "
                   f"{_ci(m, 'calibration_slope', why)} | "
                   f"{_num(m.get('mean_risk'), 3)} / {_num(m.get('prevalence'), 3)} | "
                   f"`{s.data_sha256[:16]}...` |")
    return out


def _updating_lines(f: CardFacts) -> list[str]:
    if f.recalibrated_from is None:
        return ["- None: the network's own risks."]
    return [f"- Recalibrated from version {f.recalibrated_from}: {f.recalibration}. The "
            "network and its inputs are unchanged; risks pass through the fitted "
            "recalibration."]
