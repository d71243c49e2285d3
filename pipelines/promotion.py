"""The promotion gate as one step of a flow: under the registry lock, the champion and the rows
it has seen come from the registry, evaluation judges, and the registry applies the decision.
"""

from __future__ import annotations

from dataclasses import replace

from prefect import task

from heartflow.errors import RegistryError
from heartflow.evaluation.gate import Decision, GateRows, judge, score
from heartflow.model.scorer import Scorer
from heartflow.pipelines.task_options import RETRYING
from heartflow.spec.schema import PromoteSpec
from heartflow.tracking import names as N
from heartflow.tracking import registry
from heartflow.tracking.locks import registry_lock
from heartflow.tracking.logged_model import load_scorer


@task(name="promotion-gate", **RETRYING)
def gate_task(name: str, version: str, run_id: str, challenger: Scorer, rows: GateRows,
              rule: PromoteSpec, metric: str) -> Decision:
    """Make ``version`` the challenger, judge it against the champion, move the aliases."""
    with registry_lock(name):  # aliases are set read-then-write: one process at a time
        registry.set_challenger(name, version)
        champion = registry.alias_version(name, N.CHAMPION)
        if champion == version:  # a retried step: this version already won
            value = score(challenger, rows, metric)
            decision = Decision(True, metric, value, value, champion, "already champion",
                                len(rows.y), 0)
        elif champion is None:
            decision = judge(metric, challenger, rows, rule=rule.rule,
                             min_gate_rows=rule.min_gate_rows)
        else:
            decision = judge(metric, challenger, rows, champion=_load(name, champion),
                             champion_version=champion, seen=registry.seen_keys(name, champion),
                             rule=rule.rule, margin=rule.margin,
                             min_gate_rows=rule.min_gate_rows)
        if decision.promoted and rule.require_approval and champion != version:
            decision = awaiting_approval(decision, name, version)
        registry.apply_decision(name, version, run_id, decision)
    return decision


def awaiting_approval(decision: Decision, name: str, version: str) -> Decision:
    """A passed gate under ``register.promote.require_approval``: the version stays
    challenger, marked as passed, until ``heartflow approve``."""
    return replace(decision, promoted=False, awaiting_approval=True,
                   reason=f"{decision.reason}; passed the gate, awaiting approval: "
                          f"heartflow approve {name} {version}")


def _load(name: str, version: str) -> Scorer:
    try:
        return load_scorer(f"models:/{name}/{version}")
    except Exception as exc:
        raise RegistryError(f"cannot load champion {name} v{version} to re-score it: "
                            f"{exc}") from exc
