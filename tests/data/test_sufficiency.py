"""Data sufficiency: a split whose parts are too small or miss a class is refused before any
MLflow run exists, with the counts each part got and what it needs; the minimums are the
spec's to change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heartflow.data.split import split_rows
from heartflow.errors import DataError
from heartflow.spec.schema import SplitSpec
from tests.conftest import cli, heart_csv, heart_spec


def test_a_four_row_file_is_refused_before_any_run(tmp_path: Path) -> None:
    heart_csv(tmp_path / "heart.csv", rows=300)
    lines = (tmp_path / "heart.csv").read_text().splitlines()
    body = [line for line in lines[1:] if line.endswith(",1")][:2] + \
           [line for line in lines[1:] if line.endswith(",0")][:2]
    (tmp_path / "heart.csv").write_text("\n".join([lines[0], *body]) + "\n")
    spec = heart_spec(tmp_path / "spec.yaml", epochs=2)
    out = cli("run", "-q", str(spec), cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "4 rows" in out.stderr and "test" in out.stderr and "at least" in out.stderr
    assert "min_rows" in out.stderr  # says how to change the rule
    from mlflow import MlflowClient

    experiments = MlflowClient().search_experiments()
    runs = MlflowClient().search_runs([e.experiment_id for e in experiments]) if experiments \
        else []
    assert runs == []  # refused before an MLflow run was created
    assert MlflowClient().search_registered_models() == []


def test_a_part_missing_a_class_is_refused_and_the_rule_can_be_relaxed() -> None:
    y = np.array([0] * 97 + [1] * 3)  # 3 positives: 1 per part at most
    with pytest.raises(DataError) as info:
        split_rows(y, SplitSpec(), classification=True)
    message = str(info.value)
    assert "class 1" in message and "min_per_class" in message
    # Counted independently of the split: 3 positives cannot give every part 2.
    relaxed = SplitSpec(min_per_class=0)
    split = split_rows(y, relaxed, classification=True)
    assert sum(int(y[getattr(split, p)].sum()) for p in ("train", "validation", "test")) == 3


def test_minimum_rows_per_part_follow_the_spec() -> None:
    y = np.array([0, 1] * 40)  # 80 rows: about 16 test, 16 validation, 48 train
    split = split_rows(y, SplitSpec(), classification=True)
    assert len(split.test) < 20
    with pytest.raises(DataError, match=rf"test {len(split.test)} rows.*at least 20"):
        split_rows(y, SplitSpec(min_rows={"test": 20}), classification=True)


def test_cross_validation_folds_need_every_class(tmp_path: Path) -> None:
    from heartflow.evaluation.cv import check_folds

    y = np.array([0] * 40 + [1] * 6)
    with pytest.raises(DataError, match=r"fold .* class 1"):
        check_folds(y, 5, 1, 0, True, 2)
    check_folds(y, 3, 1, 0, True, 2)
