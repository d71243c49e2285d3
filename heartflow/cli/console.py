"""Every table the `heartflow` command prints, in one place.

All numbers go through :mod:`heartflow.evaluation.tables` (``undefined`` for NaN, an
interval on the same line as its figure), the formatter the API's text tables use too.
Tables fit 100 columns where they can: long cells wrap (or fold), nothing is cut off.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from heartflow.evaluation.tables import (
    WIDTH,
    FigureTable,
    defined,
    figure,
    interval,
    number,
    outcome_rows,
    ranked_table,
)


def console() -> Console:
    """The terminal's width on a terminal, else 100 columns (pipes, files, tests). Text is
    printed as it is: never read as rich markup, never colour-highlighted."""
    options = {"markup": False, "highlight": False, "emoji": False}
    return Console(**options) if sys.stdout.isatty() else Console(width=WIDTH, **options)


def _table(title: str | None = None, **kwargs: Any) -> FigureTable:
    return FigureTable(title=title, **kwargs)


# -- heartflow run -------------------------------------------------------------------------


def print_outcome(outcome: Any, store: str, page: str, out: Console | None = None) -> None:
    """The end-of-run summary, then where to look at the run in the MLflow UI."""
    out = out or console()
    table = _table(f"heartflow run: {outcome.spec_name}", show_header=False)
    rows = outcome_rows(outcome)
    table.column("what", [w for w, _ in rows])
    table.column("value", [v for _, v in rows])
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)
    out.print(f"Open the MLflow UI:  heartflow ui  (or mlflow ui --backend-store-uri {store})",
              soft_wrap=True)  # addresses are never broken across lines
    out.print(f"then {page}", soft_wrap=True)
    out.print(f"this run: {page.split('/runs?', 1)[0]}/runs/{outcome.run_id}", soft_wrap=True)


# -- heartflow models ----------------------------------------------------------------------


SHOWN_METRICS = ("roc_auc", "accuracy", "r2", "rmse")  # the first two a version has


def _test_figures(metrics: dict[str, float]) -> str:
    shown = [m for m in SHOWN_METRICS if m in metrics][:2]
    return "\n".join(f"{m}\n" + figure(metrics[m], metrics.get(f"{m}_ci_low"),
                                       metrics.get(f"{m}_ci_high"), 3) for m in shown)


def gate_cell(gate: dict[str, str]) -> str:
    """The promotion gate's evidence: the difference (challenger minus champion, or the
    no-information model) with its 95% interval, the rule and the rows it rests on;
    ``undecided: reason`` when it refused to decide; "" when the version was never judged."""
    if not gate:
        return ""
    if gate.get("undecided") == "True":
        return f"undecided: {gate.get('reason') or 'no reason recorded'}"

    def value(key: str) -> float | None:
        try:
            return float(gate[key])
        except (KeyError, ValueError):
            return None

    shown = figure(value("difference"), value("ci_low"), value("ci_high"), 3, signed=True)
    rows = gate.get("rows", "")
    said = f"{gate.get('metric', '')}\n{shown}".strip()
    return said + (f"\n{gate.get('rule', '')}, {rows} rows" if rows else "")


def version_rows(versions: list[Any]) -> list[list[str]]:
    """One row of cells per registered version (see :func:`print_versions`)."""
    rows = []
    for v in versions:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(int(v.created) / 1000)) \
            if v.created else ""
        rows.append([f"{v.name} v{v.version}\nspec {v.spec}\nrun {(v.run_id or '')[:8]}\n"
                     f"{created}", ",".join(v.aliases), _test_figures(v.metrics),
                     gate_cell(dict(v.gate))])
    return rows


def print_versions(versions: list[Any], out: Console | None = None) -> None:
    """Registered versions (name, spec, run and when created; aliases whole; test figures
    with intervals; the promotion gate's difference with its interval, rule and rows), then
    each version's other sites and recalibration."""
    out = out or console()
    if not versions:
        out.print("no registered models")
        return
    table = _table("registered models", caption="gate: the promotion gate's difference "
                   "(challenger minus champion) [95%], its rule and the rows it rests on")
    rows = version_rows(versions)
    heads = ("version", "aliases", "test [95%]", "gate [95%]")
    for k, head in enumerate(heads):
        table.column(head, [r[k] for r in rows], figures=k > 0, fold_at=16 if k == 0 else None)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    others = [(v, line) for v in versions
              for line in [*([v.recalibration] if v.recalibration else []),
                           *(f"at {site}: {summary}" for site, summary in v.sites.items())]]
    if others:
        out.print("other sites:")
        for v, line in others:
            out.print(f"  {v.name} v{v.version} {line}")


# -- heartflow compare ---------------------------------------------------------------------


def print_ranked(comparison: Any, out: Console | None = None) -> None:
    """Ranked runs (``hf.compare`` / a sweep): the table ``.table()`` writes as text."""
    out = out or console()
    out.print(ranked_table(comparison.rows, comparison.metric, comparison.varied))


# -- heartflow evaluate --------------------------------------------------------------------


def report_rows(report: Any) -> list[list[str]]:
    """(figure, value, 95% interval) cells of a clinical report."""
    rows = []
    for name, value in report.values.items():
        low, high = report.intervals.get(name, (None, None))
        rows.append([name, number(value), interval(low, high) if defined(value) else ""])
    return rows


def print_site_evaluation(result: Any, model_uri: str, report_path: str | None,
                          out: Console | None = None) -> None:
    """A model on another site: its figures with intervals, the notes, the subgroups."""
    out = out or console()
    r = result.report
    out.print(f"{model_uri} on {result.site}: {r.rows} rows scored ({r.rows_with_missing} "
              f"with imputed values, {result.rows_without_outcome} without an outcome)")
    out.print("In short:")
    for sentence in result.reading():
        out.print(f"- {sentence}")
    table = _table()
    rows = report_rows(r)
    for k, head in enumerate(("figure", "value", "95% interval")):
        table.column(head, [row[k] for row in rows], figures=k > 0)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    for note in r.notes:
        out.print(f"note: {note}")
    if result.subgroups:
        out.print(subgroup_table(result.subgroups))
    out.print(f"MLflow run {result.run_id}" + (f"; report written to {report_path}"
                                               if report_path else ""))


def subgroup_rows(subgroups: list[Any]) -> list[list[str]]:
    """Cells of :func:`subgroup_table`."""
    rows = []
    for g in subgroups:
        r = g.report

        def shown(name: str, digits: int = 3, signed: bool = False, r: Any = r) -> str:
            low, high = r.intervals.get(name, (None, None))
            return figure(r.values.get(name), low, high, digits, signed=signed)

        if g.too_small:  # counts only: its figures would rest on a handful of patients
            rows.append([f"{g.name}\ntoo small to judge", f"{g.cases} / {g.rows}",
                         "counts only", "", ""])
            continue
        rows.append([g.name, f"{g.cases} / {g.rows}", shown("roc_auc"),
                     f"slope {shown('calibration_slope', 2)}\n"
                     f"intercept {shown('calibration_intercept', 2, True)}",
                     f"{number(r.values.get('mean_risk'), 2)} / "
                     f"{number(r.values.get('prevalence'), 2)}"])
    return rows


def subgroup_table(subgroups: list[Any]) -> Table:
    """Subgroups: cases and rows, ROC AUC and calibration (slope, intercept) with 95%
    intervals, each on its line, mean risk against prevalence; those too small to judge
    say so and show their counts only."""
    table = _table("subgroups")
    rows = subgroup_rows(subgroups)
    heads = ("subgroup", "cases /\nrows", "ROC AUC", "calibration", "mean risk /\nprevalence")
    for k, head in enumerate(heads):
        table.column(head, [r[k] for r in rows], figures=k >= 1,
                     fold_at=10 if k == 0 else None, justify="right" if k == 1 else "left")
    for row in rows:
        table.add_row(*row)
    return table


# -- heartflow recalibrate -----------------------------------------------------------------

RECALIBRATION_FIGURES = ("roc_auc", "mean_risk", "prevalence", "calibration_intercept",
                         "calibration_slope", "ece", "brier")


def print_recalibration(result: Any, model_uri: str, out: Console | None = None) -> None:
    """Before / after (fitted rows, cross-fitted) figures, the rule, the new version."""
    out = out or console()
    out.print(f"{model_uri} recalibrated ({result.method}) on {result.site}: "
              f"{result.before.rows} rows")
    reports = (result.before, result.after_fitted, result.after_cross_fitted)
    rows = []
    for name in RECALIBRATION_FIGURES:
        cells = [name]
        for report in reports:
            low, high = report.intervals.get(name, (None, None))
            cells.append(figure(report.values.get(name), low, high, 3))
        rows.append(cells)
    table = _table()
    heads = ("figure", "before", "after (fitted rows)", "after (5-fold cross-fitted)")
    for k, head in enumerate(heads):
        table.column(head, [r[k] for r in rows], figures=k > 0)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    rule = ", ".join(f"{k} {number(result.rule[k])}" for k in ("intercept", "slope")
                     if k in result.rule)
    out.print(f"rule: {result.method}{': ' + rule if rule else ''}")
    if result.new_version:
        name = result.new_model_uri.removeprefix("models:/").split("/")[0]
        out.print(f"registered {result.new_model_uri} (not promoted; to serve it: "
                  f"heartflow promote {name} {result.new_version})")
    else:
        out.print(f"logged {result.new_model_uri}")


# -- heartflow show ------------------------------------------------------------------------


def print_architecture(arch: Any, out: Console | None = None) -> None:
    """The layer table of ``hf.show``: units, activation, initializer, parameters."""
    out = out or console()
    table = _table(f"{arch.spec_name}: {arch.input_width} inputs, {arch.parameters} parameters")
    rows = [[layer.name, str(layer.units), layer.activation, layer.initializer,
             str(layer.parameters)] for layer in arch.layers]
    for k, head in enumerate(("layer", "units", "activation", "initializer", "params")):
        table.column(head, [r[k] for r in rows],
                justify="right" if head in ("units", "params") else "left")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    out.print(f"inputs: {arch.numeric} numeric + "
              + " + ".join(f"{c}({n})" for c, n in arch.categorical.items())
              + f" one-hot = {arch.input_width}")
    out.print(f"total parameters: {arch.parameters}")
    if arch.sample_size:
        out.print(arch.sample_size, soft_wrap=True)  # one line: it is read (and grepped) whole


# -- heartflow deployments -----------------------------------------------------------------


def print_deployments(rows: list[Any], out: Console | None = None) -> None:
    """Deployments: schedule, pool, the last run's state, the champion it produced."""
    out = out or console()
    if not rows:
        out.print("no heartflow deployments")
        return
    table = _table("heartflow deployments")
    cells = [[d.name, ", ".join(d.schedules), d.pool, d.last_run or "-", d.champion]
             for d in rows]
    heads = ("deployment", "schedule / trigger", "pool", "last run", "latest version")
    for k, head in enumerate(heads):
        table.column(head, [c[k] for c in cells], fold_at=12 if k == 0 else None)
    for row in cells:
        table.add_row(*row)
    out.print(table)


# -- heartflow monitor / update ------------------------------------------------------------


def print_monitoring(report: Any, out: Console | None = None) -> None:
    """Each check: effect, threshold, p-value and verdict (skipped ones say why)."""
    out = out or console()
    rows = [[c.name, c.statistic, number(c.value), number(c.threshold), p_value(c.p_value),
             "DRIFT" if c.drift else ("skipped" if c.value is None else "ok"),
             c.reason] for c in report.checks]
    table = _table(f"{report.model_uri} on {report.site}: {report.rows} rows, as of "
                   f"{report.as_of}")
    heads = ("check", "statistic", "value", "threshold", "p-value", "verdict", "why")
    for k, head in enumerate(heads):
        table.column(head, [r[k] for r in rows], figures=k in (2, 3, 4))
    for row in rows:
        table.add_row(*row)
    out.print(table)
    for note in report.notes:
        out.print(f"note: {note}")
    out.print(report.summary())
    if report.drifted_variables:
        out.print(f"variables that moved: {', '.join(report.drifted_variables)}")
    out.print(f"MLflow run {report.run_id}")


def print_update(result: Any, out: Console | None = None) -> None:
    """The likelihood-ratio tests of the closed procedure and the update chosen."""
    out = out or console()
    tests = result.evidence.tests
    table = _table(f"{result.model_uri} at {result.site}: updating by closed testing")
    rows = [[f"{t.update} vs {t.against}", number(t.statistic), str(t.df), p_value(t.p_value),
             "yes" if t.significant else "no"] for t in tests]
    for k, head in enumerate(("test", "LR statistic", "df", "p-value", "significant")):
        table.column(head, [r[k] for r in rows], figures=k in (1, 3))
    for row in rows:
        table.add_row(*row)
    out.print(table)
    out.print(f"chosen: {result.method}: {result.reason}")
    if result.new_version:
        name = result.new_model_uri.removeprefix("models:/").split("/")[0]
        out.print(f"registered {result.new_model_uri} (not promoted; to serve it: "
                  f"heartflow promote {name} {result.new_version})")


def p_value(value: float | None) -> str:
    """A p-value with two significant digits (``2e-15``, not ``0.0000``)."""
    return number(value) if value is None or value != value else f"{value:.2g}"
