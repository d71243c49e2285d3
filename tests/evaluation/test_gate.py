"""The promotion gate's judgement, against scikit-learn on the very rows it says it used.

The models here are fixed risk tables (a row's risk looked up by its key), so each figure
the gate reports can be recomputed independently; the gate itself is the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from heartflow.evaluation.gate import GateRows, judge
from heartflow.evaluation.intervals import paired_difference


@dataclass(frozen=True)
class _Meta:
    threshold: float
    task: str = "binary"
    numeric: tuple[str, ...] = ("x",)
    categorical: tuple[str, ...] = ()


@dataclass
class _RiskTable:
    """A model that gives each row (by its ``key`` column) a stored risk."""

    risks: dict[str, float]
    meta: _Meta = field(default_factory=lambda: _Meta(0.5))
    task: str = "binary"

    def output(self, features: pd.DataFrame) -> np.ndarray:
        return np.array([self.risks[k] for k in features["key"]])


def _rows(n: int = 200, seed: int = 0) -> tuple[GateRows, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    keys = [f"{i:04x}" for i in range(n)]
    return GateRows(pd.DataFrame({"key": keys, "x": rng.random(n)}), y, keys), y


def test_champion_is_scored_at_its_own_threshold() -> None:
    rows, y = _rows()
    rng = np.random.default_rng(1)
    p_new = np.clip(0.6 * y + 0.4 * rng.random(len(y)), 0, 1)
    p_old = np.clip(0.3 * y + 0.25 * rng.random(len(y)), 0, 1)  # ranks well, risks low
    challenger = _RiskTable(dict(zip(rows.keys, p_new, strict=True)))
    champion = _RiskTable(dict(zip(rows.keys, p_old, strict=True)), _Meta(0.3))
    decision = judge("accuracy", challenger, rows, champion=champion, champion_version="1",
                     seen=set(), rule="point")
    assert decision.champion_score == pytest.approx(accuracy_score(y, p_old >= 0.3))
    assert decision.challenger_score == pytest.approx(accuracy_score(y, p_new >= 0.5))
    # At the challenger's threshold the champion would look far worse than it is.
    assert accuracy_score(y, p_old >= 0.5) < decision.champion_score - 0.2


def test_only_rows_the_champion_never_saw_are_used() -> None:
    rows, y = _rows()
    rng = np.random.default_rng(2)
    p_new, p_old = rng.random(len(y)), rng.random(len(y))
    seen = set(rows.keys[:80])
    decision = judge("roc_auc", _RiskTable(dict(zip(rows.keys, p_new, strict=True))), rows,
                     champion=_RiskTable(dict(zip(rows.keys, p_old, strict=True))),
                     champion_version="1", seen=seen)
    fair = np.arange(len(y)) >= 80
    assert (decision.gate_rows, decision.excluded_rows) == (120, 80)
    assert decision.challenger_score == pytest.approx(roc_auc_score(y[fair], p_new[fair]))
    assert decision.champion_score == pytest.approx(roc_auc_score(y[fair], p_old[fair]))


def test_unknown_champion_rows_refuse_to_decide() -> None:
    rows, y = _rows()
    model = _RiskTable(dict(zip(rows.keys, np.linspace(0, 1, len(y)), strict=True)))
    decision = judge("roc_auc", model, rows, champion=model, champion_version="4", seen=None)
    assert decision.undecided and not decision.promoted
    assert "cannot be known" in decision.reason and "0 excluded" not in decision.reason


def test_baselines_are_scored_on_the_same_fair_rows() -> None:
    rows, y = _rows()
    rng = np.random.default_rng(3)
    p_new = np.clip(0.3 * y + 0.7 * rng.random(len(y)), 0, 1)
    p_old = rng.random(len(y))
    # The baseline is perfect on the rows the champion saw, useless on the others.
    baseline = np.where(np.arange(len(y)) < 100, y.astype(float), rng.random(len(y)))
    rows = GateRows(rows.features, rows.y, rows.keys, {"logistic_regression": baseline})
    decision = judge("roc_auc", _RiskTable(dict(zip(rows.keys, p_new, strict=True))), rows,
                     champion=_RiskTable(dict(zip(rows.keys, p_old, strict=True))),
                     champion_version="1", seen=set(rows.keys[:100]))
    fair = np.arange(len(y)) >= 100
    assert roc_auc_score(y[fair], p_new[fair]) > roc_auc_score(y[fair], baseline[fair])
    assert roc_auc_score(y, p_new) < roc_auc_score(y, baseline)  # all rows: baseline wins
    assert decision.promoted, decision.reason


def test_without_a_champion_the_interval_against_no_information_decides() -> None:
    rows, y = _rows(n=120)
    rng = np.random.default_rng(4)
    good = np.clip(0.6 * y + 0.4 * rng.random(len(y)), 0, 1)
    noise = rng.random(len(y))
    promoted = judge("roc_auc", _RiskTable(dict(zip(rows.keys, good, strict=True))), rows)
    refused = judge("roc_auc", _RiskTable(dict(zip(rows.keys, noise, strict=True))), rows)
    null = np.full(len(y), y.mean())
    for decision, p in ((promoted, good), (refused, noise)):
        diff, low, _high = paired_difference("binary", y, p, null, 0.5, "roc_auc")
        assert diff == pytest.approx(roc_auc_score(y, p) - 0.5)
        assert decision.promoted is (low > 0)
    assert promoted.promoted and not refused.promoted
    assert "no-information" in refused.reason


def test_nan_outputs_are_never_promoted() -> None:
    rows, _y = _rows(n=60)
    broken = _RiskTable({k: float("nan") for k in rows.keys})
    decision = judge("roc_auc", broken, rows)
    assert not decision.promoted and "undefined" in decision.reason


@pytest.mark.parametrize(("rule", "margin"), [("superior", 0.0), ("superior", 0.05),
                                              ("non_inferior", 0.02), ("point", 0.0)])
def test_rules_decide_on_the_paired_interval_of_the_difference(rule, margin) -> None:
    """Accuracy of two models on the same 400 rows: the gate's 95% interval of the difference
    agrees with the normal approximation for paired proportions, and the rule reads it."""
    n = 400
    rows, y = _rows(n=n, seed=5)
    rng = np.random.default_rng(6)
    right_new = rng.random(n) < 0.82
    right_old = np.where(rng.random(n) < 0.7, right_new, rng.random(n) < 0.75)
    p_new = np.where(right_new, y, 1 - y).astype(float)
    p_old = np.where(right_old, y, 1 - y).astype(float)
    decision = judge("accuracy", _RiskTable(dict(zip(rows.keys, p_new, strict=True))), rows,
                     champion=_RiskTable(dict(zip(rows.keys, p_old, strict=True))),
                     champion_version="1", seen=set(), rule=rule, margin=margin)
    b, c = int(np.sum(right_new & ~right_old)), int(np.sum(~right_new & right_old))
    diff = (b - c) / n
    half = 1.96 * np.sqrt(b + c - (b - c) ** 2 / n) / n
    assert decision.difference == pytest.approx(diff)
    assert decision.ci_low == pytest.approx(diff - half, abs=0.012)
    assert decision.ci_high == pytest.approx(diff + half, abs=0.012)
    expected = {"superior": decision.ci_low > margin, "non_inferior": decision.ci_low > -margin,
                "point": diff > margin}[rule]
    assert decision.promoted is bool(expected) and decision.rule == rule
