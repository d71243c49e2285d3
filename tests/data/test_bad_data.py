"""The bad-data corpus: each case gets an error naming the column (and row), or the
documented handling; a failing `heartflow run` registers nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heartflow.data.prepare import prepare
from heartflow.errors import DataError
from heartflow.spec import load_spec
from tests.conftest import cli, heart_spec

HEADER = "age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,target"


ROWS = 120  # enough for every part's minimum, whichever rows the hash cut-offs give it


def rows(n: int = ROWS, seed: int = 3) -> list[str]:
    from heartflow.data.synthetic import heart_like

    frame = heart_like(n, seed)
    frame.loc[: min(n, 6) - 1, "target"] = [0, 1, 0, 1, 0, 1][:min(n, 6)]  # both classes
    return frame.astype(str).apply(",".join, axis=1).tolist()


def table(body: list[str] | None = None, header: str = HEADER) -> str:
    return "\n".join([header, *(rows() if body is None else body)]) + "\n"


def with_cell(column: str, row: int, value: str) -> str:
    names = HEADER.split(",")
    body = rows()
    cells = body[row].split(",")
    cells[names.index(column)] = value
    body[row] = ",".join(cells)
    return table(body)


def three_class_target() -> str:
    body = rows()
    body = [",".join([*r.split(",")[:-1], str(i % 3)]) for i, r in enumerate(body)]
    return table(body)


def one_class_target() -> str:
    body = [",".join([*r.split(",")[:-1], "0"]) for r in rows()]
    return table(body)


def all_missing(column: str) -> str:
    names = HEADER.split(",")
    out = []
    for r in rows():
        cells = r.split(",")
        cells[names.index(column)] = ""
        out.append(",".join(cells))
    return table(out)


def constant(column: str, value: str) -> str:
    names = HEADER.split(",")
    out = []
    for r in rows():
        cells = r.split(",")
        cells[names.index(column)] = value
        out.append(",".join(cells))
    return table(out)


# (case, file bytes, expected words in the error; None means the documented handling works)
ERRORS: list[tuple[str, bytes, list[str]]] = [
    ("missing_column", table([",".join(r.split(",")[:12] + r.split(",")[13:]) for r in rows()],
                             HEADER.replace(",thal,", ",")).encode(),
     ["'thal'", "not in the data"]),
    ("all_missing_column", all_missing("chol").encode(), ["'chol'", "no values"]),
    ("text_in_numeric", with_cell("chol", 7, "high").encode(),
     ["'chol'", "row 8", "line 9", "'high'", "not a number"]),
    ("three_class_target", three_class_target().encode(), ["'target'", "3 classes", "positive"]),
    ("one_class_target", one_class_target().encode(), ["'target'", "only one class"]),
    ("too_few_rows", table(rows(4)[:3]).encode(),
     ["3 rows are not enough", "rows (at least 20 needed)", "min_rows"]),
    ("empty_file", b"", ["empty"]),
    ("whitespace_only", b"   \n\n", ["empty"]),
    ("header_only", (HEADER + "\n").encode(), ["no data rows"]),
    ("semicolon_delimiter", table().replace(",", ";").encode(), ["';'", "delimiter"]),
    ("infinite_value", with_cell("oldpeak", 3, "inf").encode(),
     ["'oldpeak'", "row 4", "not a finite number"]),
    ("nan_text_is_missing_but_huge_is_not", with_cell("chol", 2, "1e300").encode(),
     ["'chol'", "row 3", "outside the supported range"]),
    ("duplicate_columns", table(header=HEADER.replace("fbs", "chol")).encode(),
     ["duplicate column", "chol"]),
    ("non_utf8", table().replace("normal", "n\u00e9rmal").encode("latin-1"),
     ["not UTF-8", "line"]),
    ("ragged_row", (table() + "1,2,3\n").encode(), ["fields", "header has 14"]),
    ("missing_target_value", with_cell("target", 4, "").encode(),
     ["'target'", "missing", "row 5"]),
    ("two_text_labels", table([",".join([*r.split(",")[:-1], "yes" if i % 2 else "no"])
                               for i, r in enumerate(rows())]).encode(),
     ["'target'", "positive"]),
]

HANDLED: list[tuple[str, bytes]] = [
    ("utf8_bom", b"\xef\xbb\xbf" + table().encode()),
    ("crlf_line_endings", table().replace("\n", "\r\n").encode()),
    ("constant_numeric_column", constant("trestbps", "120").encode()),
    ("constant_categorical_column", constant("fbs", "0").encode()),
    ("missing_values_in_features", with_cell("chol", 3, "?").replace(",2,", ",,", 1).encode()),
    ("blank_lines", (table() + "\n\n").encode()),
]


def _spec_for(tmp_path: Path, data: bytes) -> str:
    (tmp_path / "heart.csv").write_bytes(data)
    return str(heart_spec(tmp_path / "spec.yaml", epochs=2))


@pytest.mark.parametrize(("case", "data", "words"), ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_data_is_named(tmp_path: Path, case: str, data: bytes, words: list[str]) -> None:
    loaded = load_spec(_spec_for(tmp_path, data))
    with pytest.raises(DataError) as info:
        prepare(loaded)
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize(("case", "data"), HANDLED, ids=[c[0] for c in HANDLED])
def test_documented_handling(tmp_path: Path, case: str, data: bytes) -> None:
    prepared = prepare(load_spec(_spec_for(tmp_path, data)))
    assert len(prepared.dataset) == ROWS
    assert prepared.width == prepared.x.shape[1] and not np.isnan(prepared.x).any()


def test_bad_data_run_exits_3_and_registers_nothing(tmp_path: Path) -> None:
    spec = _spec_for(tmp_path, with_cell("chol", 7, "high").encode())
    out = cli("run", spec, cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "'chol'" in out.stderr and "row 8" in out.stderr and "Traceback" not in out.stderr
    from mlflow import MlflowClient

    client = MlflowClient()
    assert client.search_registered_models() == []
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs == []
