"""Shared fixtures: an isolated MLflow store per test, one real Prefect server per session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SERVER = None

HEART_SPEC = """\
name: {name}
data:
  source: {source}
  target: target
  features:
    categorical: [sex, cp, fbs, restecg, exang, ca, thal]
    numeric: [age, trestbps, chol, thalach, oldpeak, slope]
  split: {{test: 0.2, validation: 0.2, stratify: true, seed: 42}}
model:
  hidden:
{hidden}
  output: {{units: 1, activation: sigmoid}}
train:
  loss: binary_crossentropy
  optimizer: {{name: adam, learning_rate: {lr}}}
  batch_size: 32
  epochs: {epochs}
  seed: {seed}
register:
  model_name: {model_name}
  promote: {{metric: roc_auc, rule: point, min_improvement: {margin}}}
"""


def pytest_configure(config: pytest.Config) -> None:
    """Quiet defaults, and a real Prefect API server shared by the whole session."""
    global _SERVER
    # Console scripts of this environment (uvicorn for `mlflow models serve`, prefect, ...)
    # must be found even when the venv is not activated (`.venv/bin/python -m pytest`).
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="heartflow-prefect-home-"))
    os.environ["HEARTFLOW_CACHE_DIR"] = tempfile.mkdtemp(prefix="heartflow-cache-")
    if os.environ.get("HEARTFLOW_DATA_DIR"):  # relative to where pytest started, not to the
        os.environ["HEARTFLOW_DATA_DIR"] = os.path.abspath(  # folders tests move into
            os.path.expanduser(os.environ["HEARTFLOW_DATA_DIR"]))
    if not os.environ.get("PREFECT_API_URL"):
        from heartflow.runtime.prefect_server import LocalPrefectServer

        _SERVER = LocalPrefectServer().start()
        os.environ["PREFECT_API_URL"] = _SERVER.api_url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SERVER is not None:
        _SERVER.stop()


@pytest.fixture(scope="session")
def prefect_server():
    """The session's Prefect API (waits until it is healthy)."""
    if _SERVER is not None:
        _SERVER.wait(timeout=120)
    return os.environ["PREFECT_API_URL"]


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """Each test works in its own folder with its own sqlite MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield tmp_path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real UCI files (HEARTFLOW_DATA_DIR, set by .ci/run); skips when absent."""
    value = os.environ.get("HEARTFLOW_DATA_DIR")
    path = Path(value) if value else ROOT.parent / "shared" / "data"
    if not (path / "heart.csv").is_file():
        pytest.skip("real data not available: set HEARTFLOW_DATA_DIR to ../shared/data")
    os.environ["HEARTFLOW_DATA_DIR"] = str(path)
    return path


def heart_csv(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """Write a small generated heart-like CSV."""
    from heartflow.data.synthetic import heart_like

    heart_like(rows, seed).to_csv(path, index=False)
    return path


def heart_spec(path: Path, *, source: str = "heart.csv", name: str = "heart_test",
               hidden: list[int] | None = (8,), epochs: int = 15, lr: float = 0.01,
               seed: int = 42, model_name: str = "heart-test", margin: float = 0.0) -> Path:
    """Write a heart spec (hidden layer sizes as a list) and return its path."""
    layers = "\n".join(f"    - {{units: {u}, activation: relu, initializer: he_normal}}"
                       for u in (hidden or [])) or "    []"
    if not hidden:
        layers = ""
    text = HEART_SPEC.format(name=name, source=source, hidden=layers, epochs=epochs, lr=lr,
                             seed=seed, model_name=model_name, margin=margin)
    if not hidden:
        text = text.replace("  hidden:\n\n", "  hidden: []\n")
    path.write_text(text)
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
        cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `heartflow` command in a subprocess (once the session's API answers)."""
    if _SERVER is not None:
        _SERVER.wait(timeout=120)
    return subprocess.run([sys.executable, "-m", "heartflow", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          cwd=cwd)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll ``url`` until it answers; fail if ``process`` exits first."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read() if process.stderr else b""
            raise AssertionError(f"server exited: {err[-2000:]!r}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} never answered")


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM a server started with start_new_session=True; SIGKILL if it lingers."""
    import contextlib
    import signal

    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
