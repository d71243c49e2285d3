"""Which failures are worth retrying: a tracking server or network briefly away."""

from __future__ import annotations

import sys

TRANSIENT_WORDS = ("connection refused", "connection reset", "timed out", "timeout",
                   "max retries exceeded", "temporarily unavailable", "502", "503", "504",
                   "remote end closed", "database is locked")


def is_transient(exc: BaseException) -> bool:
    """True for network-ish failures; never for heartflow's own spec/data/registry errors."""
    from heartflow.errors import HeartflowError

    if isinstance(exc, HeartflowError) and type(exc).__name__ != "TrackingError":
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(word in text for word in TRANSIENT_WORDS)


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures and say so."""
    try:
        state.result()
    except Exception as exc:
        if is_transient(exc):
            sys.stderr.write(f"heartflow: {task.name}: transient failure "
                             f"({type(exc).__name__}); retrying with backoff\n")
            return True
        return False
    return False
