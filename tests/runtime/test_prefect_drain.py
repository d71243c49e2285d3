"""Draining Prefect's clients inside a running event loop (a Jupyter kernel runs cells in
one) leaves no coroutine un-awaited: no "coroutine ... was never awaited" warning."""

from __future__ import annotations

import asyncio
import gc
import warnings

from heartflow.runtime.prefect_server import _drain_prefect_clients


def test_drain_inside_a_running_event_loop_awaits_everything() -> None:
    import prefect.events.worker  # noqa: F401  (Prefect loaded, as after a flow ran)

    async def cell() -> None:
        _drain_prefect_clients()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(cell())
        gc.collect()  # an un-awaited coroutine warns when it is collected
    assert not [w for w in caught if "never awaited" in str(w.message)]
