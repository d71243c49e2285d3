"""The sweep flow: ``heartflow sweep`` / ``hf.sweep``.

Every trial runs the training flow's body as an MLflow child run of one parent run: in
worker processes of this machine (trials that differ only in their seed train together in
one), or (``--pool``) as flow runs for a Prefect work pool's workers
(:mod:`heartflow.pipelines.sweep_pool`). The best trial is chosen on development rows
(:mod:`heartflow.evaluation.ranking`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, task
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner

from heartflow.evaluation.plots import sweep_plots
from heartflow.evaluation.ranking import choose, selection_score
from heartflow.pipelines.results import TrialResult
from heartflow.pipelines.sweep_pool import run_on_pool
from heartflow.pipelines.sweep_workers import available_cores, init_worker
from heartflow.pipelines.task_options import TASK_OPTIONS
from heartflow.pipelines.trials import TrialPlan, run_seed_group, run_trial
from heartflow.spec.sweep import load_sweep
from heartflow.spec.vocabulary import improvement
from heartflow.tracking import names as N
from heartflow.tracking.recorder import tracked_run
from heartflow.tracking.store import check_reachable


@task(name="trial", **TASK_OPTIONS)
def trial_task(plan: TrialPlan) -> TrialResult:
    """One trial in a worker process of this machine."""
    return run_trial(plan)


@task(name="seed-group", **TASK_OPTIONS)
def seed_group_task(plans: list[TrialPlan]) -> list[TrialResult]:
    """Trials that differ only in their seed, trained together in a worker process."""
    return run_seed_group(plans)


def seed_groups(plans: list[TrialPlan], together: bool) -> list[list[TrialPlan]]:
    """Trials grouped by everything but ``train.seed`` (each trial alone unless
    ``together``); groups keep the trials' order."""
    groups: dict[str, list[TrialPlan]] = {}
    for plan in plans:
        rest = {k: v for k, v in plan.overrides.items() if k != "train.seed"}
        key = json.dumps(rest, sort_keys=True, default=str) if together else str(plan.number)
        groups.setdefault(key, []).append(plan)
    return list(groups.values())


def _progress(done: int, total: int, failed: int, best: tuple[float, str] | None,
              metric: str) -> None:
    text = f"trials {done}/{total} done"
    if failed:
        text += f" ({failed} failed)"
    if best:
        text += f", best {metric} {best[0]:.4f} [{best[1]}]"
    end = "\n" if done == total or not sys.stderr.isatty() else ""
    sys.stderr.write(("\r" if sys.stderr.isatty() else "") + text.ljust(90) + end)
    sys.stderr.flush()


@dataclass
class _Tally:
    """Trials as they finish: the best so far on development rows, and the progress line."""

    metric: str
    total: int
    progress: bool
    done: list[TrialResult] = field(default_factory=list)
    best: tuple[float, str] | None = None

    def add(self, result: TrialResult) -> TrialResult:
        self.done.append(result)
        score = (selection_score(result.outcome, self.metric)[0] if result.outcome
                 else float("nan"))
        if score == score and (self.best is None
                               or improvement(self.metric, score, self.best[0]) > 0):
            self.best = (score, result.label)
        if self.progress:
            _progress(len(self.done), self.total, sum(not r.ok for r in self.done),
                      self.best, self.metric)
        return result


@dataclass(frozen=True)
class SweepOutcome:
    """What the sweep flow returns: the parent run, the trials and how the best was chosen."""

    parent_run_id: str
    experiment_id: str
    metric: str
    wall_seconds: float
    workers: int
    pool: str | None
    trials: list[TrialResult]
    choice: dict[str, Any]


@flow(name="heartflow-sweep", persist_result=False, validate_parameters=False)
def sweep_flow(sweep_path: str, workers: int | None = None, progress: bool = True,
               plugins: list[str] | None = None, pool: str | None = None) -> SweepOutcome:
    """Run every trial of a sweep file under one MLflow parent run: in worker processes
    of this machine, or (``pool``) as flow runs that the work pool's workers pick up."""
    sweep = load_sweep(sweep_path)
    metric = sweep.metric
    n_workers = workers or sweep.workers
    base = sweep.base
    check_reachable()
    results: list[TrialResult] = []
    with tracked_run(base.spec.name, sweep.name + "-sweep",
                     tags={N.SWEEP: sweep.path, N.SPEC_NAME: base.spec.name}) as parent:
        parent.params({"sweep.trials": str(len(sweep.trials)),
                       "sweep.metric": metric, "sweep.base": base.path,
                       **{f"sweep.axis.{k}": str(v) for k, v in sweep.section.axes.items()}})
        parent.text(open(sweep.path, encoding="utf-8").read(), N.SWEEP_ARTIFACT)
        plans = [TrialPlan(t.number, base.path, base.text, t.overrides, parent.run_id,
                           sweep.section.register) for t in sweep.trials]
        groups = seed_groups(plans, sweep.section.seeds_together and not pool)
        n_workers = min(n_workers, len(groups))  # a group of seeds is one worker's job
        tally = _Tally(metric, len(plans), progress)
        start = time.perf_counter()
        if pool:
            parent.params({"sweep.pool": pool})
            results = run_on_pool(pool, plans, parent.run_id, tally.add)
        else:
            cores = available_cores()
            threads = max(1, cores // n_workers)  # workers x threads = the cores we may use
            pin = 1 < n_workers <= cores and os.path.isdir("/proc/self/task")
            parent.params({"sweep.workers": str(n_workers),
                           "sweep.threads_per_worker": str(threads),
                           "sweep.cores": str(cores)})
            runner = ProcessPoolTaskRunner(max_workers=n_workers, initializer=init_worker,
                                           initargs=(threads, pin, list(plugins or [])))
            with runner:
                futures = [runner.submit(seed_group_task, {"plans": group})
                           if len(group) > 1 else runner.submit(trial_task, {"plan": group[0]})
                           for group in groups]
                for future in as_completed(futures):
                    done = future.result()
                    for result in done if isinstance(done, list) else [done]:
                        results.append(tally.add(result))
        wall = time.perf_counter() - start
        results.sort(key=lambda r: r.number)
        ok = [r for r in results if r.ok]
        parent.metrics({"sweep_wall_seconds": wall, "trials_failed": len(results) - len(ok)})
        spec = base.spec
        choice = choose([r.outcome for r in ok], metric, spec.task,
                        spec.evaluate.decision_threshold)
        if choice["ranked"]:
            best_outcome = choice["ranked"][0]
            parent.metrics({f"best_{choice['source']}_{metric}":
                            selection_score(best_outcome, metric)[0]})
            parent.tags({N.BEST_RUN: best_outcome.run_id,
                         N.CHOSEN_BY: f"{choice['source']} {metric} (development rows)",
                         N.LEADER_VS_RUNNER_UP: choice["summary"]})
        if ok:
            with tempfile.TemporaryDirectory() as folder:
                sweep_plots(ok, metric, sweep.section.axes, folder)
                parent.directory(folder, N.PLOTS_FOLDER)
    return SweepOutcome(parent.run_id, parent.experiment_id, metric, wall, n_workers, pool,
                        results, {k: v for k, v in choice.items() if k != "ranked"})


os.environ.setdefault("PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS", str(os.cpu_count() or 1))
