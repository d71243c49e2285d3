"""Quiet start-up: the frameworks' quiet defaults, and TensorFlow imported without the C++
chatter it writes straight to stderr."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

QUIET_DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # MLflow's own HTTP retries would wait minutes; heartflow's tasks retry instead.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def apply_quiet_defaults() -> None:
    """Set each default unless the user set the variable."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)


# TensorFlow's start-up lines that carry no information for the user. Everything else it
# writes while importing (a CUDA library that failed to load, a real warning) is passed on.
_NOISE = [re.compile(p) for p in (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"Could not find cuda drivers on your machine, GPU will not be used",
)]
# Lines that only say "there is no GPU": noise where no NVIDIA driver is installed,
# worth reading on a machine that has one.
_NO_GPU = [re.compile(p) for p in (r"failed call to cuInit", r"TF-TRT Warning")]


def has_nvidia_driver() -> bool:
    """Whether this machine has an NVIDIA driver (its control device exists)."""
    return os.path.exists("/dev/nvidiactl")


def startup_lines_to_show(text: str, nvidia_driver: bool) -> list[str]:
    """The lines of TensorFlow's start-up output a user should still see."""
    noise = _NOISE if nvidia_driver else [*_NOISE, *_NO_GPU]
    return [line for line in text.splitlines()
            if line.strip() and not any(p.search(line) for p in noise)]


@contextlib.contextmanager
def stderr_captured() -> Iterator[Callable[[], str]]:
    """Collect what is written to file descriptor 2 in the block (C++ logs bypass sys.stderr).

    Yields a function that returns the collected text once the block has ended.
    """
    collected: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: "".join(collected)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            collected.append(sink.read().decode(errors="replace"))


def import_tensorflow() -> None:
    """Import TensorFlow (and probe devices once); pass on what it says that matters."""
    if "tensorflow" in sys.modules and getattr(import_tensorflow, "_done", False):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_captured() as said:
        # lazy: TensorFlow's 4 s import, only when a model is trained or scored
        import tensorflow as tf

        tf.config.list_physical_devices()
    for line in startup_lines_to_show(said(), has_nvidia_driver()):
        sys.stderr.write(f"{line}\n")
    import_tensorflow._done = True  # type: ignore[attr-defined]
