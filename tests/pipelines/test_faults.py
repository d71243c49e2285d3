"""Faults: signals during training, SIGKILL and stale runs, concurrent runs, an unreachable
tracking server. Every test drives the real `heartflow` command in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heartflow.tracking import registry
from tests.conftest import cli, heart_csv, heart_spec

pytestmark = pytest.mark.slow
MODEL = "heart-test"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _latest_run():
    client = _client()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              order_by=["attribute.start_time DESC"])
    return runs[0]


def _baseline(tmp_path: Path) -> None:
    """A quick first run so there is a champion whose alias must not move."""
    import heartflow as hf

    heart_csv(tmp_path / "heart.csv", rows=3000)
    hf.run(str(heart_spec(tmp_path / "quick.yaml", epochs=2))).as_dict()
    assert registry.alias_version(MODEL, "champion") == "1"


def _start_long_run(tmp_path: Path) -> subprocess.Popen:
    spec = heart_spec(tmp_path / "long.yaml", epochs=400, hidden=[32])
    return subprocess.Popen([sys.executable, "-m", "heartflow", "run", str(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=os.environ.copy())


def _wait_for_training(process: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen += line
        if line.startswith("epoch"):
            return seen
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"training never started: {seen}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_training_ends_run_killed(tmp_path: Path, prefect_server, sig,
                                                code) -> None:
    _baseline(tmp_path)
    process = _start_long_run(tmp_path)
    _wait_for_training(process)
    process.send_signal(sig)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "marked KILLED" in err and "Traceback" not in err
    run = _latest_run()
    assert run.info.status == "KILLED"
    assert run.data.tags["heartflow.spec_path"].endswith("long.yaml")
    assert registry.alias_version(MODEL, "champion") == "1"
    assert len(_client().search_model_versions(f"name='{MODEL}'")) == 1


def test_sigkill_leaves_a_stale_run_that_can_be_marked_failed(tmp_path: Path,
                                                              prefect_server) -> None:
    _baseline(tmp_path)
    process = _start_long_run(tmp_path)
    _wait_for_training(process)
    process.kill()
    process.communicate(timeout=60)
    run = _latest_run()
    assert run.info.status == "RUNNING"  # nobody could record the death...
    listed = cli("stale-runs", cwd=tmp_path)
    assert run.info.run_id in listed.stdout  # ...but heartflow finds it
    fixed = cli("stale-runs", "--mark-failed", cwd=tmp_path)
    assert fixed.returncode == 0 and "-> FAILED" in fixed.stdout
    again = _client().get_run(run.info.run_id)
    assert again.info.status == "FAILED"
    assert "died" in again.data.tags["heartflow.status_reason"]
    assert cli("stale-runs", cwd=tmp_path).stdout.strip() == "no stale runs"
    assert registry.alias_version(MODEL, "champion") == "1"


def test_concurrent_runs_all_land_and_the_best_is_champion(tmp_path: Path,
                                                            prefect_server) -> None:
    # Three on this 2-core machine (the team-stack test runs four across two hosts).
    heart_csv(tmp_path / "heart.csv", rows=400)
    specs = [heart_spec(tmp_path / f"s{i}.yaml", name=f"conc_{i}", hidden=[h], epochs=15,
                        seed=i) for i, h in enumerate([2, 8, 16])]
    processes = [subprocess.Popen([sys.executable, "-m", "heartflow", "run", "-q", "--json",
                                   str(s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=tmp_path, env=os.environ.copy())
                 for s in specs]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        assert "locked" not in err.lower()
        results.append(json.loads(out))
    versions = _client().search_model_versions(f"name='{MODEL}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    best = max(r["metrics"]["roc_auc"] for r in results)
    champion = registry.alias_version(MODEL, "champion")
    by_version = {r["version"]: r for r in results}
    assert by_version[champion]["metrics"]["roc_auc"] == best
    assert sum(1 for r in results if r["promoted"]) >= 1
    statuses = {_client().get_run(r["run_id"]).info.status for r in results}
    assert statuses == {"FINISHED"}


def test_unreachable_tracking_server_fails_before_training(tmp_path: Path,
                                                           prefect_server) -> None:
    heart_csv(tmp_path / "heart.csv", rows=100)
    spec = heart_spec(tmp_path / "s.yaml", epochs=2)
    out = cli("run", str(spec), cwd=tmp_path,
              env={"MLFLOW_TRACKING_URI": "http://user:secret@127.0.0.1:9/"})
    assert out.returncode == 4, out.stderr
    assert "cannot be reached" in out.stderr and "epoch" not in out.stderr
    assert "secret" not in out.stderr and "Traceback" not in out.stderr
