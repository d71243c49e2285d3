"""The CLI's tables: one number formatter (NaN is "undefined", an interval sits on its
figure's line), tables that fit 100 columns without cutting anything, and a command layer
that reaches the rest of heartflow only through heartflow.api."""

from __future__ import annotations

import ast
import io
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from tests.conftest import ROOT


def _text(renderable, width: int = 100) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_one_formatter_for_numbers_intervals_and_undefined_figures() -> None:
    from heartflow.evaluation.tables import figure, interval, mean_spread, number

    nan = float("nan")
    assert number(nan) == number(None) == figure(nan, 0.1, 0.2) == "undefined"
    assert figure(0.89571, 0.79604, 0.96111) == f"{0.89571:.4f} [{0.79604:.4f}, {0.96111:.4f}]"
    assert figure(0.5, nan, 0.7) == "0.5000"  # an undefined bound: no interval
    assert interval(-0.25, 0.5, 2, signed=True) == "[-0.25, +0.50]"
    assert mean_spread(0.9, 0.0123) == "0.9000 ± 0.0123" and mean_spread(nan, 0.1) == \
        "undefined"


def test_site_and_subgroup_tables_print_undefined_never_nan() -> None:
    from heartflow.cli.console import report_rows, subgroup_table
    from heartflow.evaluation.clinical import clinical_report
    from heartflow.evaluation.subgroups import subgroup_reports
    from heartflow.spec.schema import SubgroupSpec

    rng = np.random.default_rng(0)
    y = np.ones(40)  # one outcome class: no ROC AUC can exist
    p = rng.uniform(0.05, 0.95, 40)
    report = clinical_report(y, p)
    assert math.isnan(report.values["roc_auc"])
    rows = {name: (value, ci) for name, value, ci in report_rows(report)}
    assert rows["roc_auc"] == ("undefined", "")
    assert rows["prevalence"][0] == f"{1.0:.4f}"
    y = rng.binomial(1, 0.4, 200).astype(float)
    features = pd.DataFrame({"site": ["big"] * 190 + ["tiny"] * 10})
    groups = subgroup_reports(features, y, rng.uniform(0.05, 0.95, 200),
                              [SubgroupSpec(column="site")], 0.5, (0.1,), 30)
    tiny = next(g for g in groups if g.level == "tiny")
    assert tiny.too_small and math.isnan(tiny.report.values["mean_risk"])
    text = _text(subgroup_table(groups))
    assert "nan" not in text.lower().replace("undefined", "")
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "site=tiny" in line)
    assert "undefined" in lines[at] and "too small" in lines[at + 1]


def test_ranked_table_keeps_the_test_interval_on_one_line_within_100_columns() -> None:
    from heartflow.api import Comparison

    rows = [{"run": f"trial-{i:02d} units={u}", "run_id": f"{i:032x}", "status": "FINISHED",
             "kind": "network", "model.hidden.0.units": str(u),
             "validation_roc_auc": v, "test_roc_auc": t, "test_roc_auc_ci": (t - 0.1, t + 0.05),
             "test_rows": "61", "parameters": str(30 * u), "epochs_run": "40",
             "train_seconds": 1.5, "rank": i}
            for i, (u, v, t) in enumerate([(8, 0.93851, 0.88981), (4, float("nan"), 0.9)], 1)]
    text = Comparison(rows, "roc_auc", ["model.hidden.0.units"]).table()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100 and "…" not in text
    assert f"{0.88981:.4f} [{0.78981:.4f}, {0.93981:.4f}]" in text  # on one line
    assert "undefined" in text and "nan" not in text.lower().replace("undefined", "")


ALLOWED = {"heartflow.api", "heartflow.errors", "heartflow.evaluation.tables",
           "heartflow.runtime.fast_exit", "heartflow.runtime.quiet_import"}


@pytest.mark.parametrize("path", sorted((ROOT / "heartflow" / "cli").glob("*.py")),
                         ids=lambda p: p.name)
def test_the_commands_reach_heartflow_only_through_the_api(path) -> None:
    """Besides heartflow.api: errors, the shared number formatter, and the process set-up
    (quiet defaults, the fast exit); nothing of the pipelines, tracking, data or model."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from package import module` names the module; `from module import name`
            # the module
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in ALLOWED
                      or node.module in ("heartflow", "heartflow.runtime") else node.module
                      for a in node.names}
    ours = {m for m in found if m.startswith("heartflow.") and not m.startswith(
        "heartflow.cli")}
    assert ours <= ALLOWED, ours - ALLOWED
