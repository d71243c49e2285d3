"""A row's part comes from a hash of its key and the seed: rows keep their part as data grows,
seeds give independent splits, streamed samples come from the whole part, and category
levels the training rows never held encode as zeros."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.data.encoder import TabularEncoder
from heartflow.data.split import row_keys, split_rows
from heartflow.data.synthetic import heart_like
from heartflow.errors import DataError
from heartflow.spec.schema import SplitSpec
from tests.conftest import heart_spec


def _parts(frame: pd.DataFrame, seed: int = 42) -> dict[int, str]:
    text = frame.astype(str)
    split = split_rows(frame["target"].to_numpy(), SplitSpec(seed=seed), True,
                       keys=row_keys(text))
    out = {}
    for part in ("train", "validation", "test"):
        for row in getattr(split, part):
            out[int(frame["rid"].iloc[row])] = part
    return out


def test_rows_keep_their_part_when_the_data_grows() -> None:
    rows = heart_like(303, seed=4)
    rows.insert(0, "rid", range(303))
    before, after = _parts(rows.iloc[:240]), _parts(rows)
    assert all(before[r] == after[r] for r in before)  # no row moves when rows are added
    shuffled = _parts(rows.sample(frac=1, random_state=0))
    assert shuffled == after  # the file's row order plays no part
    for part, fraction in (("test", 0.2), ("validation", 0.2)):  # binomial shares
        count = sum(p == part for p in after.values())
        assert abs(count - 303 * fraction) <= _binomial_tolerance(303, fraction)


def test_seeds_give_independent_splits() -> None:
    rows = heart_like(3000, seed=5)
    rows.insert(0, "rid", range(3000))
    one, two = _parts(rows, seed=1), _parts(rows, seed=2)
    both_test = np.mean([one[r] == "test" and two[r] == "test" for r in one])
    assert both_test == pytest.approx(0.2 * 0.2, abs=0.015)


def test_an_id_column_is_the_key_and_must_be_unique(tmp_path: Path) -> None:
    from heartflow.data.dataset import dataset_from_frame
    from heartflow.spec import load_spec

    frame = heart_like(100, seed=6)
    frame.insert(0, "patient", [f"p{i}" for i in range(100)])
    spec = heart_spec(tmp_path / "s.yaml")
    spec.write_text(spec.read_text().replace("  target: target", "  id: patient\n"
                                             "  target: target"))
    loaded = load_spec(str(spec))
    first = dataset_from_frame(frame, loaded.spec)
    changed = frame.copy()
    changed.loc[10, "chol"] = 999  # a corrected cell does not move the row
    assert np.array_equal(dataset_from_frame(changed, loaded.spec).keys, first.keys)
    frame.loc[20, "patient"] = "p3"
    with pytest.raises(DataError, match=r"id column 'patient' repeats the value 'p3'"):
        dataset_from_frame(frame, loaded.spec)


def test_streamed_split_proportions_seeds_and_samples(tmp_path: Path) -> None:
    from heartflow.data.streaming import SAMPLE_ROWS, scan
    from heartflow.spec import load_spec

    n = 120_000
    frame = heart_like(n, seed=7).sort_values("target", kind="stable")  # a sorted file
    frame.to_csv(tmp_path / "heart.csv", index=False)
    spec = heart_spec(tmp_path / "s.yaml", epochs=1)
    spec.write_text(spec.read_text().replace(
        "  split: {test: 0.2, validation: 0.2, stratify: true, seed: 42}",
        "  split: {test: 0.2, validation: 0.2, seed: 42}\n  streaming: true"))
    loaded = load_spec(str(spec))
    stats = scan(loaded.spec, str(tmp_path / "heart.csv"), None, chunk_rows=20_000)
    for part, fraction in (("test", 0.2), ("validation", 0.2), ("train", 0.6)):
        assert abs(stats.parts[part] / n - fraction) < 0.01
    loaded.spec.data.split.seed = 43
    other = scan(loaded.spec, str(tmp_path / "heart.csv"), None, chunk_rows=20_000)
    both = np.mean((stats.row_parts == 2) & (other.row_parts == 2))
    assert both == pytest.approx(0.04, abs=0.005)  # independent, not the same rows
    # The samples are drawn from the whole part: on a file sorted by the label, the
    # first rows of a part would all be negatives.
    prevalence = frame["target"].mean()
    assert len(stats.sample_y["validation"]) == min(SAMPLE_ROWS, stats.parts["validation"])
    assert stats.sample_y["validation"].mean() == pytest.approx(prevalence, abs=0.02)
    assert stats.sample_y["test"].mean() == pytest.approx(prevalence, abs=0.02)


def test_levels_never_in_training_rows_encode_as_zeros() -> None:
    features = pd.DataFrame({"thal": ["normal", "fixed", "normal", "rare"],
                             "age": [50.0, 60.0, 55.0, 65.0]})
    encoder = TabularEncoder(["age"], ["thal"]).fit(features, np.array([0, 1, 2]))
    assert encoder.width == 1 + 3  # the schema keeps every level: the width is stable
    x = encoder.transform(features)
    assert x[3, 1:].tolist() == [0.0, 0.0, 0.0]  # 'rare' only in a held-out row
    assert x[0, 1:].sum() == 1.0 and x[1, 1:].sum() == 1.0
    assert encoder.unseen_levels(features) == {"thal": ["rare"]}


def _binomial_tolerance(n: int, fraction: float) -> float:
    """Four standard deviations of a Binomial(n, fraction) count."""
    return 4 * math.sqrt(n * fraction * (1 - fraction))


@pytest.mark.realdata
def test_heart_csv_rows_keep_their_part_from_240_to_303_rows(shared_data: Path,
                                                             tmp_path: Path) -> None:
    from heartflow.data.dataset import load_dataset
    from heartflow.data.sources import resolve_source
    from heartflow.spec import load_spec
    from tests.conftest import ROOT

    lines = (shared_data / "heart.csv").read_text().splitlines(keepends=True)
    (tmp_path / "first.csv").write_text("".join(lines[:241]))  # the header and 240 rows
    spec = load_spec(str(ROOT / "specs/heart_16.yaml")).spec
    parts = []
    for path in (tmp_path / "first.csv", shared_data / "heart.csv"):
        dataset = load_dataset(spec, resolve_source(str(path)))
        split = split_rows(dataset.y, spec.data.split, True, dataset.classes, dataset.keys)
        part = np.empty(len(dataset), dtype=object)
        for name in ("train", "validation", "test"):
            part[getattr(split, name)] = name
        parts.append(part)
    before, after = parts
    assert len(before) == 240 and len(after) == 303
    moved = np.flatnonzero(before != after[:240])
    assert moved.tolist() == []  # no existing row changes part when rows are added


def _part_codes(split) -> np.ndarray:
    codes = np.empty(len(split.train) + len(split.validation) + len(split.test), np.uint8)
    for name, code in (("train", 0), ("validation", 1), ("test", 2)):
        codes[getattr(split, name)] = code
    return codes


@pytest.mark.parametrize("stratify", [True, False])
def test_streamed_and_in_memory_splits_put_every_row_in_the_same_part(
        tmp_path: Path, stratify: bool) -> None:
    from heartflow.data.dataset import load_dataset
    from heartflow.data.sources import resolve_source
    from heartflow.data.streaming import scan
    from heartflow.spec import load_spec

    heart_like(5000, seed=12).to_csv(tmp_path / "heart.csv", index=False)
    spec_path = heart_spec(tmp_path / "s.yaml")
    spec_path.write_text(spec_path.read_text().replace("stratify: true",
                                                       f"stratify: {str(stratify).lower()}"))
    spec = load_spec(str(spec_path)).spec
    dataset = load_dataset(spec, resolve_source(str(tmp_path / "heart.csv")))
    split = split_rows(dataset.y, spec.data.split, True, dataset.classes, dataset.keys)
    stats = scan(spec, str(tmp_path / "heart.csv"), None, chunk_rows=777)
    assert np.array_equal(stats.row_parts, _part_codes(split))
    assert stats.parts == split.sizes()


@pytest.mark.realdata
def test_streamed_and_in_memory_heart_csv_splits_agree(shared_data: Path) -> None:
    from heartflow.data.dataset import load_dataset
    from heartflow.data.sources import resolve_source
    from heartflow.data.streaming import scan
    from heartflow.spec import load_spec
    from tests.conftest import ROOT

    spec = load_spec(str(ROOT / "specs/heart_16.yaml")).spec
    resolved = resolve_source(spec.data.source)
    dataset = load_dataset(spec, resolved)
    split = split_rows(dataset.y, spec.data.split, True, dataset.classes, dataset.keys)
    stats = scan(spec, str(resolved.path), None, chunk_rows=50)
    assert np.array_equal(stats.row_parts, _part_codes(split))


def test_split_shares_are_binomial_around_the_fractions() -> None:
    """Fixed cut-offs: each class's shares are Binomial(n_c, fraction) counts."""
    y = np.array([0] * 6000 + [1] * 2000)
    spec = SplitSpec(test=0.2, validation=0.1, seed=3)
    split = split_rows(y, spec, True)
    for label, n in ((0, 6000), (1, 2000)):
        for part, fraction in (("test", 0.2), ("validation", 0.1), ("train", 0.7)):
            count = int(np.sum(y[getattr(split, part)] == label))
            assert abs(count - n * fraction) <= _binomial_tolerance(n, fraction), (label, part)


def test_a_streamed_split_records_exactly_its_training_and_validation_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seen-rows file of a streamed run: HMAC-SHA256 of each train or validation row's
    key, first 64 bits, computed here with hmac from the in-memory split."""
    import hashlib
    import hmac

    from heartflow.data import streaming
    from heartflow.data.dataset import load_dataset
    from heartflow.data.sources import resolve_source
    from heartflow.data.split import KeyPrefixes, RowKeyer
    from heartflow.spec import load_spec

    path = tmp_path / "heart.csv"
    heart_like(3000, seed=13).to_csv(path, index=False)
    spec_path = heart_spec(tmp_path / "s.yaml")
    spec_path.write_text(spec_path.read_text().replace(
        "stratify: true, seed: 42}", "seed: 42}\n  streaming: true"))
    spec = load_spec(str(spec_path)).spec
    dataset = load_dataset(spec, resolve_source(str(path)))
    split = split_rows(dataset.y, spec.data.split, True, dataset.classes, dataset.keys)
    secret = b"a test secret of 32 bytes, no more"
    monkeypatch.setattr(streaming, "BLOCK_ROWS", 700)  # several blocks
    stats = streaming.scan(spec, str(path), None, chunk_rows=500)
    count = streaming.write_seen_keys(stats, RowKeyer(secret), str(tmp_path / "seen.npy"))
    seen = np.load(tmp_path / "seen.npy", allow_pickle=False)
    rows = np.sort(np.concatenate([split.train, split.validation]))
    expected = [int.from_bytes(hmac.new(secret, int(k).to_bytes(8, "big"),
                                        hashlib.sha256).digest()[:8], "big")
                for k in dataset.keys[rows]]
    assert count == len(seen) == len(rows) == stats.parts["train"] + stats.parts["validation"]
    assert seen.dtype == np.dtype(">u8") and seen.tolist() == expected  # in file order
    member = KeyPrefixes(seen.astype(np.uint64)).isin(RowKeyer(secret).hex(dataset.keys))
    assert np.array_equal(np.flatnonzero(~member), split.test)
    other = KeyPrefixes(seen.astype(np.uint64)).isin(RowKeyer(b"another secret").hex(
        dataset.keys))
    assert not other.any()  # keys under another secret match nothing
