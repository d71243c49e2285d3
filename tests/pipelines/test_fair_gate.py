"""The promotion gate is fair: after the data grows, the champion is scored only on rows it
neither trained nor validated on; too few such rows and the gate refuses to decide; an
undefined metric never promotes."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli, heart_csv, heart_spec


def _manifest(run_id: str) -> pd.DataFrame:
    path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                               artifact_path="split/manifest.csv")
    return pd.read_csv(path, dtype=str)


@pytest.mark.slow
def test_champion_is_never_rescored_on_rows_it_trained_on(tmp_path: Path,
                                                          prefect_server) -> None:
    import heartflow as hf

    heart_csv(tmp_path / "all.csv", rows=303, seed=9)
    lines = (tmp_path / "all.csv").read_text().splitlines()
    (tmp_path / "heart.csv").write_text("\n".join(lines[:241]) + "\n")  # rows 1-240
    spec = heart_spec(tmp_path / "spec.yaml", epochs=5)
    first = hf.run(spec)
    (tmp_path / "heart.csv").write_text("\n".join(lines) + "\n")      # grown to 303
    second = hf.run(spec)
    old, new = _manifest(first.run_id), _manifest(second.run_id)
    seen = set(old.loc[old["part"] != "test", "key"])
    test = new.loc[new["part"] == "test", "key"]
    fair = [k for k in test if k not in seen]
    assert second.test_rows == len(test)
    assert second.gate_rows == len(fair) == len(test)  # counted here from the two manifests:
    # rows never change part as the data grows, so no test row was seen by the champion
    assert "neither trained nor validated on" in second.decision
    assert f"({len(test) - len(fair)} excluded)" in second.decision


@pytest.mark.slow
def test_too_few_fair_rows_and_the_gate_refuses(tmp_path: Path, prefect_server) -> None:
    heart_csv(tmp_path / "heart.csv", rows=200, seed=10)
    spec = heart_spec(tmp_path / "spec.yaml", epochs=3)
    assert cli("run", "-q", str(spec), cwd=tmp_path).returncode == 0
    spec.write_text(spec.read_text().replace("min_improvement: 0.0}",
                                             "min_improvement: 0.0, min_gate_rows: 500}"))
    out = cli("run", "-q", "--json", str(spec), cwd=tmp_path)
    assert out.returncode == 5, out.stderr
    assert "undecided" in out.stderr and "min_gate_rows" in out.stderr
    from heartflow.tracking import registry

    assert registry.alias_version("heart-test", "champion") == "1"
    assert registry.alias_version("heart-test", "challenger") == "2"


@pytest.mark.slow
def test_an_undefined_gate_metric_never_promotes(tmp_path: Path, prefect_server) -> None:
    import heartflow as hf
    from heartflow.data.split import row_keys, split_rows
    from heartflow.spec.schema import SplitSpec

    frame = heart_csv(tmp_path / "heart.csv", rows=300, seed=11)
    rows = pd.read_csv(frame)
    text = pd.read_csv(frame, dtype=str, keep_default_na=False)
    rows.loc[:, "target"] = 0
    rows.loc[rows.index[:12], "target"] = 1
    rows.to_csv(frame, index=False)
    text = pd.read_csv(frame, dtype=str, keep_default_na=False)
    relaxed = {"stratify": False, "min_per_class": 0}
    splits = (split_rows(rows["target"].to_numpy(), SplitSpec(seed=s, **relaxed), True,
                         keys=row_keys(text)) for s in range(500))
    seed, split = next((s, sp) for s, sp in enumerate(splits)
                       if not rows["target"].to_numpy()[sp.test].any())  # all-negative test
    spec = heart_spec(tmp_path / "spec.yaml", epochs=2)
    spec.write_text(spec.read_text().replace(
        "split: {test: 0.2, validation: 0.2, stratify: true, seed: 42}",
        f"split: {{test: 0.2, validation: 0.2, stratify: false, seed: {seed}, "
        "min_per_class: 0}"))
    result = hf.run(spec)
    assert np.isnan(result.metrics["roc_auc"])
    assert result.promoted is False and "undefined" in result.decision
    assert f"undefined on the {len(split.test)} test rows" in dict(result.rows())["test roc_auc"]
    tags = mlflow.MlflowClient().get_run(result.run_id).data.tags
    assert "heartflow.undefined.test_roc_auc" in tags
