"""Which devices TensorFlow sees, and the `train.device` check."""

from __future__ import annotations

import contextlib

from heartflow.errors import HeartflowError


def visible_devices() -> dict[str, list[str]]:
    """Physical CPU and GPU devices TensorFlow sees."""
    # lazy: TensorFlow's 4 s import, only when a model is trained or scored
    import tensorflow as tf

    return {kind: [d.name for d in tf.config.list_physical_devices(kind.upper())]
            for kind in ("cpu", "gpu")}


def check_device(wanted: str) -> None:
    """Fail before any training when `gpu` is required and none is visible."""
    if wanted != "gpu":
        return
    # lazy: TensorFlow's 4 s import, only when a model is trained or scored
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise HeartflowError("train.device is 'gpu' but TensorFlow sees no GPU on this machine;"
                             " use device: auto (or cpu), or run on a GPU worker")


# `train.device: auto` on a machine with a GPU. Measured on an NVIDIA H200 with Keras 3
# (JAX backend), in-memory data, batch 1024: the 29-16-1 network (497 parameters) trains
# at 1.2M rows/s on the GPU and 2.7M rows/s on the same machine's 16 CPU cores (the CPU
# 2.3x faster: per-step launch overhead dominates a tiny network); 256x2 hidden units
# (~74k parameters): the GPU 1.8-3x faster; 1024x3 (~2.1M parameters): over 10x. Between
# 0.5k and 74k parameters nothing was measured; the rule switches at 10k, near the middle
# on a log scale.
GPU_MIN_PARAMETERS = 10_000


def choose_device(wanted: str, parameters: int, gpus: int) -> tuple[str, str]:
    """(``cpu`` or ``gpu``, why) for a network of ``parameters`` weights."""
    if wanted == "cpu":
        return "cpu", "train.device: cpu"
    if wanted == "gpu":
        return "gpu", "train.device: gpu"
    if not gpus:
        return "cpu", "auto: no GPU visible"
    if parameters < GPU_MIN_PARAMETERS:
        return "cpu", (f"auto: {parameters:,} parameters < {GPU_MIN_PARAMETERS:,}; a network "
                       "this small trains faster on the CPU (H200: 497 parameters, CPU 2.3x "
                       "faster)")
    return "gpu", (f"auto: {parameters:,} parameters >= {GPU_MIN_PARAMETERS:,}; wide networks "
                   "train faster on the GPU (H200: ~74k parameters 1.8-3x, ~2.1M over 10x)")


def device_scope(device: str) -> contextlib.AbstractContextManager:
    """Where one run's network lives: ``/CPU:0`` for ``cpu`` (as chosen by
    :func:`choose_device`), TensorFlow's placement (the GPU) otherwise.

    A scope, not a process-wide setting: the next run in the same process (a sweep
    worker's next trial) sees every device again.
    """
    if device != "cpu":
        return contextlib.nullcontext()
    # lazy: TensorFlow's 4 s import, only when a model is trained or scored
    import tensorflow as tf

    return tf.device("/CPU:0")


def device_for(wanted: str, parameters: int) -> str:
    """The device :func:`choose_device` picks on this machine (``cpu`` or ``gpu``)."""
    return choose_device(wanted, parameters, len(visible_devices()["gpu"]))[0]


def device_facts(wanted: str, parameters: int) -> dict[str, str]:
    """The devices seen, the one chosen and why (requested, used, reason, gpus, cpus)."""
    seen = visible_devices()
    used, reason = choose_device(wanted, parameters, len(seen["gpu"]))
    return {"requested": wanted, "used": used, "reason": reason,
            "gpus": ",".join(seen["gpu"]) or "none", "cpus": ",".join(seen["cpu"])}
