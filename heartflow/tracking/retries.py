"""Retries, in one home: which failures are worth retrying (a tracking server, the network or
a database briefly away) and how heartflow retries them.

Failures are recognised by exception type and HTTP status, following the exception's chain
(``__cause__``, ``__context__`` and a DB-API error's ``orig``), never by words in a
message: an unrelated error that happens to mention "timeout" is not retried.

Two retry loops use them: :func:`retrying` around single MLflow calls (a busy sqlite
store; a registration on a briefly absent server), and Prefect's task retries
(:func:`retry_if_transient`, with the delays in ``heartflow.pipelines.task_options``).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from heartflow.errors import HeartflowError, TrackingError

T = TypeVar("T")

TRANSIENT_HTTP_STATUS = frozenset({408, 429, 502, 503, 504})
_BUSY_SQLITE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or while handling (cycle-safe).

    Like Python's own traceback display, ``raise ... from None`` hides the context.
    """
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        context = None if current.__suppress_context__ else current.__context__
        todo += [current.__cause__, context, getattr(current, "orig", None)]


def is_database_busy(exc: BaseException) -> bool:
    """A sqlite store locked by another writer (SQLITE_BUSY / SQLITE_LOCKED)."""
    return any(isinstance(e, sqlite3.OperationalError)
               and getattr(e, "sqlite_errorcode", None) in _BUSY_SQLITE_CODES
               for e in _chain(exc))


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if _http_status(exc) in TRANSIENT_HTTP_STATUS:
        return True
    module = type(exc).__module__.split(".")[0]
    if module == "requests":
        import requests  # lazy: imported only for an exception that came from it

        return isinstance(exc, (requests.ConnectionError, requests.Timeout,
                                requests.exceptions.RetryError))
    if module == "urllib3":
        import urllib3.exceptions as u  # lazy: likewise

        return isinstance(exc, (u.MaxRetryError, u.NewConnectionError, u.TimeoutError,
                                u.ProtocolError))
    if module == "httpx":
        import httpx  # lazy: likewise

        return isinstance(exc, httpx.TransportError)
    if module == "mlflow" and hasattr(exc, "get_http_status_code"):
        # MLflow maps its error codes to HTTP statuses: TEMPORARILY_UNAVAILABLE is 503,
        # REQUEST_LIMIT_EXCEEDED 429.
        return exc.get_http_status_code() in TRANSIENT_HTTP_STATUS
    return False


def is_transient(exc: BaseException) -> bool:
    """True for network-ish failures; never for heartflow's own spec/data/registry errors."""
    if isinstance(exc, HeartflowError) and not isinstance(exc, TrackingError):
        return False
    return is_database_busy(exc) or any(_one_is_transient(e) for e in _chain(exc))


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


def retrying(fn: Callable[..., T], *args: Any, when: Callable[[BaseException], bool] =
             is_database_busy, attempts: int = 8, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, called again with backoff (0.1 s doubling to 2 s) while it
    fails in a way ``when`` says is passing; the last failure is raised."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MLflow wraps sqlite and HTTP errors in MlflowException
            if attempt == attempts - 1 or not when(exc):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")  # attempts >= 1
