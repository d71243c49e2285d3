"""Spec validation: shipped specs, located errors, cross-field rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heartflow.errors import SpecError
from heartflow.spec import load_spec, load_spec_text
from tests.conftest import ROOT, cli

SHIPPED = sorted(p for p in (ROOT / "specs").glob("*.yaml") if "sweep" not in p.name)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_specs_validate(path: Path) -> None:
    loaded = load_spec(str(path))
    assert loaded.spec.name


def test_shipped_sweep_reproduces_the_lecture() -> None:
    from heartflow.spec.sweep import load_sweep

    sweep = load_sweep(str(ROOT / "specs/heart_sweep.yaml"))
    units = [t.overrides["model.hidden.0.units"] for t in sweep.trials]
    assert units == [0, 4, 8, 16, 32, 64]
    assert sweep.trials[0].loaded.spec.model.hidden == []  # 0 units: logistic regression
    assert [h.units for h in sweep.trials[3].loaded.spec.model.hidden] == [16]
    out = cli("validate", str(ROOT / "specs/heart_sweep.yaml"))
    assert out.returncode == 0 and "6 trials" in out.stdout


def test_heart_16_matches_the_lecture() -> None:
    spec = load_spec(str(ROOT / "specs/heart_16.yaml")).spec
    assert [h.units for h in spec.model.hidden] == [16]
    assert spec.model.hidden[0].activation == "relu"
    assert spec.model.output.activation == "sigmoid" and spec.task == "binary"
    assert spec.train.loss == "binary_crossentropy"
    assert spec.train.optimizer.name == "adam" and spec.train.batch_size == 32
    assert spec.model_name == "heart-disease"


def test_logreg_spec_has_no_hidden_layer() -> None:
    assert load_spec(str(ROOT / "specs/heart_logreg.yaml")).spec.model.hidden == []


GOOD = """\
name: t
data:
  source: heart-csv
  target: target
  features: {categorical: [sex], numeric: [age]}
model:
  hidden:
    - {units: 4, activation: relu}
"""


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "bad.yaml")
    return info.value


def test_defaults_fill_in() -> None:
    spec = load_spec_text(GOOD, "good.yaml").spec
    assert spec.train.epochs == 100 and spec.train.optimizer.learning_rate == 0.001
    assert spec.data.split.test == 0.2 and spec.metrics[0] == "roc_auc"


def test_misspelt_key_names_line_column_and_suggests() -> None:
    err = _error(GOOD.replace("    - {units: 4, activation: relu}",
                              "    - {units: 4, activaton: relu}"))
    assert (err.line, err.column) == (8, 18)
    assert err.field == "model.hidden.0.activaton"
    assert "did you mean 'activation'" in str(err)
    assert str(err).startswith("bad.yaml:8:18: model.hidden.0.activaton:")


def test_misspelt_activation_lists_allowed_names() -> None:
    err = _error(GOOD.replace("activation: relu", "activation: rleu"))
    assert err.line == 8 and err.field == "model.hidden.0.activation"
    assert "did you mean 'relu'" in str(err) and "sigmoid" in str(err)


def test_wrong_type_says_what_was_given() -> None:
    err = _error(GOOD + "train: {epochs: many}\n")
    assert err.field == "train.epochs" and err.line == 9
    assert "'many'" in str(err) and "integer" in str(err)


def test_missing_required_section() -> None:
    err = _error("name: t\nmodel: {hidden: []}\n")
    assert err.field == "data" and "required" in str(err)


def test_sigmoid_output_with_categorical_loss_is_refused() -> None:
    err = _error(GOOD + "train: {loss: categorical_crossentropy}\n")
    assert err.field == "train.loss" and "binary_crossentropy" in str(err)


def test_softmax_with_one_unit_is_refused() -> None:
    err = _error(GOOD + "  output: {units: 1, activation: softmax}\n")
    assert err.field == "model.output.units" and "sigmoid" in str(err)


def test_missing_data_file_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("heart-csv", "nowhere/data.csv"))
    import heartflow as hf

    load_spec(str(path))  # the spec layer reads no data
    with pytest.raises(SpecError) as info:
        hf.load_spec(path)
    assert info.value.field == "data.source" and info.value.line == 3
    assert "not found" in str(info.value)


def test_uci_target_rule_parses() -> None:
    spec = load_spec(str(ROOT / "specs/uci_cleveland_16.yaml")).spec
    assert spec.data.target_spec.column == "num" and spec.data.target_spec.positive == "> 0"


def test_validate_command_is_fast_and_clean() -> None:
    ok = cli("validate", str(ROOT / "specs/heart_16.yaml"))
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = cli("validate", str(ROOT / "tests/spec/bad_specs/misspelt_key.yaml"))
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "did you mean" in bad.stderr


def test_validate_does_not_import_heavy_libraries() -> None:
    import subprocess
    import sys

    code = ("import sys; from heartflow.cli.app import app; from typer.main import get_command;"
            "get_command(app).main(['validate', sys.argv[1]], standalone_mode=False);"
            "heavy=[m for m in ('tensorflow','mlflow','prefect','sklearn') if m in sys.modules];"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs/heart_16.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_schema_command_emits_json_schema() -> None:
    out = cli("schema")
    schema = json.loads(out.stdout)
    assert {"name", "data", "model", "train"} <= set(schema["properties"])
