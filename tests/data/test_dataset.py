"""Data sources, reading, the encoder's rules, splits."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.data.dataset import prepare_features
from heartflow.data.encoder import TabularEncoder
from heartflow.data.prepare import prepare
from heartflow.data.sources import NAMED_DATASETS, resolve_source
from heartflow.data.split import split_rows
from heartflow.errors import DataError
from heartflow.spec import load_spec
from heartflow.spec.schema import SplitSpec
from tests.conftest import ROOT, heart_csv, heart_spec


def test_generated_heart_data_encodes_to_one_hot_plus_numeric(tmp_path: Path) -> None:
    heart_csv(tmp_path / "heart.csv", rows=400)
    prepared = prepare(load_spec(str(heart_spec(tmp_path / "s.yaml"))))
    enc = prepared.encoder
    # 6 numeric + sex 2 + cp 4 + fbs 2 + restecg 3 + exang 2 + ca 4 + thal 3
    assert enc.width == 6 + 2 + 4 + 2 + 3 + 2 + 4 + 3 == prepared.x.shape[1]
    train = prepared.x[prepared.split.train]
    assert np.allclose(train[:, :6].mean(axis=0), 0, atol=1e-5)  # standardised on train
    assert np.allclose(prepared.x[:, 6:].sum(axis=1), 7)  # one level per categorical column


def test_encoder_fills_missing_and_zeroes_unseen_levels() -> None:
    frame = pd.DataFrame({"age": ["50", "60", "70", "?"], "thal": ["a", "b", "b", None]})
    typed = prepare_features(frame, ["age"], ["thal"], ["?"])
    enc = TabularEncoder(["age"], ["thal"], ["?"]).fit(typed, np.array([0, 1, 2]))
    assert enc.medians["age"] == 60 and enc.modes["thal"] == "b"
    x = enc.transform(typed)
    assert x[3, 0] == pytest.approx((60 - 60) / enc.stds["age"])  # median-filled
    assert list(x[3, 1:]) == [0, 1]  # missing category -> training mode
    scoring = prepare_features(pd.DataFrame({"age": [55], "thal": ["zzz"]}), ["age"], ["thal"],
                               [])
    assert list(enc.transform(scoring)[0, 1:]) == [0, 0]  # unseen -> all zeros
    assert enc.unseen_levels(scoring) == {"thal": ["zzz"]}


def test_encoder_state_round_trips_as_json(tmp_path: Path) -> None:
    typed = prepare_features(pd.DataFrame({"a": ["1", "2"], "c": ["x", "y"]}), ["a"], ["c"], [])
    enc = TabularEncoder(["a"], ["c"]).fit(typed)
    enc.save(str(tmp_path / "e.json"))
    again = TabularEncoder.load(str(tmp_path / "e.json"))
    assert np.array_equal(again.transform(typed), enc.transform(typed))


def test_integral_float_levels_match_integer_levels() -> None:
    typed = prepare_features(pd.DataFrame({"ca": ["1.0", "1", 1, 2.0]}), [], ["ca"], [])
    assert list(typed["ca"]) == ["1", "1", "1", "2"]


def test_stratified_split_is_seeded_and_proportional() -> None:
    y = np.array([0] * 800 + [1] * 200)
    a = split_rows(y, SplitSpec(test=0.2, validation=0.2, seed=1), True)
    b = split_rows(y, SplitSpec(test=0.2, validation=0.2, seed=1), True)
    c = split_rows(y, SplitSpec(test=0.2, validation=0.2, seed=2), True)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "test"))
    assert not np.array_equal(a.test, c.test)
    # Fixed cut-offs: each class's test count is Binomial(n_c, 0.2), within 4 sd.
    for label, n in ((0, 800), (1, 200)):
        assert abs(int(np.sum(y[a.test] == label)) - 0.2 * n) <= 4 * np.sqrt(n * 0.2 * 0.8)
    assert not set(a.train) & set(a.test) and not set(a.validation) & set(a.test)
    assert len(a.train) + len(a.validation) + len(a.test) == len(y)


def test_named_source_is_found_in_data_dir(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "uci-heart").mkdir()
    (tmp_path / "uci-heart" / "processed.cleveland.data").write_text("1,2\n")
    monkeypatch.setenv("HEARTFLOW_DATA_DIR", str(tmp_path))
    resolved = resolve_source("uci-cleveland")
    assert resolved.path == tmp_path / "uci-heart" / "processed.cleveland.data"
    assert resolved.columns and resolved.columns[-1] == "num"


def test_offline_named_source_says_where_to_put_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HEARTFLOW_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HEARTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    import dataclasses

    offline = dataclasses.replace(NAMED_DATASETS["heart-csv"], url="http://127.0.0.1:9/h.csv")
    monkeypatch.setitem(NAMED_DATASETS, "heart-csv", offline)
    with pytest.raises(DataError) as info:
        resolve_source("heart-csv")
    assert "HEARTFLOW_DATA_DIR" in str(info.value) and "heart.csv" in str(info.value)


@pytest.fixture
def http_file(tmp_path: Path):
    """Serve tmp_path/served over HTTP on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(served), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_download_checks_sha256_and_caches(tmp_path: Path, http_file, monkeypatch) -> None:
    served, base = http_file
    monkeypatch.setenv("HEARTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    heart_csv(served / "h.csv", rows=50)
    digest = hashlib.sha256((served / "h.csv").read_bytes()).hexdigest()
    with pytest.raises(DataError) as info:
        resolve_source(f"{base}/h.csv", sha256="0" * 64)
    assert "checksum mismatch" in str(info.value) and digest in str(info.value)
    got = resolve_source(f"{base}/h.csv", sha256=digest)
    assert got.path.read_bytes() == (served / "h.csv").read_bytes()
    (served / "h.csv").unlink()  # now only the cache has it
    assert resolve_source(f"{base}/h.csv", sha256=digest).path == got.path


@pytest.mark.realdata
def test_heart_csv_gives_29_inputs(shared_data: Path) -> None:
    prepared = prepare(load_spec(str(ROOT / "specs/heart_16.yaml")))
    assert prepared.width == 29
    assert len(prepared.dataset) == 303 and prepared.dataset.y.sum() == 83


@pytest.mark.realdata
def test_uci_file_reads_without_header_with_missing_values(shared_data: Path) -> None:
    prepared = prepare(load_spec(str(ROOT / "specs/uci_cleveland_16.yaml")))
    assert len(prepared.dataset) == 303
    assert int(prepared.dataset.y.sum()) == 139  # num > 0
    assert prepared.dataset.features["ca"].isna().sum() == 4
    assert prepared.dataset.features["thal"].isna().sum() == 2
    assert prepared.encoder.levels["thal"] == ["3", "6", "7"]
    assert not np.isnan(prepared.x).any()
