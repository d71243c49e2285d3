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
    risks = rng.uniform(0.05, 0.95, 200)
    groups = subgroup_reports(features, y, risks,
                              [SubgroupSpec(column="site")], 0.5, (0.1,), 30)
    tiny = next(g for g in groups if g.level == "tiny")
    assert tiny.too_small and math.isnan(tiny.report.values["mean_risk"])
    text = _text(subgroup_table(groups))
    assert "nan" not in text.lower().replace("undefined", "")
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "site=tiny" in line)
    cases = int(y[190:].sum())  # the tiny subgroup: counts only, no figure
    assert f"{cases} / 10" in lines[at] and "counts only" in lines[at]
    assert "too small" in lines[at + 1]
    big = next(line for line in lines if "site=big" in line)  # its interval on its line
    from sklearn.metrics import roc_auc_score

    big_auc = roc_auc_score(y[:190], risks[:190])
    assert f"{big_auc:.3f} [" in big and "]" in big.split(f"{big_auc:.3f} [", 1)[1]
    assert max(len(line) for line in lines) <= 100


def test_ranked_table_keeps_the_test_interval_on_one_line_within_100_columns() -> None:
    from heartflow.api import Comparison

    rows = [{"run": f"trial-{i:02d} hidden.0.units={u}", "run_id": f"{i:032x}",
             "status": "FINISHED", "kind": "network", "model.hidden.0.units": u,
             "train.optimizer.learning_rate": 0.001, "rank_roc_auc": v,
             "validation_roc_auc": v, "test_roc_auc": t, "test_roc_auc_ci_low": t - 0.1,
             "test_roc_auc_ci_high": t + 0.05, "test_rows": 61, "parameters": 30 * u,
             "epochs_run": 40, "train_seconds": 1.5, "rank": i}
            for i, (u, v, t) in enumerate([(8, 0.93851, 0.88981), (4, float("nan"), 0.9)], 1)]
    varied = ["model.hidden.0.units", "train.optimizer.learning_rate"]
    text = Comparison(rows, "roc_auc", varied).table()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100 and "…" not in text
    assert f"{0.88981:.3f} [{0.78981:.3f}, {0.93981:.3f}]" in text  # on one line
    assert "undefined" in text and "nan" not in text.lower().replace("undefined", "")
    header = text.split("┡")[0]
    assert "model.hi" not in header  # short, distinct headers; the caption names them
    assert "units = model.hidden.0.units" in text
    assert "learning_rate =" in text and "train.optimizer.learning_rate" in text
    assert header.index("rank_roc_auc") < header.index("test roc_auc") < header.index("units")
    assert "0.001" in text and "0.0010" not in text  # a parameter as it was given


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


@pytest.mark.slow
def test_a_sweeps_tables_fit_its_formats_parse_and_the_ui_ranks_as_compare(
        tmp_path, prefect_server) -> None:
    """A sweep of 0 and 4 hidden units (the 0-unit trial has no hidden activation, dropout or
    l2), each bootstrap-validated and registered: `compare`'s CSV and JSON carry numbers
    (checked against MLflow's own client), its table and `models`' fit 100 columns,
    `models` shows each version's gate figures, the runs carry `rank_roc_auc` (the figure
    compare ranks by: the optimism-corrected one here) and the saved view sorts by it,
    and the plots are MLflow images too. The report and card of a version say the
    sample size, corrected figures and instability its run logged."""
    import json

    import mlflow
    from mlflow import MlflowClient

    from tests.conftest import cli, heart_csv, heart_spec

    heart_csv(tmp_path / "heart.csv", rows=200)
    spec = heart_spec(tmp_path / "base.yaml", hidden=[4], epochs=3)
    spec.write_text(spec.read_text() + "evaluate:\n  validation: {method: bootstrap, "
                    "resamples: 20}\n")
    (tmp_path / "sweep.yaml").write_text(
        "sweep:\n  base: base.yaml\n  axes:\n    model.hidden.0.units: [0, 4]\n"
        "  workers: 1\n  register: true\n")
    out = cli("sweep", str(tmp_path / "sweep.yaml"), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    parent = json.loads(out.stdout)["parent_run_id"]
    client = MlflowClient()
    wide = {"COLUMNS": "100"}

    # CSV: intervals as two numeric columns, counts as integers; values are MLflow's.
    csv_out = cli("compare", parent, "--format", "csv", cwd=tmp_path, env=wide)
    assert csv_out.returncode == 0, csv_out.stderr
    frame = pd.read_csv(io.StringIO(csv_out.stdout))
    for column in ("rank_roc_auc", "test_roc_auc", "test_roc_auc_ci_low",
                   "test_roc_auc_ci_high"):
        assert frame[column].dtype == np.float64, column
    for column in ("rank", "test_rows", "parameters", "epochs_run",
                   "model.hidden.0.units"):
        assert frame[column].dtype == np.int64, column
    assert "(" not in csv_out.stdout  # no tuple strings
    for row in frame.itertuples():
        run = client.get_run(row.run_id)
        m = run.data.metrics
        assert row.test_roc_auc_ci_low == pytest.approx(m["test_roc_auc_ci_low"], abs=1e-12)
        assert row.test_roc_auc_ci_high == pytest.approx(m["test_roc_auc_ci_high"], abs=1e-12)
        assert row.test_rows == int(run.data.tags["heartflow.split.test"])
        assert row.parameters == int(run.data.tags["heartflow.parameters"])
        # the UI's ranking figure is compare's: the optimism-corrected figure
        assert row.rank_roc_auc == pytest.approx(m["corrected_roc_auc"], abs=1e-12)
        assert m["rank_roc_auc"] == pytest.approx(m["corrected_roc_auc"], abs=1e-12)
        # the plots stay artifacts and are MLflow images too (the run page shows them)
        assert "plots/roc_curve.png" in {a.path for a in client.list_artifacts(
            row.run_id, "plots")}
        assert client.list_artifacts(row.run_id, "images")
    assert list(frame["rank_roc_auc"]) == sorted(frame["rank_roc_auc"], reverse=True)

    # JSON: numbers as numbers (null where undefined).
    records = json.loads(cli("compare", parent, "--format", "json", cwd=tmp_path).stdout)
    for record in records:
        m = client.get_run(record["run_id"]).data.metrics
        assert isinstance(record["test_rows"], int) and isinstance(record["rank"], int)
        assert isinstance(record["test_roc_auc"], float)
        assert record["test_roc_auc"] == pytest.approx(m["test_roc_auc"], abs=1e-12)
        assert record["rank_roc_auc"] == pytest.approx(m["rank_roc_auc"], abs=1e-12)

    # The experiment's saved view sorts by the same figure, best first.
    experiment = client.get_run(parent).info.experiment_id
    view = json.loads(client.get_experiment(experiment).tags[
        "mlflow.sharedViewState.heartflow"])
    assert view["orderByKey"] == "metrics.`rank_roc_auc`" and view["orderByAsc"] is False

    # Tables: every line within 100 columns; only the swept parameter varies, although
    # the 0-unit trial lacks the hidden layer's activation, dropout and l2.
    table = cli("compare", parent, cwd=tmp_path, env=wide)
    assert table.returncode == 0, table.stderr
    assert max(map(len, table.stdout.splitlines())) <= 100, table.stdout
    assert "…" not in table.stdout
    by_name = cli("compare", "heart_test", "--format", "csv", cwd=tmp_path).stdout
    header = by_name.splitlines()[0].split(",")
    assert [h for h in header if h.startswith("model.")] == ["model.hidden.0.units"]

    # `heartflow models`: aliases whole, and each version's gate figures as recorded.
    listed = cli("models", "heart-test", cwd=tmp_path, env=wide)
    assert listed.returncode == 0, listed.stderr
    text = listed.stdout
    assert max(map(len, text.splitlines())) <= 100, text
    for v in client.search_model_versions("name='heart-test'"):
        tags = v.tags
        if tags.get("heartflow.promotion.undecided") == "True":
            assert "undecided:" in text
            continue
        diff = float(tags["heartflow.gate.difference"] or "nan")
        low, high = (float(tags[f"heartflow.gate.{k}"] or "nan") for k in ("ci_low", "ci_high"))
        shown = (f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]" if np.isfinite([low, high]).all()
                 else f"{diff:+.3f}" if np.isfinite(diff) else "undefined")
        assert shown in text, text
        assert f"{tags['heartflow.gate.rule']}, {tags['heartflow.gate.rows']} rows" in text
    model = client.get_registered_model("heart-test")
    for alias in model.aliases:
        assert alias in text  # never cut ("challenger,champ…")
    from heartflow.api import versions

    gates = [v.as_dict()["gate"] for v in versions("heart-test")]  # (--json prints these)
    assert all(isinstance(g.get("rows", 0), int) for g in gates)

    # The run's report and the version's card: Riley's sample size, the corrected
    # figures and the instability, as the run logged them.
    version = client.get_model_version("heart-test", "1")
    m = client.get_run(version.run_id).data.metrics
    report = mlflow.artifacts.load_text(f"runs:/{version.run_id}/report.html")
    card = mlflow.artifacts.load_text(f"runs:/{version.run_id}/model_card.md")
    for page in (report, card):
        assert (f"{int(m['sample_size_inputs_rows'])} rows counting the "
                f"{int(m['sample_size_inputs_parameters'])} inputs") in page
        assert f"{int(m['development_rows'])} ({int(m['development_events'])} events)" in page
        assert (f"roc_auc {m['apparent_roc_auc']:.3f} - {m['optimism_roc_auc']:.3f} = "
                f"{m['corrected_roc_auc']:.3f}") in page
        assert f"{m['instability_mean_abs_difference']:.3f} per patient" in page
    assert report.index("In short") < report.index("<h2>Figures</h2>")
