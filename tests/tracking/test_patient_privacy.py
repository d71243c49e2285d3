"""Patient data stays where it belongs: no artifact of a run or a registered version holds a
patient's row; population summaries hold no figure from fewer than 5 patients; every row key
that is written down is keyed by a secret (the split stays the same on every machine), and
keys made under another secret, or in an older format, are never trusted by the gate."""

from __future__ import annotations

import hmac
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from heartflow.data.split import RowKeyer, row_keys
from heartflow.data.summary import population_summary
from heartflow.data.synthetic import CATEGORICAL, NUMERIC
from heartflow.errors import TrackingError
from heartflow.tracking.row_secret import SECRET_ENV, SECRET_FILE, row_key_secret
from tests.conftest import heart_csv, heart_spec

FEATURES = NUMERIC + CATEGORICAL


# -- finding a patient's row in text ---------------------------------------------------------

def _cell(column: str, value: object) -> object:
    """A cell as a comparable value: numbers as rounded floats, levels as canonical text."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if column in NUMERIC:
        try:
            return round(float(value), 6)
        except (TypeError, ValueError):
            return ("text", str(value))
    text = str(value).strip()
    try:
        number = float(text)
        return str(int(number)) if number.is_integer() else str(number)
    except ValueError:
        return text


def _row_set(csv_path: Path) -> set[tuple]:
    frame = pd.read_csv(csv_path)
    return {tuple(_cell(c, v) for c, v in zip(FEATURES, row, strict=True))
            for row in frame[FEATURES].itertuples(index=False)}


def _records(obj: object):
    """Every record a JSON document holds: pandas 'split' tables ({columns, data}), and any
    object with all the feature columns as keys."""
    if isinstance(obj, dict):
        columns, data = obj.get("columns"), obj.get("data")
        if isinstance(columns, list) and isinstance(data, list):
            for row in data:
                if isinstance(row, list) and len(row) == len(columns):
                    yield dict(zip(columns, row, strict=True))
        if all(c in obj for c in FEATURES):
            yield obj
        for value in obj.values():
            yield from _records(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _records(value)


def _texts(folder: Path) -> dict[str, str]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                found[str(path.relative_to(folder))] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary: the network's weights, plots
    return found


def _patient_rows_in(name: str, text: str, rows: set[tuple], raw_lines: set[str]) -> list:
    """Records in a text artifact equal to a patient's row on every feature column, and
    lines of the data file found verbatim."""
    hits = []
    candidates: list[dict] = []
    if name.endswith(".json") or text.lstrip().startswith(("{", "[")):
        try:
            candidates += list(_records(json.loads(text)))
        except ValueError:
            pass
    if name.endswith(".csv"):
        frame = pd.read_csv(io.StringIO(text))
        if set(FEATURES) <= set(frame.columns):
            candidates += frame.to_dict("records")
    for record in candidates:
        if all(c in record for c in FEATURES):
            key = tuple(_cell(c, record[c]) for c in FEATURES)
            if key in rows:
                hits.append((name, record))
    hits += [(name, line) for line in raw_lines if line in text]
    return hits


def _download_everything(run_ids: list[str], model_uris: list[str], into: Path) -> Path:
    for run_id in run_ids:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="",
                                            dst_path=str(into / run_id))
    for i, uri in enumerate(model_uris):
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into / f"model{i}"))
    return into


@pytest.mark.slow
def test_no_patient_row_in_any_artifact_tag_or_parameter(tmp_path: Path, prefect_server,
                                                         monkeypatch) -> None:
    import heartflow as hf

    monkeypatch.delenv(SECRET_ENV, raising=False)  # the local store's own secret
    data = heart_csv(tmp_path / "heart.csv", rows=300, seed=3)
    site = heart_csv(tmp_path / "site.csv", rows=160, seed=4)
    result = hf.run(heart_spec(tmp_path / "spec.yaml", epochs=3))
    recalibrated = hf.recalibrate(f"models:/heart-test/{result.version}", str(site),
                                  method="intercept", site="b")
    client = mlflow.MlflowClient()
    run_ids = [result.run_id, recalibrated.run_id]
    models = [f"models:/heart-test/{result.version}",
              f"models:/heart-test/{recalibrated.new_version}"]
    folder = _download_everything(run_ids, models, tmp_path / "downloaded")
    texts = _texts(folder)
    assert any(n.endswith("input_example.json") for n in texts)  # the model's example is here
    assert any(n.endswith("serving_input_example.json") for n in texts)
    assert any(n.endswith("split/manifest.csv") for n in texts)
    assert any(n.endswith("data/population.json") for n in texts)
    for run_id in run_ids:  # tags and parameters too
        run = client.get_run(run_id)
        texts[f"{run_id}/tags.json"] = json.dumps(run.data.tags)
        texts[f"{run_id}/params.json"] = json.dumps(run.data.params)
    rows = _row_set(data) | _row_set(site)
    raw = {line for f in (data, site) for line in f.read_text().splitlines()[1:]}
    raw |= {line.rsplit(",", 1)[0] for line in raw}  # the row without its label
    hits = [hit for name, text in texts.items() for hit in _patient_rows_in(name, text, rows,
                                                                              raw)]
    assert not hits, hits[:5]
    # The example is one synthetic record: the training medians and modes, as documented.
    example = next(json.loads(t) for n, t in texts.items()
                   if n.startswith("model0") and n.endswith("/input_example.json"))
    encoder = json.loads(texts[f"{result.run_id}/preprocessing/encoder.json"])
    record = dict(zip(example["columns"], example["data"][0], strict=True))
    assert len(example["data"]) == 1
    assert {c: record[c] for c in NUMERIC} == encoder["medians"]
    assert {c: str(record[c]) for c in CATEGORICAL} == encoder["modes"]
    # No row-key secret in any artifact, tag or parameter.
    secret = (tmp_path / SECRET_FILE).read_text().strip()
    assert not [n for n, t in texts.items() if secret in t]


def test_small_cells_are_suppressed_in_the_population_summary() -> None:
    n = 40
    features = pd.DataFrame({
        "age": [40.0 + i for i in range(n)],
        "chol": [np.nan] * 3 + [200.0 + i for i in range(n - 3)],   # 3 missing: small
        "ldl": [np.nan] * (n - 4) + [1.0, 2.0, 3.0, 4.0],            # 4 values: small
        "thal": ["normal"] * 30 + ["reversible"] * 6 + ["fixed"] * 4,  # fixed: small
        "cp": ["1"] * 20 + ["2"] * 18 + ["3"] * 2,                   # "3" small, pool tops up
    })
    y = np.array([1] * 3 + [0] * (n - 3))                           # 3 cases: small
    parts = {"train": np.arange(0, 30), "test": np.arange(30, 40)}
    s = population_summary(features, y, ["age", "chol", "ldl"], ["thal", "cp"], parts)
    assert s["min_cell"] == 5 and s["rows"] == 40
    assert s["outcome_rate"] is None and "suppressed" in s
    assert all(p["outcome_rate"] is None for p in s["parts"].values())
    assert s["numeric"]["age"] == {"median": pytest.approx(59.5), "q1": pytest.approx(49.75),
                                   "q3": pytest.approx(69.25), "missing": 0.0}
    chol = s["numeric"]["chol"]
    assert chol["missing"] is None and chol["median"] == pytest.approx(200 + 18)
    ldl = s["numeric"]["ldl"]
    assert ldl["median"] is ldl["q1"] is ldl["q3"] is ldl["missing"] is None
    assert "suppressed" in chol and "suppressed" in ldl
    thal = s["categorical"]["thal"]
    # fixed (4) alone would be a small pool; the next smallest level (reversible, 6) joins.
    assert thal["levels"] == {"normal": 0.75}
    assert thal["other"] == {"levels": 2, "share": 0.25, "with_missing": False}
    cp = s["categorical"]["cp"]
    assert cp["levels"] == {"1": 0.5} and cp["other"]["share"] == pytest.approx(0.5)
    assert "min" not in json.dumps(s).replace("min_cell", "")  # no extremes reported
    # Every figure shown rests on at least 5 patients, and no pool is small.
    for column in ("thal", "cp"):
        counts = features[column].value_counts()
        shown = s["categorical"][column]["levels"]
        assert all(counts[level] >= 5 for level in shown)
        assert n * s["categorical"][column]["other"]["share"] >= 5


# -- keyed row keys -------------------------------------------------------------------------

def _manifest(run_id: str) -> pd.DataFrame:
    path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                               artifact_path="split/manifest.csv")
    return pd.read_csv(path, dtype=str)


def _hmac_keys(frame: pd.DataFrame, secret: bytes) -> list[str]:
    """The documented keyed key, computed here from its definition."""
    return [hmac.new(secret, struct.pack(">Q", int(k)), "sha256").hexdigest()[:32]
            for k in row_keys(frame)]


@pytest.mark.slow
def test_manifest_keys_are_keyed_by_the_secret(tmp_path: Path, prefect_server,
                                               monkeypatch) -> None:
    import heartflow as hf
    from heartflow.tracking import registry

    data = heart_csv(tmp_path / "heart.csv", rows=240, seed=5)
    spec = heart_spec(tmp_path / "spec.yaml", epochs=1)
    a, b = "a" * 8 + "-team-secret-A", "b" * 8 + "-team-secret-B"
    monkeypatch.setenv(SECRET_ENV, a)
    first, second = hf.run(spec), hf.run(spec)
    monkeypatch.setenv(SECRET_ENV, b)
    third = hf.run(spec)
    m1, m2, m3 = (_manifest(r.run_id) for r in (first, second, third))
    assert m1.equals(m2)                                         # same secret: same keys
    assert not set(m1["key"]) & set(m3["key"])                   # another: none in common
    assert m1["part"].equals(m3["part"])                         # and the same split
    text = pd.read_csv(data, dtype=str, keep_default_na=False)
    assert list(m1["key"]) == _hmac_keys(text, a.encode())       # HMAC-SHA256 as documented
    unkeyed = {f"{int(k):016x}" for k in row_keys(text)}         # the pre-secret key
    guessed = set(_hmac_keys(text, b"heartflow-rows-1"))
    assert not (unkeyed | guessed) & set(m1["key"])              # no secret: no match
    tags = mlflow.MlflowClient().get_run(first.run_id).data.tags
    assert tags["heartflow.split.key_format"] == "hmac-sha256-128/1"
    assert a not in json.dumps(tags)
    # The gate trusts only keys made under this secret and format.
    assert not second.undecided and second.gate_rows == len(m2[m2["part"] == "test"])
    assert third.undecided and "cannot be known" in third.decision  # keys of another secret
    monkeypatch.setenv(SECRET_ENV, a)
    seen = registry.seen_keys("heart-test", first.version)
    assert seen == set(m1.loc[m1["part"] != "test", "key"])
    mlflow.MlflowClient().delete_tag(first.run_id, "heartflow.split.key_format")
    assert registry.seen_keys("heart-test", first.version) is None  # an older manifest


def test_secret_is_local_owner_only_and_one_under_races(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    code = ("import sys; from heartflow.tracking.row_secret import row_key_secret; "
            "print(row_key_secret(sys.argv[1]).hex())")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    made = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(made) == 1 and len(made.pop()) == 64
    path = tmp_path / "store" / SECRET_FILE
    assert (path.stat().st_mode & 0o777) == 0o600
    assert row_key_secret(uri).hex() == path.read_text().strip()
    path.chmod(0o644)
    with pytest.raises(TrackingError, match="readable by others"):
        row_key_secret(uri)
    with pytest.raises(TrackingError, match=SECRET_ENV):  # a server: the team's secret
        row_key_secret("http://mlflow.example:5000")
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(TrackingError, match="too short"):
        row_key_secret("http://mlflow.example:5000")
    monkeypatch.setenv(SECRET_ENV, "x" * 40)
    assert row_key_secret("http://mlflow.example:5000") == b"x" * 40
    assert "x" * 40 not in repr(RowKeyer(b"x" * 40))  # never printed
