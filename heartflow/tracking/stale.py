"""Runs left RUNNING by heartflow processes that died (SIGKILL, a crash, a lost machine)."""

from __future__ import annotations

import socket

from heartflow.tracking import names as N
from heartflow.tracking.recorder import process_start
from heartflow.tracking.store import client


def stale_runs() -> list[dict[str, str]]:
    """RUNNING runs whose owning process on this host no longer exists (psutil)."""
    c = client()
    host = socket.gethostname()
    experiments = [e.experiment_id for e in c.search_experiments()]
    out = []
    if not experiments:
        return out
    for run in c.search_runs(experiments, filter_string="attributes.status = 'RUNNING'",
                             max_results=5000):
        tags = run.data.tags
        if tags.get(N.HOST) != host or not tags.get(N.PID):
            continue
        pid = int(tags[N.PID])
        started = process_start(pid)
        if not started or started != tags.get(N.PID_START, ""):
            out.append({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                        "run_name": run.info.run_name or "", "pid": str(pid)})
    return out


def mark_failed(run_id: str, reason: str) -> None:
    """End a stale run as FAILED with a reason tag."""
    c = client()
    c.set_tag(run_id, N.STATUS_REASON, reason)
    c.set_terminated(run_id, "FAILED")


