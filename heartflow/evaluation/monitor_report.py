"""One self-contained HTML page for a monitoring run: the verdict, every check with its
threshold and p-value, the batch's figures beside the development ones, and a line plot of
each drifting check (and of the prediction and performance checks) across the batches of
the model version so far (inline SVG)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from heartflow.evaluation.drift import Check, MonitorReport
from heartflow.evaluation.reading import read_figures
from heartflow.evaluation.report_html import STYLE, in_short

MAX_PLOTS = 200  # checks drawn (the table lists them all)


@dataclass(frozen=True)
class MonitoredBatch:
    """One earlier (or the current) monitoring run of a model version: what it was called
    and each check's value and verdict (None: skipped)."""

    label: str  # as-of date and site
    run_id: str
    values: dict[str, float | None] = field(default_factory=dict)
    drift: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, report: MonitorReport) -> MonitoredBatch:
        """The current batch, before it is recorded."""
        return cls(f"{report.as_of} {report.site}", report.run_id,
                   {c.name: c.value for c in report.checks},
                   {c.name: c.drift for c in report.checks})


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return ""
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.2g}"


def checks_table(checks: tuple[Check, ...] | list[Check]) -> str:
    """Every check: value, threshold, p-value, verdict and why."""
    head = "".join(f"<th>{h}</th>" for h in ("check", "kind", "statistic", "value",
                                             "threshold", "p-value", "verdict", "reason"))
    rows = []
    for c in checks:
        verdict = "DRIFT" if c.drift else ("skipped" if c.value is None else "ok")
        style = " class='small'" if c.drift else ""
        rows.append(f"<tr{style}><td>{html.escape(c.name)}</td><td>{c.kind}</td>"
                    f"<td>{html.escape(c.statistic)}</td><td>{_number(c.value)}</td>"
                    f"<td>{_number(c.threshold)}</td><td>{_p(c.p_value)}</td>"
                    f"<td>{verdict}</td><td>{html.escape(c.reason)}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def figures_table(report: MonitorReport) -> str:
    """The batch's figures beside the development ones, with 95% intervals."""
    dev = report.development
    if dev is None or not report.figures:
        return "<p>No figures: " + html.escape(
            "the batch has no outcomes" if dev is not None else
            "the reference holds no development figures") + "</p>"

    def cell(f) -> str:
        if f is None or f.value != f.value:
            return "undefined"
        ci = (f" [{f.low:.3f}, {f.high:.3f}]" if math.isfinite(f.low) and math.isfinite(f.high)
              else "")
        return f"{f.value:.3f}{ci}"

    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{cell(report.figures.get(name))}</td>"
                   f"<td>{cell(dev.figures.get(name))}</td></tr>" for name in report.figures)
    return (f"<table><tr><th>figure</th><th>batch ({report.rows_with_outcome} rows, "
            f"{report.events} with the outcome)</th><th>development ({dev.part} rows: "
            f"{dev.rows}, {dev.events} with the outcome)</th></tr>{rows}</table>")


def trend_svg(name: str, history: list[MonitoredBatch], threshold: float | None,
              width: int = 380, height: int = 170) -> str:
    """A line plot of one check's value across the batches, drifting ones in red, the
    threshold dashed: inline SVG (drawn in microseconds, no plotting library)."""
    left, right, top, bottom = 48, 12, 22, 48
    values = [b.values.get(name) for b in history]
    shown = [v for v in values if v is not None and v == v]
    span = [*shown, *([threshold] if threshold is not None else [])] or [0.0, 1.0]
    low, high = min(span), max(span)
    pad = (high - low) * 0.1 or max(abs(high) * 0.1, 0.05)
    low, high = low - pad, high + pad
    n = len(history)

    def x(i: int) -> float:
        return left + (width - left - right) * (0.5 if n == 1 else i / (n - 1))

    def y(v: float) -> float:
        return top + (height - top - bottom) * (high - v) / (high - low)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"font-family='sans-serif' font-size='10'><title>{html.escape(name)}</title>",
             f"<text x='{left}' y='13' font-size='12'>{html.escape(name)}</text>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#999'/>",
             f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' "
             f"y2='{height - bottom}' stroke='#999'/>"]
    for v in (high - pad, low + pad):
        parts.append(f"<text x='{left - 4}' y='{y(v) + 3:.1f}' text-anchor='end'>"
                     f"{_number(v)}</text>")
    if threshold is not None:
        parts.append(f"<line x1='{left}' y1='{y(threshold):.1f}' x2='{width - right}' "
                     f"y2='{y(threshold):.1f}' stroke='grey' stroke-dasharray='4 3'/>"
                     f"<text x='{width - right}' y='{y(threshold) - 3:.1f}' "
                     "text-anchor='end' fill='grey'>threshold</text>")
    run: list[str] = []
    for i, v in enumerate([*values, None]):
        if v is not None and v == v:
            run.append(f"{x(i):.1f},{y(v):.1f}")
            continue
        if len(run) > 1:
            parts.append(f"<polyline points='{' '.join(run)}' fill='none' "
                         "stroke='steelblue' stroke-width='1.5'/>")
        run = []
    for i, (v, b) in enumerate(zip(values, history, strict=True)):
        label = html.escape(b.label)
        if n <= 4 or i in (0, n - 1):  # (every label is also the point's tooltip)
            anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
            parts.append(f"<text x='{x(i):.1f}' y='{height - bottom + 14 + 11 * (i % 2)}' "
                         f"text-anchor='{anchor}' font-size='8'>{label}</text>")
        if v is not None and v == v:
            colour = "crimson" if b.drift.get(name) else "steelblue"
            parts.append(f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='3.5' fill='{colour}'>"
                         f"<title>{label}: {_number(v)}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def reading(report: MonitorReport) -> list[str]:
    """The batch's verdict and, with outcomes, its figures read in plain sentences (each
    citing its figure): discrimination, calibration, net benefit against treating everyone
    at the model's threshold."""
    said = [f"Verdict: {report.summary()}."]
    if report.figures and report.rows_with_outcome:
        values = {k: f.value for k, f in report.figures.items()}
        values["prevalence"] = report.events / report.rows_with_outcome
        intervals = {k: (f.low, f.high) for k, f in report.figures.items()}
        thresholds = (report.threshold,) if math.isfinite(report.threshold) else ()
        said += read_figures(values, intervals, report.rows_with_outcome,
                             thresholds=thresholds)
    return said


def monitor_page(report: MonitorReport, history: list[MonitoredBatch]) -> str:
    """The whole page; ``history`` holds the batches so far, the current one last."""
    who = (f"{report.model_name} v{report.version}" if report.version else report.model_uri)
    title = f"Monitoring {who} on {report.site} (as of {report.as_of})"
    facts = [f"verdict: {report.summary()}",
             f"model: {report.model_uri}" + (f" (version {report.version})"
                                             if report.version else ""),
             f"batch: {report.source} (sha256 {report.data_sha256[:16]}...), {report.rows} "
             f"rows, {report.rows_with_outcome} with an outcome",
             "a check reports drift when its effect passes the threshold and its p-value is "
             "below the model's monitor.p_value; skipped checks say why",
             *report.notes]
    plotted = [c for c in report.checks if c.drift or (  # and always the model's own
        c.kind in ("prediction", "performance") and c.value is not None)][:MAX_PLOTS]
    plots = "".join(f"<figure style='display:inline-block;margin:4px'>"
                    f"{trend_svg(c.name, history, c.threshold)}</figure>" for c in plotted)
    facts_html = "".join(f"<li>{html.escape(f)}</li>" for f in facts)
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{in_short(reading(report))}<ul>{facts_html}</ul>"
            f"<h2>Checks</h2>{checks_table(report.checks)}"
            f"<h2>Figures: batch and development</h2>{figures_table(report)}"
            f"<h2>Across batches ({len(history)} so far)</h2>{plots or '<p>nothing to draw</p>'}"
            "</body></html>")
