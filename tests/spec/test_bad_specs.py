"""The bad-spec corpus: every case is refused with exit 2, file:line:column, the field and
what is allowed, no traceback, and nothing written to MLflow. Plus fuzzing of the loader."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartflow.api import load_spec
from heartflow.errors import SpecError
from heartflow.spec import load_spec_text
from tests.conftest import cli

BASE = """\
name: corpus
data:
  source: heart-csv
  target: target
  features:
    categorical: [sex, cp]
    numeric: [age, chol]
  split: {test: 0.2, validation: 0.2}
model:
  hidden:
    - {units: 8, activation: relu, initializer: he_normal}
  output: {units: 1, activation: sigmoid}
train:
  loss: binary_crossentropy
  optimizer: {name: adam, learning_rate: 0.001}
  batch_size: 32
  epochs: 10
evaluate:
  metrics: [roc_auc, accuracy]
register:
  model_name: corpus-model
"""


def sub(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (case id, spec text, expected field (or None for file-level), words the message must contain)
CASES: list[tuple[str, str | bytes, str | None, str]] = [
    ("unknown_top_key", BASE + "trainer: {}\n", "trainer", "did you mean 'train'"),
    ("misspelt_epochs", sub("  epochs: 10", "  epoch: 10"), "train.epoch", "did you mean 'epochs'"),
    ("misspelt_units", sub("{units: 8,", "{unit: 8,"), "model.hidden.0.unit",
     "did you mean 'units'"),
    ("misspelt_section", sub("evaluate:", "evalute:"), "evalute", "did you mean 'evaluate'"),
    ("misspelt_activation", sub("activation: relu", "activation: rlu"),
     "model.hidden.0.activation", "did you mean 'relu'"),
    ("unknown_activation", sub("activation: relu", "activation: banana"),
     "model.hidden.0.activation", "Allowed"),
    ("misspelt_initializer", sub("he_normal", "he_normel"), "model.hidden.0.initializer",
     "did you mean 'he_normal'"),
    ("misspelt_loss", sub("loss: binary_crossentropy", "loss: binary_crossentropi"),
     "train.loss", "did you mean 'binary_crossentropy'"),
    ("misspelt_optimizer", sub("name: adam", "name: adan"), "train.optimizer.name",
     "did you mean 'adam'"),
    ("unknown_optimizer", sub("name: adam", "name: lbfgs"), "train.optimizer.name", "sgd"),
    ("output_activation", sub("activation: sigmoid", "activation: relu"),
     "model.output.activation", "sigmoid, softmax, linear"),
    ("zero_units", sub("{units: 8,", "{units: 0,"), "model.hidden.0.units", "greater than 0"),
    ("negative_units", sub("{units: 8,", "{units: -4,"), "model.hidden.0.units", "greater than 0"),
    ("float_units", sub("{units: 8,", "{units: 8.5,"), "model.hidden.0.units", "integer"),
    ("zero_epochs", sub("epochs: 10", "epochs: 0"), "train.epochs", "greater than 0"),
    ("negative_epochs", sub("epochs: 10", "epochs: -1"), "train.epochs", "greater than 0"),
    ("zero_batch", sub("batch_size: 32", "batch_size: 0"), "train.batch_size", "greater than 0"),
    ("text_batch", sub("batch_size: 32", "batch_size: big"), "train.batch_size", "integer"),
    ("lr_zero", sub("learning_rate: 0.001", "learning_rate: 0"),
     "train.optimizer.learning_rate", "greater than 0"),
    ("lr_negative", sub("learning_rate: 0.001", "learning_rate: -0.1"),
     "train.optimizer.learning_rate", "greater than 0"),
    ("lr_huge", sub("learning_rate: 0.001", "learning_rate: 1000"),
     "train.optimizer.learning_rate", "less than or equal to 10"),
    ("lr_text", sub("learning_rate: 0.001", "learning_rate: fast"),
     "train.optimizer.learning_rate", "number"),
    ("sigmoid_with_cce", sub("loss: binary_crossentropy", "loss: categorical_crossentropy"),
     "train.loss", "does not fit a sigmoid output"),
    ("softmax_one_unit", sub("{units: 1, activation: sigmoid}", "{units: 1, activation: softmax}"),
     "model.output.units", "softmax output needs one unit per class"),
    ("sigmoid_three_units",
     sub("{units: 1, activation: sigmoid}", "{units: 3, activation: sigmoid}"),
     "model.output.units", "softmax"),
    ("linear_with_bce", sub("{units: 1, activation: sigmoid}", "{units: 1, activation: linear}"),
     "train.loss", "mse"),
    ("metric_for_wrong_task", sub("[roc_auc, accuracy]", "[roc_auc, rmse]"),
     "evaluate.metrics.1", "Allowed"),
    ("split_too_big", sub("{test: 0.2, validation: 0.2}", "{test: 0.5, validation: 0.5}"),
     "data.split", "at least 10%"),
    ("feature_twice", sub("numeric: [age, chol]", "numeric: [age, sex]"), "data.features",
     "both categorical and numeric"),
    ("target_as_feature", sub("numeric: [age, chol]", "numeric: [age, target]"), "data",
     "also listed as a feature"),
    ("features_not_list", sub("numeric: [age, chol]", "numeric: age"),
     "data.features.numeric", "list"),
    ("hidden_not_list", sub("  hidden:\n    - {units: 8, activation: relu, initializer: he_normal}",
                            "  hidden: 8"), "model.hidden", "list"),
    ("dropout_one", sub("initializer: he_normal}", "initializer: he_normal, dropout: 1.0}"),
     "model.hidden.0.dropout", "less than 1"),
    ("class_weight_bad", sub("  epochs: 10", "  epochs: 10\n  class_weight: heavy"),
     "train.class_weight", "balanced"),
    ("name_with_space", sub("name: corpus", "name: my model"), "name", "pattern"),
    ("missing_data", BASE.split("data:")[0] + "model: {hidden: []}\n", "data", "required"),
    ("missing_target", sub("  target: target\n", ""), "data.target", "required"),
    ("bad_target_rule", sub("  target: target", "  target: {column: num, positive: '>> 0'}"),
     "data.target.positive", "comparison"),
    ("missing_data_file", sub("source: heart-csv", "source: no/such/file.csv"), "data.source",
     "not found"),
    ("threshold_above_one", sub("  metrics: [roc_auc, accuracy]",
                                "  metrics: [roc_auc, accuracy]\n  threshold: 1.5"),
     "evaluate.threshold", "strictly between 0 and 1"),
    ("threshold_costs_misspelt", sub("  metrics: [roc_auc, accuracy]",
                                     "  metrics: [roc_auc, accuracy]\n  threshold: "
                                     "{false_negativ_cost: 3}"),
     "evaluate.threshold.false_negativ_cost", "did you mean 'false_negative_cost'"),
    ("threshold_costs_multiclass",
     sub("{units: 1, activation: sigmoid}", "{units: 3, activation: softmax}").replace(
         "loss: binary_crossentropy", "loss: categorical_crossentropy").replace(
         "[roc_auc, accuracy]", "[accuracy]\n  threshold: {false_negative_cost: 3}"),
     "evaluate.threshold", "binary (sigmoid) outputs"),
    ("subgroup_not_a_feature", sub("  metrics: [roc_auc, accuracy]",
                                   "  metrics: [roc_auc, accuracy]\n  subgroups: [sexx]"),
     "evaluate.subgroups.0", "not a feature of this spec"),
    ("subgroup_bins_on_categorical",
     sub("  metrics: [roc_auc, accuracy]",
         "  metrics: [roc_auc, accuracy]\n  subgroups: [{column: cp, bins: [0, 2, 5]}]"),
     "evaluate.subgroups.0", "bins split a numeric column"),
    ("subgroup_bins_not_increasing",
     sub("  metrics: [roc_auc, accuracy]",
         "  metrics: [roc_auc, accuracy]\n  subgroups: [{column: age, bins: [0, 60, 50]}]"),
     "evaluate.subgroups.0.bins", "must increase"),
    ("decision_curve_reversed",
     sub("  metrics: [roc_auc, accuracy]",
         "  metrics: [roc_auc, accuracy]\n  decision_curve: {low: 0.5, high: 0.1}"),
     "evaluate.decision_curve", "must be below high"),
    ("bootstrap_too_few_resamples",
     sub("  metrics: [roc_auc, accuracy]", "  metrics: [roc_auc, accuracy]\n  validation: "
         "{method: bootstrap, resamples: 5}"),
     "evaluate.validation.resamples", "greater than or equal to 20"),
    ("bootstrap_for_several_classes",
     sub("{units: 1, activation: sigmoid}", "{units: 3, activation: softmax}").replace(
         "loss: binary_crossentropy", "loss: categorical_crossentropy").replace(
         "[roc_auc, accuracy]", "[accuracy]\n  validation: {method: bootstrap}"),
     "evaluate.validation", "binary risk models"),
    ("anticipated_c_outside",
     sub("  metrics: [roc_auc, accuracy]", "  metrics: [roc_auc, accuracy]\n  sample_size: "
         "{anticipated_c: 1.3}"),
     "evaluate.sample_size.anticipated_c", "less than 1"),
    ("anticipated_c_and_r2",
     sub("  metrics: [roc_auc, accuracy]", "  metrics: [roc_auc, accuracy]\n  sample_size: "
         "{anticipated_c: 0.8, anticipated_r2: 0.2}"),
     "evaluate.sample_size", "not both"),
    ("sample_size_for_regression",
     sub("{units: 1, activation: sigmoid}", "{units: 1, activation: linear}").replace(
         "loss: binary_crossentropy", "loss: mse").replace(
         "[roc_auc, accuracy]", "[rmse]\n  sample_size: {anticipated_r2: 0.3}"),
     "evaluate.sample_size", "binary outcomes only"),
    ("top_level_list", "- name: x\n- data: y\n", None, "must be a mapping"),
    ("scalar_document", "just a string\n", None, "must be a mapping"),
    ("empty_file", "", None, "empty"),
    ("comments_only", "# nothing here\n", None, "empty"),
    ("yaml_syntax_error", BASE + "model: [unclosed\n", None, "YAML syntax error"),
    ("bad_indentation", sub("  target: target", " target: target"), None, "YAML syntax error"),
    ("tab_indentation", sub("  target: target", "\ttarget: target"), None, "tab"),
    ("duplicate_key", BASE + "name: again\n", "name", "duplicate key"),
    ("python_object_tag", BASE + "evil: !!python/object/apply:os.system ['true']\n", "evil",
     "not allowed"),
    ("python_name_tag", sub("name: corpus", "name: !!python/name:os.system"), "name",
     "not allowed"),
    ("custom_tag", sub("epochs: 10", "epochs: !custom 10"), "train.epochs", "not allowed"),
    ("merge_key", "base: &b {units: 1}\nname: x\nother:\n  <<: *b\n", None, "merge keys"),
    ("binary_garbage", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", None, "binary"),
    ("not_utf8", BASE.encode() + b"description: caf\xe9\n", None, "UTF-8"),
    ("huge_file", "name: x\n" + "# padding\n" * 150_000, None, "larger than"),
    ("alias_bomb", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
     "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
     "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n", None,
     "alias bomb"),
]

LOCATION = re.compile(r"^(?P<file>[^:\n]+\.yaml):(?P<line>\d+):(?P<col>\d+): ")


def _write(tmp_path: Path, case: str, text: str | bytes) -> Path:
    path = tmp_path / f"{case}.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("case", "text", "field", "words"), CASES, ids=[c[0] for c in CASES])
def test_loader_refuses_with_location(tmp_path: Path, case: str, text: str | bytes,
                                      field: str | None, words: str) -> None:
    path = _write(tmp_path, case, text)
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    err = info.value
    message = str(err)
    assert words in message, message
    assert LOCATION.match(message), message
    assert err.line is not None and err.column is not None
    if field is not None:
        assert err.field == field, message


def test_cli_refuses_every_case_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    """`heartflow run` on each bad spec: exit 2, one located message, no MLflow store."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [_write(tmp_path, case, text) for case, text, _field, _words in CASES]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # processes, in parallel
        outs = list(pool.map(lambda path: cli("run", str(path), cwd=tmp_path, timeout=120),
                             paths))
    failures = []
    for (case, _text, _field, words), out in zip(CASES, outs, strict=True):
        problems = []
        if out.returncode != 2:
            problems.append(f"exit {out.returncode}")
        if "Traceback" in out.stderr:
            problems.append("traceback")
        if words not in out.stderr or not re.search(r"\.yaml:\d+:\d+: ", out.stderr):
            problems.append(f"message: {out.stderr[:300]!r}")
        if problems:
            failures.append((case, problems))
    assert not failures, failures
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()


def test_alias_bomb_is_refused_quickly() -> None:
    import time

    bomb = next(c[1] for c in CASES if c[0] == "alias_bomb")
    start = time.perf_counter()
    with pytest.raises(SpecError):
        load_spec_text(str(bomb), "bomb.yaml")
    assert time.perf_counter() - start < 5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_fuzz_text_either_valid_or_spec_error(text: str) -> None:
    try:
        load_spec_text(text, "fuzz.yaml")
    except SpecError as err:
        assert LOCATION.match(str(err)), str(err)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False), st.text(max_size=20))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["name", "data", "model", "train", "evaluate",
                                        "register", "extra"]), yaml_values, max_size=7))
def test_fuzz_structures_either_valid_or_spec_error(doc: dict) -> None:
    import yaml

    try:
        load_spec_text(yaml.safe_dump(doc), "fuzz.yaml")
    except SpecError as err:
        assert LOCATION.match(str(err)), str(err)
