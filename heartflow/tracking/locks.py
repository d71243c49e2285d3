"""The registry lock: alias decisions for one model taken one at a time.

With a team Prefect server (``PREFECT_API_URL`` set by the user, not a server this machine's
heartflow started for itself) the lock is a Prefect global concurrency limit of 1 slot on
that server, so runs on different hosts take turns. Otherwise (the local default: one
machine, a throw-away Prefect server per command) it is a file lock on this machine, keyed
by registry URI and model name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator

from filelock import FileLock

from heartflow.runtime.prefect_server import LOCAL_SERVER_ENV


@contextlib.contextmanager
def registry_lock(name: str) -> Iterator[None]:
    """Serialise alias decisions for one model among every process that shares its registry
    (see the module docstring for which lock)."""
    import mlflow  # lazy: MLflow costs 1.3 s to import

    uri = mlflow.get_registry_uri()
    key = hashlib.sha256(f"{uri}|{name}".encode()).hexdigest()[:16]
    if shared_prefect_api():
        with _server_lock(f"heartflow-registry-{key}"):
            yield
        return
    folder = os.path.join(tempfile.gettempdir(), "heartflow-locks")
    os.makedirs(folder, exist_ok=True)
    with FileLock(os.path.join(folder, f"{key}.lock")):
        yield


def shared_prefect_api() -> bool:
    """True when ``PREFECT_API_URL`` names a server this machine's heartflow did not start."""
    return bool(os.environ.get("PREFECT_API_URL")) and not os.environ.get(LOCAL_SERVER_ENV)


@contextlib.contextmanager
def _server_lock(limit: str, timeout: float = 900.0) -> Iterator[None]:
    """One slot of a global concurrency limit on the Prefect server (created if missing)."""
    from prefect.client.orchestration import get_client  # lazy: team stack only
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:  # Prefect's upsert reads, then creates: not atomic
            client.upsert_global_concurrency_limit_by_name(limit, 1)
        except ObjectAlreadyExists:  # another run created it between the two: it exists
            client.upsert_global_concurrency_limit_by_name(limit, 1)  # (its limit is 1)
    with concurrency(limit, occupy=1, timeout_seconds=timeout, strict=True):
        yield


