"""Registry: the promotion gate, rollback, failures that leave aliases alone,
`heartflow predict`, and REST serving with MLflow's own server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from heartflow.tracking import registry
from tests.conftest import (
    cli,
    free_port,
    heart_csv,
    heart_spec,
    stop_process_group,
    wait_until_answering,
)

pytestmark = pytest.mark.slow
MODEL = "heart-test"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def train(tmp_path: Path, name: str = "heart_test", **kw) -> dict:
    """Write a spec next to tmp_path/heart.csv and run the real flow in-process."""
    import heartflow as hf

    if not (tmp_path / "heart.csv").exists():
        heart_csv(tmp_path / "heart.csv", rows=300)
    spec = heart_spec(tmp_path / f"{name}-{len(list(tmp_path.glob('*.yaml')))}.yaml",
                      name=name, **kw)
    return hf.run(str(spec)).as_dict()


WEAK = {"epochs": 1, "lr": 0.0005, "hidden": [2], "seed": 3}
STRONG = {"epochs": 40, "lr": 0.01, "hidden": [8]}


def test_first_model_becomes_champion_with_recorded_decision(tmp_path, prefect_server) -> None:
    outcome = train(tmp_path, **STRONG)
    assert outcome["promoted"] is True
    assert outcome["decision"].startswith("no champion yet")
    assert registry.alias_version(MODEL, "champion") == "1"
    assert registry.alias_version(MODEL, "challenger") == "1"
    version = _client().get_model_version(MODEL, "1")
    assert version.tags["heartflow.promotion.reason"] == outcome["decision"]
    run = _client().get_run(outcome["run_id"])
    assert run.data.tags["heartflow.promotion.promoted"] == "True"
    # A retried register step finds the version its run already created.
    again = registry.register_version(f"runs:/{outcome['run_id']}/model", MODEL,
                                      outcome["run_id"], {})
    assert again == "1"
    assert len(_client().search_model_versions(f"name='{MODEL}'")) == 1


def test_better_model_is_promoted_worse_and_equal_are_not(tmp_path, prefect_server) -> None:
    weak = train(tmp_path, **WEAK)
    strong = train(tmp_path, **STRONG)
    assert strong["metrics"]["roc_auc"] > weak["metrics"]["roc_auc"] + 0.01
    assert strong["promoted"] is True and "better by the rule" in strong["decision"]
    assert registry.alias_version(MODEL, "champion") == "2"
    tags = _client().get_model_version(MODEL, "2").tags
    assert tags["heartflow.previous_champion"] == "1"
    assert float(tags["heartflow.promotion.champion_score"]) == pytest.approx(
        weak["metrics"]["roc_auc"], abs=1e-6)  # the champion was re-scored on these rows

    worse = train(tmp_path, **WEAK)
    assert worse["promoted"] is False and "not better" in worse["decision"]
    assert registry.alias_version(MODEL, "champion") == "2"
    assert registry.alias_version(MODEL, "challenger") == "3"

    same = train(tmp_path, **STRONG)  # identical metrics: not better by the margin
    assert same["metrics"] == strong["metrics"] and same["promoted"] is False
    assert registry.alias_version(MODEL, "champion") == "2"


def test_improvement_within_the_margin_is_refused(tmp_path, prefect_server) -> None:
    first = train(tmp_path, epochs=20, lr=0.01, hidden=[8], margin=0.5)
    second = train(tmp_path, epochs=40, lr=0.01, hidden=[8], margin=0.5)
    assert first["promoted"] and not second["promoted"]
    assert "rule point: point difference above 0.5" in second["decision"]


def test_rollback_and_manual_promotion(tmp_path, prefect_server) -> None:
    train(tmp_path, **WEAK)
    train(tmp_path, **STRONG)
    assert registry.alias_version(MODEL, "champion") == "2"
    out = cli("rollback", MODEL)
    assert out.returncode == 0 and "from v2 to v1" in out.stdout
    assert registry.alias_version(MODEL, "champion") == "1"
    assert _client().get_model_version(MODEL, "1").tags["heartflow.promotion.reason"] == \
        "rollback from v2"
    out = cli("promote", MODEL, "2")
    assert out.returncode == 0 and registry.alias_version(MODEL, "champion") == "2"
    bad = cli("promote", MODEL, "99")
    assert bad.returncode == 5 and "no version 99" in bad.stderr
    listing = cli("models", MODEL, "--json")
    rows = json.loads(listing.stdout)
    assert [r["version"] for r in rows] == ["2", "1"]
    # v2 is the newest version (challenger since it was registered) and champion again;
    # v1, champion before the promotion by hand, holds no alias now. (Aliases are listed
    # sorted.)
    assert rows[0]["aliases"] == ["challenger", "champion"]
    assert rows[1]["aliases"] == []
    assert "roc_auc" in rows[0]["metrics"]


def test_schema_change_blocks_automatic_promotion(tmp_path, prefect_server) -> None:
    import heartflow as hf

    train(tmp_path, **WEAK)
    spec = heart_spec(tmp_path / "fewer.yaml", **STRONG)
    text = spec.read_text().replace("categorical: [sex, cp, fbs, restecg, exang, ca, thal]",
                                    "categorical: [sex, cp]")
    spec.write_text(text)
    outcome = hf.run(str(spec)).as_dict()
    assert outcome["promoted"] is False and "input schema differs" in outcome["decision"]
    assert registry.alias_version(MODEL, "champion") == "1"


def test_failed_registration_leaves_aliases_unchanged(tmp_path, prefect_server,
                                                      monkeypatch) -> None:
    train(tmp_path, **STRONG)

    def store_went_away(*args, **kwargs):
        raise RuntimeError("model registry unavailable")

    from heartflow.pipelines import training as flow

    with monkeypatch.context() as patched, pytest.raises(RuntimeError):
        patched.setattr(flow, "register_version", store_went_away)
        train(tmp_path, **STRONG)
    client = _client()
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]
    assert registry.alias_version(MODEL, "champion") == "1"
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              order_by=["attribute.start_time DESC"])
    assert runs[0].info.status == "FAILED"
    assert "model registry unavailable" in runs[0].data.tags["heartflow.status_reason"]


def test_interrupt_while_logging_the_model_marks_run_killed(tmp_path, prefect_server,
                                                            monkeypatch) -> None:
    from heartflow.pipelines import training as flow

    train(tmp_path, **WEAK)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(flow, "log_scorer", interrupted)
        train(tmp_path, **STRONG)
    client = _client()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              order_by=["attribute.start_time DESC"])
    assert runs[0].info.status == "KILLED"
    assert registry.alias_version(MODEL, "champion") == "1"
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1


@pytest.fixture
def champion(tmp_path, prefect_server) -> Path:
    """A registered champion plus a raw scoring file with awkward rows."""
    train(tmp_path, **STRONG)
    frame = pd.read_csv(tmp_path / "heart.csv").head(6)
    frame["patient"] = [f"p{i}" for i in range(6)]  # an extra column
    frame = frame.drop(columns=["target"])
    frame["chol"] = frame["chol"].astype(object)
    frame.loc[0, "chol"] = ""           # missing value
    frame.loc[1, "thal"] = "unheard-of"  # unseen category
    frame.to_csv(tmp_path / "score.csv", index=False)
    return tmp_path / "score.csv"


def test_predict_cli_scores_raw_rows(champion: Path, tmp_path: Path) -> None:
    out = cli("predict", f"models:/{MODEL}@champion", str(champion), "-o",
              str(tmp_path / "out.csv"))
    assert out.returncode == 0, out.stderr
    assert "ignoring column(s) the model does not use: patient" in out.stderr
    assert "thal: unheard-of" in out.stderr and "missing value" in out.stderr
    scored = pd.read_csv(tmp_path / "out.csv")
    assert len(scored) == 6 and list(scored["patient"]) == [f"p{i}" for i in range(6)]
    assert scored["probability"].between(0, 1).all()
    assert set(scored["prediction"]) <= {0, 1}
    assert (scored["prediction"] == (scored["probability"] >= 0.5)).all()


def test_predict_cli_lists_missing_columns(champion: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(champion).drop(columns=["age", "thal"])
    frame.to_csv(tmp_path / "short.csv", index=False)
    out = cli("predict", f"models:/{MODEL}@champion", str(tmp_path / "short.csv"))
    assert out.returncode == 3
    assert "missing required column(s): age, thal" in out.stderr
    assert "Traceback" not in out.stderr
    frame = pd.read_csv(champion, dtype=str)
    frame.loc[2, "age"] = "old"
    frame.to_csv(tmp_path / "text.csv", index=False)
    out = cli("predict", f"models:/{MODEL}@champion", str(tmp_path / "text.csv"))
    assert out.returncode == 3 and "'age'" in out.stderr and "row 3" in out.stderr


def test_mlflow_models_serve_answers_like_heartflow_predict(champion: Path,
                                                            tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
         "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
        start_new_session=True)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/ping", server)
        raw = pd.read_csv(champion, dtype=str, keep_default_na=False)
        columns = [c for c in raw.columns if c != "patient"]
        rows = [[None if v == "" else v for v in row] for row in raw[columns].values.tolist()]
        body = json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.loads(response.read())["predictions"]
    finally:
        stop_process_group(server)
    local = cli("predict", f"models:/{MODEL}@champion", str(champion), "-o",
                str(tmp_path / "local.csv"))
    assert local.returncode == 0
    expected = pd.read_csv(tmp_path / "local.csv")["probability"].tolist()
    got = [row["probability"] for row in served]
    assert got == pytest.approx(expected, abs=1e-6)
    assert len(got) == 6

