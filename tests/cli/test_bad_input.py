"""Bad input never shows a traceback: the installed `heartflow` command, run as a real
subprocess in a temporary folder, answers a missing file, a misspelt column, a mistyped
model URI and a stopped UI with one message that names what was wrong, and the exit status
of its kind (3 bad data, 5 registry refusal, 130 Ctrl-C, 143 SIGTERM).

One small model is trained once for the module, into its own MLflow store (the tests point
each command at it explicitly, whatever store the per-test fixture set)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from mlflow import MlflowClient

from tests.conftest import free_port, heart_csv, heart_spec, wait_until_answering

MODEL = "cli-heart"
EXPERIMENT = "cli_heart"
HEARTFLOW = Path(sys.executable).with_name("heartflow")  # the venv's console script


def heartflow(*args: str, store: Path, cwd: Path, timeout: float = 300
              ) -> subprocess.CompletedProcess:
    """Run `heartflow ARGS` in ``cwd`` against the MLflow store in folder ``store``."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
    return subprocess.run([str(HEARTFLOW), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def refused(out: subprocess.CompletedProcess, status: int) -> str:
    """The one-line message of a refusal with ``status``, after checking it is one."""
    assert out.returncode == status, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heartflow: error: "), out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_server) -> Path:
    """A folder with a store holding one registered binary model (v1: champion and
    challenger) trained on generated heart-like rows, and those rows."""
    folder = tmp_path_factory.mktemp("trained")
    heart_csv(folder / "heart.csv", rows=200)
    spec = heart_spec(folder / "spec.yaml", name=EXPERIMENT, model_name=MODEL, hidden=[4],
                      epochs=2)
    out = heartflow("run", "-q", "--json", str(spec), store=folder, cwd=folder)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["version"] == "1"
    return folder


def registry_facts(store: Path) -> tuple[dict[str, str], list[str]]:
    """The model's aliases and versions, read with MLflow's own client."""
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db",
                          registry_uri=f"sqlite:///{store}/mlflow.db")
    aliases = {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    return aliases, versions


def test_predict_names_a_missing_file(trained: Path, tmp_path: Path) -> None:
    out = heartflow("predict", f"models:/{MODEL}@champion", "nope.csv", store=trained,
                    cwd=tmp_path)
    message = refused(out, 3)
    assert "nope.csv" in message and "no such file" in message


def test_evaluate_names_a_misspelt_column_and_the_near_match(trained: Path,
                                                             tmp_path: Path) -> None:
    rows = pd.read_csv(trained / "heart.csv").rename(columns={"thalach": "thalch"})
    rows.to_csv(tmp_path / "site.csv", index=False)
    out = heartflow("evaluate", f"models:/{MODEL}/1", "site.csv", store=trained, cwd=tmp_path)
    message = refused(out, 3)
    assert "missing required column(s): thalach" in message
    assert "did you mean 'thalch'" in message
    assert all(column in message for column in rows.columns)  # the columns present


@pytest.mark.parametrize("command", ["predict", "evaluate", "card"])
@pytest.mark.parametrize("uri", [f"models:/{MODEL}@champ", f"models:/{MODEL}/7"])
def test_a_mistyped_model_uri_lists_the_aliases_and_versions(trained: Path, tmp_path: Path,
                                                             command: str, uri: str) -> None:
    pd.read_csv(trained / "heart.csv").head(5).to_csv(tmp_path / "rows.csv", index=False)
    args = [command, uri] + (["rows.csv"] if command != "card" else [])
    message = refused(heartflow(*args, store=trained, cwd=tmp_path), 5)
    aliases, versions = registry_facts(trained)
    assert aliases and versions
    assert uri in message
    assert all(f"{alias} (v{version})" in message for alias, version in aliases.items())
    assert f"versions: {', '.join(versions)}" in message
    if "@" in uri:
        assert "no alias 'champ'" in message and "did you mean 'champion'" in message
    else:
        assert "no version 7" in message


def test_an_unknown_model_lists_the_registered_ones(trained: Path, tmp_path: Path) -> None:
    pd.read_csv(trained / "heart.csv").head(5).to_csv(tmp_path / "rows.csv", index=False)
    out = heartflow("predict", "models:/cli-hart@champion", "rows.csv", store=trained,
                    cwd=tmp_path)
    message = refused(out, 5)
    assert "no registered model named 'cli-hart'" in message and MODEL in message


def test_models_table_keeps_every_alias_within_100_columns(trained: Path,
                                                          tmp_path: Path) -> None:
    out = heartflow("models", store=trained, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    aliases, _ = registry_facts(trained)
    assert len(aliases) >= 2  # v1 is both champion and challenger
    assert "…" not in out.stdout  # nothing cut
    assert max(len(line) for line in out.stdout.splitlines()) <= 100
    assert all(alias in out.stdout for alias in aliases)


@pytest.fixture
def ui(tmp_path: Path):
    """Start `heartflow ui` on a store (``start(store)``); whatever the test does, nothing
    it started outlives it."""
    started: list[subprocess.Popen] = []

    def start(store: Path) -> tuple[subprocess.Popen, int, Path, Path]:
        port = free_port()
        stdout, stderr = tmp_path / "ui.out", tmp_path / "ui.err"
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
        with open(stdout, "w") as out, open(stderr, "w") as err:
            process = subprocess.Popen([str(HEARTFLOW), "ui", "--port", str(port)],
                                       stdout=out, stderr=err, env=env, cwd=tmp_path)
        started.append(process)
        return process, port, stdout, stderr

    yield start
    for process in started:
        family = []
        with contextlib.suppress(psutil.NoSuchProcess):
            family = psutil.Process(process.pid).children(recursive=True)
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _first_line(path: Path, process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text()
        if "\n" in text:
            return text.splitlines()[0]
        assert process.poll() is None, path.with_suffix(".err").read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError("heartflow ui printed nothing")


def _stop_and_check(process: subprocess.Popen, sig: int, status: int, stderr: Path) -> str:
    """Send ``sig`` to heartflow alone (as a terminal's Ctrl-C or a supervisor would reach
    it); every process it started must be gone after it exits."""
    family = psutil.Process(process.pid).children(recursive=True)
    assert family, "heartflow ui started no server process"
    try:
        process.send_signal(sig)
        assert process.wait(timeout=60) == status, stderr.read_text()[-3000:]
        _, alive = psutil.wait_procs(family, timeout=20)
        assert not alive, [p.cmdline() for p in alive]
    finally:  # leave nothing of ours running, whatever failed above
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.is_running():
                    child.kill()
    text = stderr.read_text()
    assert "Traceback" not in text and "MLflow run" not in text, text[-3000:]
    return text


@pytest.mark.slow
def test_ui_shows_the_latest_experiment_and_sigterm_stops_all_of_it(trained: Path,
                                                                    ui) -> None:
    process, port, stdout, stderr = ui(trained)
    line = _first_line(stdout, process)
    client = MlflowClient(tracking_uri=f"sqlite:///{trained}/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert "<id>" not in line
    assert f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs" in line
    wait_until_answering(f"http://127.0.0.1:{port}/", process)
    text = _stop_and_check(process, signal.SIGTERM, 143, stderr)
    assert "MLflow UI stopped (SIGTERM)" in text


@pytest.mark.slow
def test_ui_on_an_empty_store_gives_its_address_and_ctrl_c_stops_all_of_it(
        tmp_path: Path, ui) -> None:
    process, port, stdout, stderr = ui(tmp_path)
    line = _first_line(stdout, process)
    assert "<id>" not in line and "#/experiments" not in line
    assert f"http://127.0.0.1:{port}" in line
    wait_until_answering(f"http://127.0.0.1:{port}/", process)
    text = _stop_and_check(process, signal.SIGINT, 130, stderr)
    assert "MLflow UI stopped (Ctrl-C)" in text
