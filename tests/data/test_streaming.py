"""Streaming: the same encodings as the in-memory encoder, and a run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.data.dataset import load_dataset
from heartflow.data.encoder import TabularEncoder
from heartflow.data.sources import resolve_source
from heartflow.data.streaming import part_batches, scan
from heartflow.data.synthetic import heart_like
from heartflow.spec import load_spec
from tests.conftest import cli, heart_spec


def _awkward_csv(path: Path, rows: int = 3000) -> None:
    frame = heart_like(rows, seed=11).astype(object)
    frame.insert(0, "rid", range(rows))    # a row id, so tests can tell which rows streamed
    frame.loc[::97, "chol"] = "?"          # missing numeric
    frame.loc[::89, "thal"] = ""           # missing categorical
    frame.loc[::7, "ca"] = frame.loc[::7, "ca"].map(lambda v: f"{v}.0")  # '2.0' is level '2'
    frame.to_csv(path, index=False)


def _streaming_spec(tmp_path: Path) -> Path:
    spec = heart_spec(tmp_path / "s.yaml", epochs=3)
    spec.write_text(spec.read_text().replace("  split: {test: 0.2, validation: 0.2, "
                                             "stratify: true, seed: 42}",
                                             "  split: {test: 0.2, validation: 0.2, seed: 42}\n"
                                             "  streaming: true"))
    return spec


def test_streaming_statistics_and_encodings_match_in_memory(tmp_path: Path) -> None:
    _awkward_csv(tmp_path / "heart.csv")
    spec_path = _streaming_spec(tmp_path)
    spec_path.write_text(spec_path.read_text().replace("numeric: [", "numeric: [rid, "))
    loaded = load_spec(str(spec_path))
    spec = loaded.spec
    path = str(tmp_path / "heart.csv")
    stats = scan(spec, path, None, chunk_rows=700)

    dataset = load_dataset(spec, resolve_source(spec.data.source, loaded.base_dir))
    # Which rows went to each part, read back from the streamed row ids (column 0),
    # not from the split function under test.
    enc = stats.encoder
    rows_of = {}
    for part in (0, 1, 2):
        x = np.concatenate([b[0] for b in part_batches(stats, part, 512)])
        rows_of[part] = np.sort(np.rint(x[:, 0] * enc.stds["rid"] + enc.means["rid"]).astype(int))
    assert np.array_equal(np.sort(np.concatenate(list(rows_of.values()))),
                          np.arange(len(dataset)))  # a partition of the rows
    train_rows = rows_of[0]
    reference = TabularEncoder(list(spec.data.features.numeric),
                               list(spec.data.features.categorical),
                               list(spec.data.na_values)).fit(dataset.features, train_rows)
    got, want = stats.encoder.to_dict(), reference.to_dict()
    assert got["levels"] == want["levels"] and got["modes"] == want["modes"]
    assert got["medians"] == want["medians"]
    for key in ("means", "stds"):
        for column, value in want[key].items():
            assert got[key][column] == pytest.approx(value, rel=1e-9)
    assert stats.parts["train"] == len(train_rows)

    streamed = np.concatenate([x for x, _y in part_batches(stats, 0, 256)])
    in_memory = reference.transform(dataset.features.iloc[train_rows])
    assert streamed.shape == in_memory.shape
    assert np.allclose(streamed, in_memory, atol=1e-5)
    labels = np.concatenate([y.ravel() for _x, y in part_batches(stats, 0, 256)])
    # Shuffled batches (each epoch its own order) hold the same rows, batch_size at a time.
    shuffled = list(part_batches(stats, 0, 256, shuffle_seed=7, epoch=1))
    assert all(len(b[1]) == 256 for b in shuffled[:-1])
    mixed = np.concatenate([x for x, _y in shuffled])
    assert not np.array_equal(mixed, streamed)
    assert np.allclose(np.sort(mixed, axis=0), np.sort(streamed, axis=0))
    assert np.array_equal(labels, dataset.y[train_rows])


def test_streaming_rejects_text_in_numeric_column(tmp_path: Path) -> None:
    frame = heart_like(500, seed=2).astype(object)
    frame.loc[321, "age"] = "old"
    frame.to_csv(tmp_path / "heart.csv", index=False)
    loaded = load_spec(str(_streaming_spec(tmp_path)))
    from heartflow.errors import DataError

    with pytest.raises(DataError, match=r"column 'age', row 322: 'old' is not a number"):
        scan(loaded.spec, str(tmp_path / "heart.csv"), None, chunk_rows=100)


@pytest.mark.slow
def test_streaming_run_end_to_end(tmp_path: Path, prefect_server) -> None:
    _awkward_csv(tmp_path / "heart.csv", rows=4000)
    spec = _streaming_spec(tmp_path)
    out = cli("run", "-q", "--json", str(spec), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    outcome = json.loads(out.stdout)
    assert outcome["extra"]["streaming"] is True and outcome["version"] == "1"
    assert sum(outcome["split"].values()) == 4000
    from mlflow import MlflowClient

    run = MlflowClient().get_run(outcome["run_id"])
    assert run.data.tags["heartflow.streaming"] == "true"
    frame = pd.read_csv(tmp_path / "heart.csv").head(20).drop(columns=["target"])
    frame.to_csv(tmp_path / "score.csv", index=False)
    scored = cli("predict", "models:/heart-test/1", str(tmp_path / "score.csv"), cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert len(scored.stdout.strip().splitlines()) == 21
