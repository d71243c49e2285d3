"""What a fitted model needs besides its weights and encoder, as one frozen, versioned record.

:class:`ModelMeta` travels with every logged model as ``meta.json``: the raw columns it
reads and how (missing codes, na values), its task, classes and outcome rule, the decision
threshold in force, the plugins its activations come from, how ``heartflow evaluate``
judges it at other sites, and (for a recalibrated version) the recalibration rule. It is
learned state, kept apart from the spec (configuration), the way scikit-learn keeps
``fit`` results in trailing-underscore attributes apart from ``get_params``.

The JSON is versioned (``format``); models logged before it (``heartflow.meta/1``, the
same keys without a frozen schema) load unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from heartflow.spec.schema import MIN_SUBGROUP_ROWS, REPORT_AT

FORMAT = "heartflow.meta/2"
READABLE = ("heartflow.meta/1", FORMAT)


@dataclass(frozen=True)
class EvaluationPlan:
    """How the model is judged on other sites' rows (``heartflow evaluate``)."""

    report_at: tuple[float, ...] = REPORT_AT
    subgroups: tuple[dict[str, Any], ...] = ()  # SubgroupSpec fields
    min_subgroup_rows: int = MIN_SUBGROUP_ROWS
    costs: dict[str, Any] | None = None  # ThresholdCosts fields


@dataclass(frozen=True)
class ModelMeta:
    """A fitted model's columns, task, threshold and rules (see the module docstring)."""

    spec_name: str
    task: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    na_values: tuple[str, ...]
    threshold: float
    classes: tuple[str, ...]
    target: str
    target_positive: Any = None
    missing_codes: dict[str, Any] = field(default_factory=dict)
    input_width: int = 0
    plugins: tuple[str, ...] = ()
    evaluate: EvaluationPlan = field(default_factory=EvaluationPlan)
    recalibration: dict[str, Any] | None = None

    @property
    def columns(self) -> list[str]:
        """The raw feature columns the model reads, numeric first."""
        return [*self.numeric, *self.categorical]

    @classmethod
    def from_spec(cls, spec: Any, encoder: Any, classes: list[str], threshold: float,
                  plugins: list[str] | None = None) -> ModelMeta:
        """The meta of a model trained from ``spec`` with ``encoder``; ``threshold`` is the
        decision threshold settled for it (given, from costs, or chosen on validation)."""
        ev = spec.evaluate
        return cls(
            spec_name=spec.name, task=spec.task, numeric=tuple(encoder.numeric),
            categorical=tuple(encoder.categorical), na_values=tuple(encoder.na_values),
            threshold=float(threshold), classes=tuple(str(c) for c in classes),
            target=spec.data.target_spec.column,
            target_positive=spec.data.target_spec.positive,
            missing_codes=dict(spec.data.missing_codes), input_width=encoder.width,
            plugins=tuple(plugins or ()),
            evaluate=EvaluationPlan(
                report_at=tuple(ev.decision_curve.report_at),
                subgroups=tuple(g.model_dump() for g in ev.subgroup_specs),
                min_subgroup_rows=ev.min_subgroup_rows,
                costs=ev.costs.model_dump() if ev.costs else None))

    def with_recalibration(self, rule: dict[str, Any] | None) -> ModelMeta:
        """A copy that applies ``rule`` to the network's risks (None: the raw network)."""
        return replace(self, recalibration=dict(rule) if rule else None)

    def to_json(self) -> str:
        """Versioned JSON text (``meta.json`` of a logged model)."""
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Read ``meta.json`` of any readable format; unknown keys are ignored."""
        data = json.loads(text)
        found = data.pop("format", None)
        if found not in READABLE:
            raise ValueError(f"model meta format {found!r} is not one this heartflow reads "
                             f"({', '.join(READABLE)}); upgrade heartflow")
        plan = data.pop("evaluate", None) or {}
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in data.items() if k in known}
        for key in ("numeric", "categorical", "na_values", "classes", "plugins"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data, evaluate=EvaluationPlan(
            report_at=tuple(plan.get("report_at") or EvaluationPlan.report_at),
            subgroups=tuple(plan.get("subgroups") or ()),
            min_subgroup_rows=int(plan.get("min_subgroup_rows", MIN_SUBGROUP_ROWS)),
            costs=plan.get("costs")))
