"""The sweep's worker processes: their start-up (quiet imports, thread counts, plugins) and cores.

On a machine with as many cores as workers, each worker claims a core of its own and
pins its threads there. Left to float, TensorFlow's compute thread keeps landing on the
other worker's core: two trials side by side each ran ~8% slower than alone; pinned,
as fast as alone. A claim is a file created exclusively in a folder the sweep owns, so
two workers of one sweep never take the same core.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def init_worker(threads: int, core_claims: str | None, plugins: list[str]) -> None:
    """Each worker imports TensorFlow and the run pipeline once, with its share of the cores."""
    if core_claims is not None:
        pin_to_free_core(core_claims)
    from heartflow.model.plugins import load_plugins
    from heartflow.runtime.gc_pause import imports_without_gc
    from heartflow.runtime.quiet_import import import_tensorflow

    with imports_without_gc():
        import_tensorflow()
        import heartflow.pipelines.training  # noqa: F401
        from heartflow.tracking.runs import preload

        preload()
    load_plugins(plugins)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def pin_to_free_core(claims: str) -> None:
    """Pin this worker (all its threads) to a core no other worker of the sweep has claimed."""
    for core in sorted(os.sched_getaffinity(0)):
        try:
            os.close(os.open(os.path.join(claims, f"core-{core}"),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        for thread in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(thread), {core})
            except OSError:  # a thread that has just ended
                pass
        return
