"""One self-contained HTML page for a clinical evaluation: facts, the figures with their
intervals, subgroups, plots (embedded PNGs) and any further sections (a model card).
Used by every run's report and by ``heartflow evaluate``."""

from __future__ import annotations

import base64
import html
import math

import numpy as np

from heartflow.evaluation import plots as P
from heartflow.evaluation.clinical import ClinicalReport
from heartflow.evaluation.reading import read_report
from heartflow.evaluation.subgroups import SHOWN, Subgroup
from heartflow.spec.schema import DecisionCurveSpec

STYLE = ("body{font-family:sans-serif;max-width:60em;margin:auto}"
         "table{border-collapse:collapse}td,th{border:1px solid #999;padding:3px 6px}"
         ".small{color:#a00}img{max-width:45em}")


def _b64(path: str) -> str:
    with open(path, "rb") as fh:
        return base64.b64encode(fh.read()).decode()


def _cell(value: float, interval: tuple[float, float] | None, why: str | None = None) -> str:
    """A figure and its interval as HTML; ``undefined (why)``, or the figure and why its
    interval is withheld."""
    if value != value:
        return "undefined" + (f" ({html.escape(why)})" if why else "")
    shown = f"{value:.3f}"
    if interval and all(math.isfinite(b) for b in interval):
        return shown + f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return shown + (f" ({html.escape(why)})" if why else "")


def figures_table(report: ClinicalReport) -> str:
    """The figures with 95% intervals, as an HTML table; an undefined figure, or a withheld
    interval, says why."""
    rows = []
    for name, value, ci in report.table():
        why = report.undefined.get(name)
        if why and not ci:  # undefined, or its interval withheld
            value = f"{value} ({html.escape(why)})"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{value}</td><td>{ci}</td></tr>")
    return (f"<table><tr><th>figure</th><th>value</th><th>95% interval</th></tr>"
            f"{''.join(rows)}</table>")


def subgroups_table(subgroups: list[Subgroup]) -> str:
    """Subgroups with counts, the main figures and intervals; a subgroup too small to judge
    shows its counts only."""
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ("subgroup", "rows", "cases", *SHOWN))
    body = []
    for g in subgroups:
        if g.too_small:
            why = g.report.undefined.get("roc_auc", "too small to judge")
            cells = (f"<td colspan='{len(SHOWN)}'>counts only: {html.escape(why)}</td>")
            body.append(f"<tr class='small' title='too small to judge'><td>"
                        f"{html.escape(g.name)} (too small to judge)</td><td>{g.rows}</td>"
                        f"<td>{g.cases}</td>{cells}</tr>")
            continue
        r = g.report
        cells = "".join("<td>" + _cell(r.values.get(n, math.nan), r.intervals.get(n),
                                       r.undefined.get(n)) + "</td>" for n in SHOWN)
        body.append(f"<tr><td>{html.escape(g.name)}</td><td>{g.rows}</td>"
                    f"<td>{g.cases}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def in_short(sentences: list[str]) -> str:
    """The report's opening: its figures read in plain sentences (each citing its figure)."""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in sentences)
    return f"<h2>In short</h2><ul class='reading'>{items}</ul>" if items else ""


def lines_section(lines: list[str]) -> str:
    """Plain lines as an HTML list."""
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def render_report(title: str, facts: list[str], report: ClinicalReport,
                  plots: dict[str, str], subgroups: list[Subgroup] | None = None,
                  sections: list[tuple[str, str]] | None = None) -> str:
    """The whole page; ``sections`` are (heading, HTML) pairs appended at the end."""
    facts_html = "".join(f"<li>{html.escape(f)}</li>" for f in [*facts, *report.notes])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             f"{in_short(read_report(report, subgroups or []))}"
             f"<ul>{facts_html}</ul><h2>Figures</h2>{figures_table(report)}"]
    if subgroups:
        parts.append(f"<h2>Subgroups</h2>{subgroups_table(subgroups)}")
    if plots:
        parts.append("<h2>Plots</h2>" + "".join(
            f"<figure><img src='data:image/png;base64,{_b64(path)}' alt='{html.escape(name)}'/>"
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
            for name, path in plots.items()))
    for heading, body in sections or []:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>")
    return "".join(parts)


def test_report(spec_name: str, data_facts: str, report: ClinicalReport, threshold: float,
                plot_paths: list[str], subgroups: list[Subgroup],
                development: list[str] | None = None) -> str:
    """A run's report of its test rows: where the data came from, the figures, subgroups,
    the run's plots (named after their files) and, when given, the development's rigour
    (Riley's sample size, optimism-corrected figures, instability; see
    :func:`heartflow.evaluation.card.rigour_lines`)."""
    facts = [data_facts, f"test rows scored once: {report.rows}; threshold {threshold:.3g}"]
    plots = {p.rsplit("/", 1)[-1].removesuffix(".png").replace("_", " "): p
             for p in plot_paths}
    sections = ([("Development: sample size, optimism-corrected figures, instability",
                  lines_section(development))] if development else None)
    return render_report(f"{spec_name}: test rows", facts, report, plots, subgroups, sections)


def pooled_report(spec_name: str, folds: int, y: np.ndarray, p: np.ndarray,
                  report: ClinicalReport, curve: DecisionCurveSpec, folder: str) -> str:
    """The clinical report of pooled out-of-fold risks, with its plots drawn into ``folder``."""
    plots = {"reliability (pooled out-of-fold)": P.reliability_diagram(
                 y, p, f"{folder}/cv_reliability.png", "Reliability (pooled out-of-fold)"),
             "decision curve (pooled out-of-fold)": P.decision_curve(
                 y, p, f"{folder}/cv_decision_curve.png", "Decision curve (pooled out-of-fold)",
                 np.linspace(curve.low, curve.high, 80))}
    facts = [f"{report.rows} development rows, each scored by the fold model that did not "
             f"train on it (first repeat of {folds}-fold CV)",
             "development rows: these figures may inform choices; the test report does not"]
    return render_report(f"{spec_name}: pooled out-of-fold", facts, report, plots)
