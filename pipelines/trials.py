"""One trial of a sweep, as a worker runs it: the plan it is given, the training flow's
body run as an MLflow child run, and a :class:`TrialResult` back (a failure is recorded as
a FAILED child run and returned, never raised). Used by the local worker processes
(:mod:`heartflow.pipelines.sweep`) and by a work pool's workers
(:mod:`heartflow.pipelines.sweep_pool`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from heartflow.data.sources import check_spec_source
from heartflow.pipelines.results import TrialResult
from heartflow.pipelines.training import execute, execute_seeds
from heartflow.spec.loading import load_spec_text
from heartflow.tracking import names as N
from heartflow.tracking.recorder import tracked_run


@dataclass(frozen=True)
class TrialPlan:
    """What a worker needs to run one trial (picklable; JSON for a pool's worker)."""

    number: int
    spec_path: str
    spec_text: str
    overrides: dict[str, Any]
    parent_run_id: str
    register: bool = False

    @property
    def run_name(self) -> str:
        """``trial-03 hidden.0.units=8``."""
        label = " ".join(f"{k.removeprefix('model.').removeprefix('train.')}={v}"
                         for k, v in self.overrides.items())
        return f"trial-{self.number:02d} {label}".strip()

    def as_dict(self) -> dict[str, Any]:
        """Plain data (a pool's flow-run parameter)."""
        return asdict(self)


def run_trial(plan: TrialPlan) -> TrialResult:
    """Run one trial; a failure is recorded (FAILED child run) and returned, not raised."""
    start = time.perf_counter()
    try:
        loaded = load_spec_text(plan.spec_text, plan.spec_path, overrides=plan.overrides)
        check_spec_source(loaded)
        outcome = execute(loaded, verbose=False, register=plan.register,
                          parent_run_id=plan.parent_run_id, run_name=plan.run_name)
        return TrialResult(plan.number, plan.overrides, True, time.perf_counter() - start,
                           outcome)
    except Exception as exc:  # one bad trial must not stop the others
        return _failed(plan, exc, time.perf_counter() - start)


def run_seed_group(plans: list[TrialPlan]) -> list[TrialResult]:
    """Trials that differ only in ``train.seed``: their networks trained together
    (:func:`heartflow.pipelines.training.execute_seeds`), each tracked as its own trial.
    If the shared part fails, the trials run one by one (each failure recorded)."""
    start = time.perf_counter()
    try:
        loadeds = [load_spec_text(p.spec_text, p.spec_path, overrides=p.overrides)
                   for p in plans]
        check_spec_source(loadeds[0])
        outcomes = execute_seeds(loadeds, register=plans[0].register,
                                 parent_run_id=plans[0].parent_run_id,
                                 run_names=[p.run_name for p in plans])
    except Exception:
        return [run_trial(p) for p in plans]
    seconds = (time.perf_counter() - start) / len(plans)  # each trial's share
    return [_failed(p, outcome, seconds) if isinstance(outcome, Exception)
            else TrialResult(p.number, p.overrides, True, seconds, outcome)
            for p, outcome in zip(plans, outcomes, strict=True)]


def _failed(plan: TrialPlan, exc: Exception, seconds: float) -> TrialResult:
    run_id = getattr(exc, "heartflow_run_id", None)
    if run_id is None:
        run_id = _record_failure(plan, exc)
    return TrialResult(plan.number, plan.overrides, False, seconds, run_id=run_id,
                       error=f"{type(exc).__name__}: {exc}")


def _record_failure(plan: TrialPlan, exc: Exception) -> str | None:
    """A FAILED child run for a trial that failed before its own run existed."""
    name = (yaml.safe_load(plan.spec_text) or {}).get("name", "sweep")
    run_id = None
    try:
        with tracked_run(str(name), "failed-trial", parent_run_id=plan.parent_run_id,
                         tags={N.OVERRIDES: json.dumps(plan.overrides)}) as rec:
            run_id = rec.run_id
            raise exc
    except Exception:
        pass
    return run_id
