"""A streamed champion is judged fairly too: its run records the rows it trained and validated
on (a compact seen-rows file), so the promotion gate leaves exactly those out, and says how
many, instead of refusing to decide."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import heart_csv, heart_spec


def _spec(path: Path, seed: int, streaming: bool, margin: float = 0.0) -> Path:
    spec = heart_spec(path, epochs=2, margin=margin)
    spec.write_text(spec.read_text().replace(
        "split: {test: 0.2, validation: 0.2, stratify: true, seed: 42}",
        f"split: {{test: 0.2, validation: 0.2, seed: {seed}}}\n"
        f"  streaming: {str(streaming).lower()}"))
    return spec


def _manifest(path: Path) -> pd.DataFrame:
    """Keyed key and part of every row of ``path`` under a split seed, by the in-memory
    split (the reference: the streamed split is a separate implementation of the rule)."""
    from heartflow.data.prepare import prepare
    from heartflow.spec import load_spec
    from heartflow.tracking.row_secret import row_key_secret

    memory = path.with_name(f"memory-{path.name}")
    memory.write_text(path.read_text().replace("streaming: true", "streaming: false"))
    return prepare(load_spec(str(memory)), row_secret=row_key_secret()).manifest()


@pytest.mark.slow
def test_a_streamed_champion_is_never_rescored_on_rows_it_trained_on(
        tmp_path: Path, prefect_server) -> None:
    import heartflow as hf

    heart_csv(tmp_path / "all.csv", rows=303, seed=9)
    lines = (tmp_path / "all.csv").read_text().splitlines()
    (tmp_path / "heart.csv").write_text("\n".join(lines[:241]) + "\n")  # rows 1-240
    first = hf.run(_spec(tmp_path / "first.yaml", seed=42, streaming=True))
    assert first.promoted  # the streamed run is champion
    champion = _manifest(tmp_path / "first.yaml")
    seen = set(champion.loc[champion["part"] != "test", "key"])
    tags = mlflow.MlflowClient().get_run(first.run_id).data.tags
    logged = np.load(mlflow.artifacts.download_artifacts(
        run_id=first.run_id, artifact_path="split/seen.npy"), allow_pickle=False)
    assert len(logged) == len(seen) == sum(int(tags[f"heartflow.split.{p}"])
                                           for p in ("train", "validation"))

    (tmp_path / "heart.csv").write_text("\n".join(lines) + "\n")  # grown to 303 rows
    # In memory, another split seed, so some of its test rows trained the champion; it
    # cannot win (margin 1), so the streamed run stays champion for the next challenger.
    second = hf.run(_spec(tmp_path / "second.yaml", seed=7, streaming=False, margin=1.0))
    test = _manifest(tmp_path / "second.yaml").query("part == 'test'")["key"]
    excluded = int(test.isin(seen).sum())
    assert 0 < excluded < len(test)
    assert "undecided" not in second.decision and not second.promoted
    assert f"({excluded} excluded)" in second.decision
    assert second.gate_rows == len(test) - excluded

    # Streamed too (every test row is in its gate sample at this size).
    third = hf.run(_spec(tmp_path / "third.yaml", seed=3, streaming=True))
    test = _manifest(tmp_path / "third.yaml").query("part == 'test'")["key"]
    excluded = int(test.isin(seen).sum())
    assert 0 < excluded < len(test)
    assert "undecided" not in third.decision and "champion v1" in third.decision
    assert f"({excluded} excluded)" in third.decision
    assert third.gate_rows == len(test) - excluded
