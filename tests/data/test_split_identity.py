"""A row's part comes from a hash of its key and the seed: rows keep their part as data grows,
seeds give independent splits, streamed samples come from the whole part, and category
levels the training rows never held encode as zeros."""

from __future__ import annotations

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
    kept = np.mean([before[r] == after[r] for r in before])
    assert kept >= 0.85  # a row moves only when new rows of its class outrank it
    shuffled = _parts(rows.sample(frac=1, random_state=0))
    assert shuffled == after  # the file's row order plays no part
    for part, fraction in (("test", 0.2), ("validation", 0.2)):
        assert abs(sum(p == part for p in after.values()) - 303 * fraction) <= 2


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
