"""Skip the interpreter's teardown once a command is done, with public APIs only.

By the time a command returns, its MLflow run is ended and every file closed. What is
left of a normal exit is Python joining other threads, running exit handlers, and then
freeing the module graphs of TensorFlow, MLflow and Prefect one object at a time:
about 1.8 s on a 2-core machine, for nothing. :func:`install` registers an exit handler
before anything else does; exit handlers run last-registered-first, so it runs after
every other one, once the interpreter has joined the threads, and ends the process
there with the command's exit status.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

_HEAVY = ("tensorflow", "mlflow", "prefect")
_state: dict[str, int | None] = {"code": None}


def install() -> None:
    """Register the last exit handler (call first thing in ``main``)."""
    atexit.register(_finish)


def exit_with(code: int | str | None) -> None:
    """Exit with ``code``; the teardown is skipped when the heavy frameworks are loaded."""
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    code = int(code or 0)
    if any(name in sys.modules for name in _HEAVY):
        _state["code"] = code
    raise SystemExit(code)


def _finish() -> None:
    code = _state["code"]
    if code is None:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
