"""Which devices TensorFlow sees, and the `train.device` check."""

from __future__ import annotations

import contextlib

from heartflow.errors import HeartflowError


def visible_devices() -> dict[str, list[str]]:
    """Physical CPU and GPU devices TensorFlow sees."""
    import tensorflow as tf

    return {kind: [d.name for d in tf.config.list_physical_devices(kind.upper())]
            for kind in ("cpu", "gpu")}


def check_device(wanted: str) -> None:
    """Fail before any training when `gpu` is required and none is visible."""
    if wanted != "gpu":
        return
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise HeartflowError("train.device is 'gpu' but TensorFlow sees no GPU on this machine;"
                             " use device: auto (or cpu), or run on a GPU worker")


def device_scope(wanted: str) -> contextlib.AbstractContextManager:
    """Where one run's network lives: the CPU for `cpu`, TensorFlow's choice otherwise.

    A scope, not a process-wide setting: the next run in the same process (a sweep
    worker's next trial) sees every device again.
    """
    if wanted != "cpu":
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.device("/CPU:0")


def device_tags(wanted: str) -> dict[str, str]:
    """MLflow tags describing the devices used."""
    seen = visible_devices()
    used = "gpu" if seen["gpu"] and wanted != "cpu" else "cpu"
    return {"heartflow.device.requested": wanted, "heartflow.device.used": used,
            "heartflow.device.gpus": ",".join(seen["gpu"]) or "none",
            "heartflow.device.cpus": ",".join(seen["cpu"])}
