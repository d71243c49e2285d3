"""Numbers and tables as text: one formatter for every figure heartflow prints.

A figure is written with a fixed number of decimals and, when it has one, its 95% interval
on the same line (``0.8957 [0.7960, 0.9611]``); a figure that is undefined (NaN: a ROC AUC
on rows of one class, a calibration slope without a finite fit) is written ``undefined``,
never ``nan``, and an undefined interval is left out. The CLI's tables
(:mod:`heartflow.cli.console`) and the API's text tables (``hf.compare(...).table()``) use
these functions, so the two never disagree.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

UNDEFINED = "undefined"
WIDTH = 100  # text tables fit this many columns where they can (cells wrap, never cut)


def defined(value: Any) -> bool:
    """A real number that is not NaN (``None`` and text are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not math.isnan(value)


def number(value: Any, digits: int = 4, *, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (``+`` before positive ones when ``signed``);
    ``undefined`` for NaN and ``None``; text as it is."""
    if isinstance(value, str):
        return value
    if not defined(value):
        return UNDEFINED
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def interval(low: Any, high: Any, digits: int = 4, *, signed: bool = False) -> str:
    """``[low, high]``, or ``""`` when either bound is undefined."""
    if not (defined(low) and defined(high)):
        return ""
    return f"[{number(low, digits, signed=signed)}, {number(high, digits, signed=signed)}]"


def figure(value: Any, low: Any = None, high: Any = None, digits: int = 4, *,
           signed: bool = False) -> str:
    """A figure and its interval on one line: ``0.8957 [0.7960, 0.9611]``; ``undefined``
    (without an interval) when the figure is undefined."""
    if not defined(value):
        return UNDEFINED
    bounds = interval(low, high, digits, signed=signed)
    shown = number(value, digits, signed=signed)
    return f"{shown} {bounds}" if bounds else shown


def reasoned(value: Any, why: str | None, digits: int = 4, low: Any = None, high: Any = None,
             *, signed: bool = False) -> str:
    """:func:`figure`, saying why: ``undefined (why)`` for an undefined figure, and the
    figure followed by ``(why)`` when its interval is withheld."""
    if not defined(value):
        return f"{UNDEFINED} ({why})" if why else UNDEFINED
    shown = figure(value, low, high, digits, signed=signed)
    return f"{shown} ({why})" if why and not interval(low, high) else shown


def mean_spread(mean: Any, spread: Any, digits: int = 4) -> str:
    """``mean ± spread`` (e.g. a CV mean and its 95% half-width); ``undefined`` when the
    mean is; the spread is left out when it is undefined."""
    if not defined(mean):
        return UNDEFINED
    if not defined(spread):
        return number(mean, digits)
    return f"{number(mean, digits)} ± {number(spread, digits)}"


class FigureTable(Table):
    """A rich table that fits the console without cutting anything.

    Its widths are chosen in steps, each only when the one before cannot fit: text columns
    wrap, widest first, down to their longest word (a name column may fold its words at
    ``fold_at``), while each figure keeps its interval on its line; then the figure
    columns wrap too, down to their longest word; then rich's own layout, folding words.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("title_justify", "left")
        for key in ("title", "caption"):  # heartflow's text is never rich markup
            if isinstance(kwargs.get(key), str):
                kwargs[key] = Text(kwargs[key])
        super().__init__(*args, **kwargs)
        self._figures: list[bool] = []
        self._natural: list[int] = []  # widest line (a figure column: of its cells)
        self._narrowest: list[int] = []  # its longest word (a header may fold past 6)
        self._folded: list[int] = []  # the same, with a whole header folded too

    def column(self, header: str, cells: list[str], *, figures: bool = False,
               fold_at: int | None = None, whole_header: bool = False,
               **kwargs: Any) -> None:
        """Add a column for ``cells`` (the rows are added with ``add_row``): ``figures``
        keep their interval on their line while the table can; words longer than
        ``fold_at`` (names, run ids) may fold before anything else has to; a
        ``whole_header`` (a short parameter name) is never broken."""
        lines = [line for cell in cells for line in str(cell).splitlines()]
        longest_word = max((len(w) for line in lines for w in line.split()), default=1)
        head_word = max((len(w) for w in header.split()), default=1)
        if fold_at:
            longest_word = min(longest_word, fold_at)
        # a header may fold its long words; a figure column keeps its header's first line
        # (what the figure is: "CV roc_auc") whole
        head = (min(len(header.splitlines()[0]), 12) if figures
                else min(head_word, 14) if whole_header else min(head_word, 6))
        self._figures.append(figures)
        self._natural.append(max(max(map(len, lines), default=1), head) if figures
                             else max(len(line) for line in [*header.splitlines(), *lines]))
        self._narrowest.append(max(longest_word, head))
        self._folded.append(max(longest_word, head if figures else min(head_word, 6)))
        self.add_column(header, overflow="fold", **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        """A row of cells; text is shown as it is (never read as rich markup)."""
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)

    def _widths(self, width: int) -> list[int] | None:
        """Column widths within ``width`` (see the class), or None for rich's layout."""
        padding = sum(self._get_padding_width(i) for i in range(len(self.columns)))
        budget = width - padding - (len(self.columns) + 1)  # the vertical lines
        widths = list(self._natural)
        whole = [n if figure else low for n, low, figure
                 in zip(self._natural, self._narrowest, self._figures, strict=True)]
        folded = [n if figure else low for n, low, figure
                  in zip(self._natural, self._folded, self._figures, strict=True)]
        for floors in (whole, folded, self._folded):
            while sum(widths) > budget:
                shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
                if not shrinkable:
                    break
                widths[max(shrinkable, key=lambda i: widths[i])] -= 1
            if sum(widths) <= budget:
                return widths
        return None

    def __rich_console__(self, console: Any, options: Any) -> Any:
        if len(self._figures) == len(self.columns):  # (every column added by column())
            widths = self._widths(options.max_width)
            for k, column in enumerate(self.columns):
                column.width = widths[k] if widths else None
        yield from super().__rich_console__(console, options)


def text_of(table: Table, width: int = WIDTH) -> str:
    """A rich table rendered as plain text ``width`` columns wide."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()


# -- the ranked runs of `heartflow compare`, `hf.compare`, `hf.sweep` ---------------------


RANK = "rank_{}"  # the ranking figure's name, as heartflow.tracking.names.rank_metric logs it


def _ranked_columns(rows: list[dict[str, Any]], metric: str, varied: list[str]
                    ) -> tuple[list[str], str]:
    """Every column of the ranked runs, metrics first; and what they are ranked by
    (``corrected``, ``cv`` or ``validation``)."""
    corrected = any(f"corrected_{metric}" in r for r in rows)
    cv = any(f"cv_{metric}" in r for r in rows)
    source = "corrected" if corrected else "cv" if cv else "validation"
    columns = ["rank", "run", "kind", "status", RANK.format(metric)]
    if source == "cv":
        columns.append(f"cv_{metric}_ci95")
    columns += [f"test_{metric}", f"test_{metric}_ci_low", f"test_{metric}_ci_high", *varied,
                "test_rows", "parameters", "epochs_run", "train_seconds", "run_id"]
    return columns, source


def short_names(keys: list[str]) -> dict[str, str]:
    """Short, distinct headers for dotted parameter names: the last part
    (``model.hidden.0.units`` -> ``units``), with as many parts before it as it takes to
    tell two apart (``hidden.0.units``, ``hidden.1.units``)."""
    parts = {k: k.split(".") for k in keys}
    depth = dict.fromkeys(keys, 1)
    while True:
        names = {k: ".".join(parts[k][-depth[k]:]) for k in keys}
        clash = [k for k in keys if list(names.values()).count(names[k]) > 1
                 and depth[k] < len(parts[k])]
        if not clash:
            return names
        for k in clash:
            depth[k] += 1


SOURCES = {"corrected": "the optimism-corrected figure (development rows)",
           "cv": "CV (development rows)", "validation": "validation rows"}


def ranked_table(rows: list[dict[str, Any]], metric: str, varied: list[str]) -> Table:
    """The ranked runs as a rich table: rank, run (a baseline by its kind,
    ``baseline:random_forest``), status (when a run did not finish), the figure runs are
    ranked by (``rank_<metric>``, the name of that figure in MLflow), the test figure with
    its interval (reported, not used to rank), then the varied parameters (short headers;
    the caption gives their full names), test rows, parameters, epochs and training time."""
    columns, source = _ranked_columns(rows, metric, varied)
    rank = RANK.format(metric)
    short = short_names(varied)
    renamed = [f"{short[k]} = {k}" for k in varied if short[k] != k]
    caption = "undefined figures rank last; intervals are 95%" + (
        "; " + ", ".join(renamed) if renamed else "")
    table = FigureTable(title=f"ranked by {rank} = {metric} on {SOURCES[source]}; test is "
                              "reported, not used to rank", caption=caption, pad_edge=False)
    heads = {"rank": "#", rank: f"{rank}\n({source}" + (" ± 95%)" if source == "cv" else ")"),
             f"test_{metric}": f"test {metric}\n[95%]", "test_rows": "test rows",
             "parameters": "params", "epochs_run": "epochs", "train_seconds": "time",
             **short}
    hidden = {f"cv_{metric}_ci95", f"test_{metric}_ci_low", f"test_{metric}_ci_high", "kind",
              "run_id"}  # kind: in the run's cell
    if all(row.get("status") == "FINISHED" for row in rows):
        hidden.add("status")  # (a column only when a run did not finish)
    test_rows = {row.get("test_rows") for row in rows}
    if len(test_rows) == 1 and None not in test_rows:  # the same rows for every run: said
        hidden.add("test_rows")                         # once, in the test figure's header
        heads[f"test_{metric}"] = f"test {metric}\n[95%], n={test_rows.pop()}"
    shown = [c for c in columns if c not in hidden]
    cells = [[_ranked_cell(row, column, metric, source, varied) for column in shown]
             for row in rows]
    for k, column in enumerate(shown):
        table.column(heads.get(column, column), [r[k] for r in cells],
                     figures=column in (rank, f"test_{metric}"),
                     fold_at=8 if column in ("run", *varied) else None,
                     whole_header=column in varied,
                     justify="right" if column in ("rank", "test_rows", "parameters",
                                                   "epochs_run", "train_seconds") else "left")
    for row in cells:
        table.add_row(*row)
    return table


def _ranked_cell(row: dict[str, Any], column: str, metric: str, source: str,
                 varied: list[str]) -> str:
    value = row.get(column)
    if column == "run" and str(row.get("kind", "network")) != "network":
        return str(row["kind"])  # baseline:random_forest (its run is baseline-random_forest)
    if column == "run":  # "trial-03 hidden.0.units=8": the varied columns show the values
        return " ".join(w for w in str(value or "").split()
                        if not ("=" in w and any(k.endswith(w.split("=")[0]) for k in varied)))
    if column in varied and isinstance(value, float):
        return f"{value:g}"  # a parameter as it was given (0.001, not 0.0010)
    if column == RANK.format(metric):
        return (mean_spread(value, row.get(f"cv_{metric}_ci95"), 3) if source == "cv"
                else number(value, 3))
    if column == f"test_{metric}":  # 3 decimals: an interval on ~60 rows is ±0.08 wide
        return figure(value, row.get(f"test_{metric}_ci_low"), row.get(f"test_{metric}_ci_high"),
                      3)
    if column == "train_seconds":
        return f"{value:.1f}s" if defined(value) else ""
    if isinstance(value, float):
        return number(value) if defined(value) else ""
    return "" if value is None else str(value)


def _plain(value: Any) -> Any:
    """A cell for CSV and JSON: numbers stay numbers, NaN and missing become None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def ranked_records(rows: list[dict[str, Any]], metric: str, varied: list[str]
                   ) -> list[dict[str, Any]]:
    """The ranked runs as flat records for CSV and JSON: every interval as two numeric
    columns (``<figure>_ci_low``, ``<figure>_ci_high``), numbers as numbers, NaN as None."""
    columns, _ = _ranked_columns(rows, metric, varied)
    extra = [k for k in (f"validation_{metric}", f"cv_{metric}", f"corrected_{metric}",
                         "ranked_by") if any(k in r for r in rows)]
    return [{c: _plain(row.get(c)) for c in [*columns, *extra]} for row in rows]


def render_ranked(rows: list[dict[str, Any]], metric: str, varied: list[str],
                  fmt: str = "table", width: int = WIDTH) -> str:
    """The ranked runs as text (``table``), ``csv`` or ``json`` (see :func:`ranked_records`)."""
    if fmt == "table":
        return text_of(ranked_table(rows, metric, varied), width)
    records = ranked_records(rows, metric, varied)
    if fmt == "json":
        return json.dumps(records, indent=1, allow_nan=False, default=str) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["rank"])
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


# -- one training run's summary (`heartflow run`) ------------------------------------------


def outcome_rows(outcome: Any) -> list[tuple[str, str]]:
    """A training run's summary as (what, value) pairs: sizes, training, the validation
    figure runs are compared on, every test figure with its interval and rows, calibration,
    threshold, subgroups, cross-validation, baselines and the registry's verdict.

    ``outcome`` is a run outcome (:class:`heartflow.pipelines.results.RunOutcome`).
    """
    from heartflow.evaluation.heldout import UNDEFINED_REASON  # lazy: NumPy, pandas, plots

    o = outcome
    split = o.split
    stopped = 0 < o.epochs_run < (o.epochs_planned or o.epochs_run + 1)
    stop = (f" (early stop, best epoch {o.best_epoch})" if stopped and o.best_epoch
            else f" (best epoch {o.best_epoch})" if o.best_epoch else "")
    out = [("inputs", str(o.input_width)), ("parameters", str(o.parameters)),
           ("rows (train/val/test)", f"{split['train']}/{split['validation']}/{split['test']}"),
           ("epochs run", f"{o.epochs_run}{stop}"),
           ("train time", f"{o.train_seconds:.2f} s")]
    out += [(f"validation {name}", f"{number(value)}  (n={o.validation_rows} validation "
             "rows; runs are compared on these)") for name, value in o.validation.items()
            if defined(value)][:1]
    why = getattr(o, "undefined", {}) or {}  # test figure -> why undefined (or interval)
    for name, value in o.metrics.items():
        if not defined(value):
            reason = why.get(name) or UNDEFINED_REASON.get(name, "not computable on these rows")
            shown = f"{UNDEFINED} on the {o.test_rows} test rows ({reason})"
        else:
            low, high = o.intervals.get(name, (None, None))
            note = f"; {why[name]}" if name in why and not interval(low, high) else ""
            shown = (f"{figure(value, low, high)}  (n={o.test_rows} test rows, 95% "
                     f"bootstrap{note})")
        out.append((f"test {name}", shown))
    c = o.calibration

    def said(name: str, digits: int, signed: bool = False) -> str:
        return reasoned(c.get(name), why.get(name), digits, c.get(f"{name}_ci_low"),
                        c.get(f"{name}_ci_high"), signed=signed)

    if "calibration_slope" in c:
        out.append(("test calibration",
                    f"slope {said('calibration_slope', 2)}, intercept "
                    f"{said('calibration_intercept', 2, True)}; mean risk "
                    f"{said('mean_risk', 2)} vs prevalence {said('prevalence', 2)}"))
    if o.threshold is not None and o.threshold_rule:
        shown = f"{number(o.threshold, 3)}: {o.threshold_rule}"
        if "expected_cost" in c:
            shown += f"; expected cost per test row {said('expected_cost', 3)}"
        out.append(("threshold", shown))
    for g in o.subgroups:
        gwhy = g.get("undefined") or {}
        counts = f"n={g['rows']}, {g['cases']} cases"
        if g["too_small"]:  # counts only: its figures would rest on a handful of patients
            shown = f"TOO SMALL TO JUDGE: counts only ({counts})"
        else:
            auc = reasoned(g["roc_auc"], gwhy.get("roc_auc"), 3, g["roc_auc_ci_low"],
                           g["roc_auc_ci_high"])
            slope = reasoned(g["calibration_slope"], gwhy.get("calibration_slope"), 2)
            risk = reasoned(g["mean_risk"], gwhy.get("mean_risk"), 2)
            shown = (f"AUC {auc}, slope {slope}, risk {risk} vs prevalence "
                     f"{number(g['prevalence'], 2)} ({counts})")
        out.append((f"subgroup {g['subgroup']}", shown))
    out += [(f"CV {name}", f"{mean_spread(mean, ci)}  ({o.cv_folds} folds, 95% CI)")
            for name, (mean, ci) in o.cv.items()]
    if o.cv_pooled:
        p, pwhy = o.cv_pooled, getattr(o, "cv_pooled_undefined", {}) or {}

        def pooled(name: str, digits: int, signed: bool = False) -> str:
            return reasoned(p.get(name), pwhy.get(name), digits, signed=signed)

        out.append(("CV pooled out-of-fold",
                    f"AUC {pooled('roc_auc', 3)}, slope {pooled('calibration_slope', 2)}, "
                    f"intercept {pooled('calibration_intercept', 2, True)} "
                    f"(n={int(p.get('rows', 0))} development rows, first repeat)"))
    out += _rigour_rows(o)
    first = next(iter(o.metrics), "")
    for base, scores in o.baselines.items():
        shown = "  ".join(f"{k} {number(scores[k])}" for k in list(o.metrics)[:2]
                          if k in scores)
        if f"cv_{first}" in scores:
            shown += (f"  (CV {first} "
                      f"{mean_spread(scores[f'cv_{first}'], scores.get(f'cv_{first}_ci95'))})")
        out.append((f"baseline {base}", shown))
    out.append(("MLflow run", o.run_id))
    if o.version:
        verdict = "champion" if o.promoted else "not promoted"
        out.append(("registered", f"{o.model_name} v{o.version} ({verdict})"))
        out.append(("promotion", o.decision + (f" [gate rows: {o.gate_rows}]"
                                               if o.gate_rows is not None else "")))
    return out


def _rigour_rows(o: Any) -> list[tuple[str, str]]:
    """Riley's sample size, the optimism-corrected figures and the instability."""
    out = []
    size = getattr(o, "sample_size", None) or {}
    if size:
        need = (f"{size['by_inputs']['rows']} rows counting the "
                f"{size['by_inputs']['parameters']} inputs, {size['by_weights']['rows']} "
                f"counting the {size['by_weights']['parameters']} weights")
        have = (f"{size['development_rows']} development rows "
                f"({size['development_events']} events)")
        out.append(("sample size (Riley)", f"{need}; {have}, {size['anticipated']}"
                    + ("; SHORT: expect overfitting" if size.get("warning") else "; met")))
    corrected = getattr(o, "corrected", None) or {}
    optimism = getattr(o, "optimism", None) or {}
    shown = [name for name in ("roc_auc", "calibration_slope", "calibration_intercept",
                               "brier") if name in corrected]
    if shown:
        resamples = int((getattr(o, "instability", None) or {}).get("resamples", 0))
        out.append((f"corrected ({resamples} bootstrap refits)", ", ".join(
            f"{name} {number(corrected[name], 3)} (optimism {number(optimism[name], 3)})"
            for name in shown)))
    unstable = getattr(o, "instability", None) or {}
    if unstable:
        out.append(("instability", f"mean |refit risk - risk| "
                    f"{number(unstable['mean_abs_difference'], 3)}; decision flips in over "
                    f"20% of refits for {100 * unstable['flip_share']:.0f}% of patients"))
    return out


def _calibration(c: dict[str, float]) -> str:
    """Slope and intercept with intervals, mean risk against prevalence."""
    slope = figure(c["calibration_slope"], c.get("calibration_slope_ci_low"),
                   c.get("calibration_slope_ci_high"), 2)
    intercept = figure(c.get("calibration_intercept"), c.get("calibration_intercept_ci_low"),
                       c.get("calibration_intercept_ci_high"), 2, signed=True)
    return (f"slope {slope}, intercept {intercept}; mean risk {number(c.get('mean_risk'), 2)}"
            f" vs prevalence {number(c.get('prevalence'), 2)}")
