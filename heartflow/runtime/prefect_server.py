"""A local Prefect API server started early, so its start-up hides behind TensorFlow's import.

With no ``PREFECT_API_URL``, Prefect itself would start a temporary server
(uvicorn running Prefect's own API app) when the flow begins. heartflow starts
that same server as a subprocess *before* importing TensorFlow, points
``PREFECT_API_URL`` at it, and stops it when the command ends: the flow is the
same, the wait is shorter, and nothing is left running.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from heartflow.errors import HeartflowError


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prefect_dir() -> Path:

    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.origin:
        raise HeartflowError("prefect is not installed")
    return Path(spec.origin).parent


class LocalPrefectServer:
    """Prefect's API app under uvicorn on a free loopback port (started in the background)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self._warm: threading.Thread | None = None
        # The server's output goes to a file nobody has to drain (a pipe could fill and
        # block the server); its tail is shown if the server dies.
        self.log_path = os.path.join(tempfile.gettempdir(),
                                     f"heartflow-prefect-server-{os.getpid()}-{self.port}.log")

    @property
    def api_url(self) -> str:
        """The API URL to give Prefect clients."""
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> LocalPrefectServer:
        """Launch the server process (returns at once; see :meth:`wait`)."""
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(_prefect_dir().parent),
                 "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        atexit.register(self.stop)
        self._warm = threading.Thread(target=self._warm_up, name="prefect-warm-up", daemon=True)
        self._warm.start()
        return self

    def _warm_up(self) -> None:
        """Once the API answers, make its first (slow, lazily initialised) requests.

        Runs in a thread that only waits on sockets, so the server does this work on
        the other core while this process is still importing TensorFlow.
        """
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process is not None \
                and self.process.poll() is None:
            if self._answers("health"):
                self._answers("admin/version")
                self._answers("flow_runs/filter", b'{"limit": 1}')
                return
            time.sleep(0.1)

    def _answers(self, path: str, body: bytes | None = None) -> bool:
        request = urllib.request.Request(f"{self.api_url}/{path}", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the API answers /health (and the warm-up request is done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise HeartflowError(f"the local Prefect server exited ({self.process.returncode})"
                                     f": {self.log_tail() or 'no output'} (log: "
                                     f"{self.log_path})")
            if self._answers("health"):
                if self._warm is not None:
                    self._warm.join(timeout=5)
                return
            time.sleep(0.1)
        raise HeartflowError(f"the local Prefect server did not answer within {timeout:.0f} s")

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's output."""
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read()[-size:].decode(errors="replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate the server process (idempotent); its log is removed unless it failed."""
        process, self.process = self.process, None
        if process is None:
            return
        _drain_prefect_clients()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        with contextlib.suppress(OSError):
            if process.returncode in (0, -15) or not os.path.getsize(self.log_path):
                os.remove(self.log_path)


def _drain_prefect_clients() -> None:
    """Send Prefect's buffered logs and events before the server goes away.

    Prefect's ``drain_all`` and ``flush`` block only when no event loop runs in the calling
    thread; inside one (a Jupyter kernel runs every cell inside its event loop) they return
    a coroutine to await instead, which a synchronous caller cannot await (Python then warns
    "coroutine 'wait' was never awaited" and nothing is drained). There the drain runs in a
    thread of its own, without a loop, where both calls block until sent (5 s at most each).
    """
    if "prefect" not in sys.modules:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _drain_now()
        return
    drainer = threading.Thread(target=_drain_now, name="prefect-drain", daemon=True)
    drainer.start()
    drainer.join(timeout=12)


def _drain_now() -> None:
    """Flush Prefect's API log handler and drain its events worker (no loop running here)."""
    with contextlib.suppress(Exception):
        # lazy: Prefect, only when a flow's API server is in use
        from prefect.logging.handlers import APILogHandler

        APILogHandler.flush()
    with contextlib.suppress(Exception):
        # lazy: Prefect, only when a flow's API server is in use
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)


_SHARED: LocalPrefectServer | None = None


LOCAL_SERVER_ENV = "HEARTFLOW_LOCAL_PREFECT_SERVER"


def start_local_server() -> LocalPrefectServer | None:
    """Start this process's local Prefect server (once) unless ``PREFECT_API_URL`` names one.

    Returns at once: the server starts while the caller imports TensorFlow. It lives as
    long as the process (a notebook's runs share it) and is stopped at exit.
    """
    global _SHARED
    if _SHARED is not None and _SHARED.process is not None:
        return _SHARED
    if os.environ.get("PREFECT_API_URL"):
        return None
    _SHARED = LocalPrefectServer().start()
    # Sweep worker processes inherit the address through the environment, and the mark
    # that it is this machine's own server (not one other hosts share).
    os.environ["PREFECT_API_URL"] = _SHARED.api_url
    os.environ[LOCAL_SERVER_ENV] = "1"
    return _SHARED


@contextlib.contextmanager
def using(server: LocalPrefectServer | None):
    """Point Prefect at ``server`` for the block (no-op for a server named by the user).

    Flow-run heartbeats are off for a local server: they let a long-lived server mark a
    vanished flow run as crashed, and stopping the heartbeat thread costs up to a second
    at the end of every flow. Deployment runs and a team's server keep them.
    """
    if server is None:
        yield
        return
    server.wait()
    # lazy: Prefect, only when a flow's API server is in use
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    with temporary_settings(updates={PREFECT_API_URL: server.api_url,
                                     PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        try:
            yield
        finally:
            _drain_prefect_clients()
