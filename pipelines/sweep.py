"""`heartflow sweep`: trials in parallel worker processes, each an MLflow child run."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

from prefect import flow, task
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner

from heartflow.pipelines.sweep_workers import available_cores, init_worker
from heartflow.pipelines.task_options import TASK_OPTIONS
from heartflow.tracking import runs as tracking
from heartflow.tracking.compare import choose, selection_score


@task(name="trial", **TASK_OPTIONS)
def trial_task(number: int, spec_path: str, spec_text: str, overrides: dict[str, Any],
               parent_run_id: str) -> dict[str, Any]:
    """One trial in a worker process of this machine."""
    return run_trial(number, spec_path, spec_text, overrides, parent_run_id)


@task(name="seed-group", **TASK_OPTIONS)
def seed_group_task(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials that differ only in their seed, trained together in a worker process."""
    return run_seed_group(payloads)


def _run_name(number: int, overrides: dict[str, Any]) -> str:
    label = " ".join(f"{k.removeprefix('model.').removeprefix('train.')}={v}"
                     for k, v in overrides.items() if k != "register.enabled")
    return f"trial-{number:02d} {label}".strip()


def run_trial(number: int, spec_path: str, spec_text: str, overrides: dict[str, Any],
              parent_run_id: str) -> dict[str, Any]:
    """Run one trial; a failure is recorded (FAILED child run) and returned, not raised."""
    from heartflow.data.sources import check_spec_source
    from heartflow.pipelines.training import execute
    from heartflow.spec.loading import load_spec_text

    start = time.perf_counter()
    try:
        loaded = load_spec_text(spec_text, spec_path, overrides=overrides)
        check_spec_source(loaded)
        outcome = execute(loaded, verbose=False, parent_run_id=parent_run_id,
                          run_name=_run_name(number, overrides))
        return {"number": number, "overrides": overrides, "ok": True,
                "outcome": outcome.as_dict(), "seconds": time.perf_counter() - start}
    except Exception as exc:  # one bad trial must not stop the others
        return _failed(number, spec_path, spec_text, overrides, parent_run_id, exc,
                       time.perf_counter() - start)


def run_seed_group(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials that differ only in ``train.seed``: their networks trained together
    (:func:`heartflow.pipelines.training.execute_seeds`), each tracked as its own trial.
    If the shared part fails, the trials run one by one (each failure recorded)."""
    from heartflow.data.sources import check_spec_source
    from heartflow.pipelines.training import execute_seeds
    from heartflow.spec.loading import load_spec_text

    start = time.perf_counter()
    try:
        loadeds = [load_spec_text(p["spec_text"], p["spec_path"], overrides=p["overrides"])
                   for p in payloads]
        check_spec_source(loadeds[0])
        outcomes = execute_seeds(loadeds, parent_run_id=payloads[0]["parent_run_id"],
                                 run_names=[_run_name(p["number"], p["overrides"])
                                            for p in payloads])
    except Exception:
        return [run_trial(**p) for p in payloads]
    seconds = (time.perf_counter() - start) / len(payloads)  # each trial's share
    return [_failed(p["number"], p["spec_path"], p["spec_text"], p["overrides"],
                    p["parent_run_id"], outcome, seconds) if isinstance(outcome, Exception)
            else {"number": p["number"], "overrides": p["overrides"], "ok": True,
                  "outcome": outcome.as_dict(), "seconds": seconds}
            for p, outcome in zip(payloads, outcomes, strict=True)]


def seed_groups(payloads: list[dict[str, Any]], together: bool) -> list[list[dict[str, Any]]]:
    """Trials grouped by everything but ``train.seed`` (each trial alone unless
    ``together``); groups keep the trials' order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for payload in payloads:
        rest = {k: v for k, v in payload["overrides"].items() if k != "train.seed"}
        key = json.dumps(rest, sort_keys=True, default=str) if together else str(
            payload["number"])
        groups.setdefault(key, []).append(payload)
    return list(groups.values())


def _failed(number: int, spec_path: str, spec_text: str, overrides: dict[str, Any],
            parent_run_id: str, exc: Exception, seconds: float) -> dict[str, Any]:
    run_id = getattr(exc, "heartflow_run_id", None)
    if run_id is None:
        run_id = _record_failure(spec_text, spec_path, overrides, parent_run_id, exc)
    return {"number": number, "overrides": overrides, "ok": False, "run_id": run_id,
            "error": f"{type(exc).__name__}: {exc}", "seconds": seconds}


def _record_failure(spec_text: str, spec_path: str, overrides: dict[str, Any],
                    parent_run_id: str, exc: Exception) -> str | None:
    import yaml

    name = (yaml.safe_load(spec_text) or {}).get("name", "sweep")
    run_id = None
    try:
        with tracking.tracked_run(str(name), "failed-trial", parent_run_id=parent_run_id,
                                  tags={"heartflow.overrides": json.dumps(
                                      {k: v for k, v in overrides.items()
                                       if k != "register.enabled"})}) as rec:
            run_id = rec.run_id
            raise exc
    except Exception:
        pass
    return run_id


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


class _Tally:
    """Trials as they finish: the best so far on development rows, and the progress line."""

    def __init__(self, metric: str, total: int, progress: bool) -> None:
        from heartflow.spec.vocabulary import HIGHER_IS_BETTER

        self.metric, self.total, self.progress = metric, total, progress
        self.higher = metric in HIGHER_IS_BETTER
        self.done: list[dict[str, Any]] = []
        self.best: tuple[float, str] | None = None

    def add(self, result: dict[str, Any]) -> dict[str, Any]:
        self.done.append(result)
        score = selection_score(result["outcome"], self.metric)[0] if result["ok"] \
            else float("nan")
        if score == score:  # defined on development rows
            label = ", ".join(f"{k}={v}" for k, v in result["overrides"].items()
                              if k != "register.enabled")
            if self.best is None or (score > self.best[0] if self.higher
                                     else score < self.best[0]):
                self.best = (score, label)
        if self.progress:
            _progress(len(self.done), self.total, sum(not r["ok"] for r in self.done),
                      self.best, self.metric)
        return result


@flow(name="heartflow-sweep", persist_result=False, validate_parameters=False)
def sweep_flow(sweep_path: str, workers: int | None = None, progress: bool = True,
               plugins: list[str] | None = None, pool: str | None = None) -> dict[str, Any]:
    """Run every trial of a sweep file under one MLflow parent run: in worker processes
    of this machine, or (``pool``) as flow runs that the work pool's workers pick up."""
    from heartflow.spec.sweep import load_sweep

    sweep = load_sweep(sweep_path)
    metric = sweep.metric
    n_workers = workers or sweep.workers
    base = sweep.base
    tracking.check_reachable()
    results: list[dict[str, Any]] = []
    with tracking.tracked_run(base.spec.name, sweep.name + "-sweep",
                              tags={"heartflow.sweep": sweep.path,
                                    "heartflow.spec_name": base.spec.name}) as parent:
        parent.params({"sweep.trials": str(len(sweep.trials)),
                       "sweep.metric": metric, "sweep.base": base.path,
                       **{f"sweep.axis.{k}": str(v) for k, v in sweep.section.axes.items()}})
        parent.text(open(sweep.path, encoding="utf-8").read(), "spec/sweep.yaml")
        payloads = [{"number": t.number, "spec_path": base.path, "spec_text": base.text,
                     "overrides": {**t.overrides, "register.enabled": sweep.section.register},
                     "parent_run_id": parent.run_id} for t in sweep.trials]
        groups = seed_groups(payloads, sweep.section.seeds_together and not pool)
        n_workers = min(n_workers, len(groups))  # a group of seeds is one worker's job
        tally = _Tally(metric, len(payloads), progress)
        start = time.perf_counter()
        if pool:
            from heartflow.pipelines.sweep_pool import run_on_pool

            parent.params({"sweep.pool": pool})
            results = run_on_pool(pool, payloads, parent.run_id, tally.add)
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
                futures = [runner.submit(seed_group_task, {"payloads": group})
                           if len(group) > 1 else runner.submit(trial_task, group[0])
                           for group in groups]
                for future in as_completed(futures):
                    done = future.result()
                    for result in done if isinstance(done, list) else [done]:
                        results.append(tally.add(result))
        wall = time.perf_counter() - start
        results.sort(key=lambda r: r["number"])
        ok = [r for r in results if r["ok"]]
        parent.metrics({"sweep_wall_seconds": wall, "trials_failed": len(results) - len(ok)})
        spec = base.spec
        choice = choose([r["outcome"] for r in ok], metric, spec.task,
                        spec.evaluate.decision_threshold)
        if choice["ranked"]:
            best_outcome = choice["ranked"][0]
            parent.metrics({f"best_{choice['source']}_{metric}":
                            selection_score(best_outcome, metric)[0]})
            parent.tags({"heartflow.best_run": best_outcome["run_id"],
                         "heartflow.chosen_by": f"{choice['source']} {metric} "
                                                "(development rows)",
                         "heartflow.leader_vs_runner_up": choice["summary"]})
        if ok:
            with tempfile.TemporaryDirectory() as folder:
                from heartflow.evaluation.plots import sweep_plots

                sweep_plots(ok, metric, sweep.section.axes, folder)
                parent.directory(folder, "plots")
    return {"parent_run_id": parent.run_id, "experiment_id": parent.experiment_id,
            "metric": metric, "wall_seconds": wall, "workers": n_workers, "pool": pool,
            "trials": results, "choice": {k: v for k, v in choice.items() if k != "ranked"}}


os.environ.setdefault("PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS", str(os.cpu_count() or 1))
