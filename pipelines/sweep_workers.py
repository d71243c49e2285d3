"""The sweep's worker processes: their start-up (quiet imports, thread counts, plugins), and
the cores and GPU each one takes.

- **Cores.** The cores a sweep may use are those of this process' affinity, capped by
  its cgroup CPU quota (a container given 2 CPUs of a 16-core host has 2). Each of W
  workers gets ``cores // W`` threads and, when W > 1, pins them to that many cores of
  its own. Left to float, TensorFlow's compute thread kept landing on the other worker's
  core: two trials side by side each ran ~8% slower than alone; pinned, as fast as alone.
- **Claims are machine-wide and die with their worker.** A core is claimed by holding an
  exclusive lock on ``core-N.lock`` in one folder per user (not per sweep), so two
  sweeps running at once never pin two workers to the same core; a worker that finds too
  few free cores does not pin at all. The OS drops the lock when the worker exits, so a
  crashed sweep leaves nothing claimed.
- **GPUs.** A worker on a machine with GPUs claims one the same way, sees only that one,
  and turns on memory growth, so several workers can share a machine without each
  reserving every GPU's memory: one trial per GPU at a time.
"""

from __future__ import annotations

import math
import os
import tempfile

from filelock import FileLock, Timeout

from heartflow.model.plugins import load_plugins
from heartflow.runtime.gc_pause import imports_without_gc
from heartflow.runtime.quiet_import import import_tensorflow

_HELD: list = []  # the locks this worker holds for its lifetime


def claims_folder() -> str:
    """Where cores and GPUs are claimed: one folder per user on this machine."""
    folder = os.environ.get("HEARTFLOW_CLAIMS_DIR") or os.path.join(
        tempfile.gettempdir(), f"heartflow-claims-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    return folder


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_*``), or None."""
    try:
        with open(os.path.join(root, "cpu.max"), encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us"), encoding="ascii") as fh:
            quota_us = int(fh.read().strip())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us"), encoding="ascii") as fh:
            period_us = int(fh.read().strip())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """Cores this process may use: its affinity, capped by its cgroup CPU quota."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cgroup_root)
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def _try_lock(name: str):

    lock = FileLock(os.path.join(claims_folder(), name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def claim_cores(count: int) -> list[int]:
    """Take ``count`` cores no other heartflow worker on this machine holds, and pin every
    thread of this process to them; [] (not pinned) when too few are free."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    taken = []
    for core in sorted(os.sched_getaffinity(0)):
        lock = _try_lock(f"core-{core}.lock")
        if lock is not None:
            taken.append((core, lock))
        if len(taken) == count:
            break
    if len(taken) < count:
        for _core, lock in taken:
            lock.release()
        return []
    cores = {core for core, _lock in taken}
    _HELD.extend(lock for _core, lock in taken)
    for thread in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread), cores)
        except OSError:  # a thread that has just ended
            pass
    return sorted(cores)


def claim_gpu() -> int | None:
    """Take a GPU no other heartflow worker holds; make it the only one TensorFlow sees, with
    memory growth on. None when there is no GPU (or every GPU is taken: CPU then)."""
    # lazy: TensorFlow's 4 s import, only when a model is trained or scored
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for index, gpu in enumerate(gpus):
        lock = _try_lock(f"gpu-{index}.lock")
        if lock is None:
            continue
        _HELD.append(lock)
        tf.config.set_visible_devices([gpu], "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)
        return index
    if gpus:
        tf.config.set_visible_devices([], "GPU")
    return None


def init_worker(threads: int, pin: bool, plugins: list[str]) -> None:
    """Each worker imports TensorFlow and the run pipeline once, with its share of the
    cores (pinned when ``pin``) and at most one GPU."""
    if pin:
        claim_cores(threads)
    with imports_without_gc():  # after the cores are claimed: TensorFlow sizes its pools
        import_tensorflow()
        # lazy: the worker's start-up imports TensorFlow, MLflow and Prefect, once
        import heartflow.pipelines.training  # noqa: F401
        from heartflow.tracking.store import preload

        preload()
    load_plugins(plugins)
    # lazy: TensorFlow's 4 s import, only when a model is trained or scored
    import tensorflow as tf

    claim_gpu()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
