"""The same patients written another way are the same data: a file re-exported by pandas or
by a spreadsheet (``63`` as ``63.0``, ``?`` as an empty cell) gives the same row keys, the
same missing cells (``chol`` 0 still means "not measured" when written ``0.0``), the same
typed features and the same split, in memory and streamed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.data.dataset import Dataset, dataset_from_frame, dataset_from_table
from heartflow.data.sources import UCI_COLUMNS
from heartflow.data.split import row_keys, split_rows
from heartflow.data.table import read_csv
from heartflow.spec import load_spec
from heartflow.spec.schema import Spec
from tests.conftest import ROOT

Export = Callable[[Path, Path, bool], None]


def _read(path: Path, header: bool, na: bool) -> pd.DataFrame:
    return pd.read_csv(path, header=0 if header else None, na_values=["?"] if na else None)


def _pandas(source: Path, target: Path, header: bool) -> None:
    """pandas' defaults both ways: ``?`` stays text, a column of numbers becomes float."""
    _read(source, header, na=False).to_csv(target, index=False, header=header)


def _pandas_na(source: Path, target: Path, header: bool) -> None:
    """Read with ``?`` as missing: missing cells come back empty, ``0`` as ``0.0``."""
    _read(source, header, na=True).to_csv(target, index=False, header=header)


def _spreadsheet(source: Path, target: Path, header: bool) -> None:
    """Every number written as a float with a trailing ``.0``."""
    frame = _read(source, header, na=True)
    numbers = frame.select_dtypes("number").columns
    frame[numbers] = frame[numbers].astype(float)
    frame.to_csv(target, index=False, header=header)


def _fixed_decimals(source: Path, target: Path, header: bool) -> None:
    """Every number with two decimals (``63.00``, ``2.30``), missing written ``?``."""
    frame = _read(source, header, na=True)
    numbers = frame.select_dtypes("number").columns
    frame[numbers] = frame[numbers].astype(float)
    frame.to_csv(target, index=False, header=header, float_format="%.2f", na_rep="?")


EXPORTS = {"pandas": _pandas, "pandas_na": _pandas_na, "spreadsheet": _spreadsheet,
           "fixed_decimals": _fixed_decimals}


def _dataset(spec: Spec, path: Path, header: bool) -> Dataset:
    table = read_csv(path, columns=None if header else UCI_COLUMNS)
    return dataset_from_table(table, spec)


def _missing_counts(dataset: Dataset) -> dict[str, int]:
    return {c: int(dataset.features[c].isna().sum()) for c in dataset.features.columns}


def _assert_same(original: Dataset, again: Dataset, spec: Spec) -> None:
    assert original.keys is not None and again.keys is not None
    assert np.array_equal(again.keys, original.keys)
    assert _missing_counts(again) == _missing_counts(original)
    pd.testing.assert_frame_equal(again.features, original.features)
    assert np.array_equal(again.y, original.y)
    split = spec.data.split
    one = split_rows(original.y, split, True, original.classes, original.keys)
    two = split_rows(again.y, split, True, again.classes, again.keys)
    for part in ("train", "validation", "test"):
        assert np.array_equal(getattr(one, part), getattr(two, part))


@pytest.mark.realdata
@pytest.mark.parametrize("export", EXPORTS)
def test_re_exported_heart_csv_is_the_same_data(export: str, shared_data: Path,
                                                tmp_path: Path) -> None:
    spec = load_spec(str(ROOT / "specs/heart_16.yaml")).spec
    source = shared_data / "heart.csv"
    EXPORTS[export](source, tmp_path / "again.csv", True)
    assert (tmp_path / "again.csv").read_bytes() != source.read_bytes()  # the text differs
    _assert_same(_dataset(spec, source, True), _dataset(spec, tmp_path / "again.csv", True),
                 spec)


@pytest.mark.realdata
@pytest.mark.parametrize("export", EXPORTS)
def test_re_exported_va_file_keeps_its_missing_codes(export: str, shared_data: Path,
                                                     tmp_path: Path) -> None:
    spec = load_spec(str(ROOT / "specs/uci_cleveland_16.yaml")).spec  # chol 0: not measured
    source = shared_data / "uci-heart" / "processed.va.data"
    EXPORTS[export](source, tmp_path / "again.data", False)
    original = _dataset(spec, source, False)
    assert int(original.features["chol"].isna().sum()) == 7 + 49  # '?' and 0
    assert not (original.features["chol"] == 0).any()
    _assert_same(original, _dataset(spec, tmp_path / "again.data", False), spec)


def test_missing_codes_and_na_values_compare_numbers() -> None:
    from heartflow.data.dataset import prepare_features

    frame = pd.DataFrame({"chol": ["0", "0.0", " 0.00 ", "-0", "0e0", "200", "?", "", "2e2"],
                          "ca": ["-9", "-9.0", "1.0", "1", "?", "", "-9.00", "0", "2"]})
    typed = prepare_features(frame, ["chol"], ["ca"], ["?", "-9"], missing_codes={"chol": ["0"]})
    assert typed["chol"].isna().tolist() == [True] * 5 + [False, True, True, False]
    assert typed["chol"].iloc[[5, 8]].tolist() == [200.0, 200.0]
    assert typed["ca"].tolist() == [None, None, "1", "1", None, None, None, "0", "2"]


def test_keys_hash_typed_cells() -> None:
    text = pd.DataFrame({"a": ["63", "63.0", "+63.00", "6.3e1", "2.30", "?", "", " x "],
                         "b": ["1"] * 8})
    keys = row_keys(text)
    assert len(set(keys[:4].tolist())) == 1  # one number, four spellings
    assert keys[4] == row_keys(pd.DataFrame({"a": ["2.3"], "b": ["1.0"]}))[0]
    assert keys[5] == keys[6]  # a missing cell, whichever token wrote it
    assert keys[7] == row_keys(pd.DataFrame({"a": ["x"], "b": [1]}))[0]
    assert len(set(keys.tolist())) == 4
    big = pd.DataFrame({"id": ["9007199254740993", "9007199254740992"]})  # 2**53 + 1, 2**53
    assert len(set(row_keys(big).tolist())) == 2  # long integer ids stay exact


def test_a_frame_and_its_csv_have_the_same_keys(tmp_path: Path) -> None:
    from heartflow.data.synthetic import heart_like
    from tests.conftest import heart_spec

    spec = load_spec(str(heart_spec(tmp_path / "s.yaml"))).spec
    frame = heart_like(200, seed=3)
    frame["oldpeak"] = frame["oldpeak"].astype(float)
    frame.loc[::9, "chol"] = np.nan  # a float column: 233.0 in the frame
    frame.to_csv(tmp_path / "heart.csv", index=False)
    from_file = dataset_from_table(read_csv(tmp_path / "heart.csv"), spec)
    from_frame = dataset_from_frame(frame, spec)
    assert np.array_equal(from_frame.keys, from_file.keys)
    pd.testing.assert_frame_equal(from_frame.features, from_file.features)


@pytest.mark.realdata
@pytest.mark.parametrize("export", ["pandas_na", "spreadsheet"])
def test_streamed_va_file_applies_missing_codes_and_keys_like_memory(
        export: str, shared_data: Path, tmp_path: Path) -> None:
    from heartflow.data.streaming import scan

    spec = load_spec(str(ROOT / "specs/uci_cleveland_16.yaml")).spec
    EXPORTS[export](shared_data / "uci-heart" / "processed.va.data", tmp_path / "va.data", False)
    for path in (shared_data / "uci-heart" / "processed.va.data", tmp_path / "va.data"):
        dataset = _dataset(spec, path, False)
        stats = scan(spec, str(path), UCI_COLUMNS, chunk_rows=64)
        assert stats.cache is not None
        numeric, _codes, _y = stats.cache.block(0, stats.rows)
        for j, column in enumerate(spec.data.features.numeric):
            assert np.array_equal(numeric[:, j], dataset.features[column].to_numpy(),
                                  equal_nan=True), column
        split = split_rows(dataset.y, spec.data.split, True, dataset.classes, dataset.keys)
        assert set(stats.sample_keys["test"].tolist()) == set(dataset.keys[split.test].tolist())
