"""The typed spec: pydantic models for every section of a heartflow YAML file.

Configuration is data: these models only describe and check values; the
builder, trainer and evaluator read them. Unknown keys are errors.
"""

from __future__ import annotations

import difflib
import itertools
import operator
import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from heartflow.spec import vocabulary as V

# Evaluation defaults, defined once: the spec's, and what a model logged without them uses.
REPORT_AT = (0.05, 0.1, 0.2, 0.3, 0.5)  # risk thresholds whose net benefit is reported
MIN_SUBGROUP_ROWS = 30  # fewer rows (or < 5 of either outcome): too small to judge
ANTICIPATED_C = 0.8  # Riley's sample size when the spec names no anticipated C or R²


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True)


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {value!r}{hint} Allowed: {', '.join(allowed)}")
    return value


_TARGET_RULE = re.compile(r"^\s*(==|!=|>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
COMPARISONS = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le,
               ">": operator.gt, "<": operator.lt}


class TargetSpec(_Section):
    """The label column, optionally turned binary by a comparison (``num > 0``)."""

    column: str = Field(min_length=1)
    positive: str | int | float | None = Field(
        default=None,
        description="Makes the label binary: a comparison like '> 0', or the positive value.")

    @field_validator("positive")
    @classmethod
    def _rule(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip()[:1] in "<>=!" and not _TARGET_RULE.match(v):
            raise ValueError("a comparison like '> 0', '>= 1' or '== 1' (operator, number)")
        return v

    @property
    def comparison(self) -> tuple[str, float] | None:
        """``('>', 0.0)`` for a rule like ``'> 0'``; None when ``positive`` is a value or unset."""
        match = _TARGET_RULE.match(str(self.positive)) if self.positive is not None else None
        return (match.group(1), float(match.group(2))) if match else None


class FeaturesSpec(_Section):
    """Typed feature columns: categorical ones are one-hot encoded, numeric standardised."""

    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> FeaturesSpec:
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise ValueError(f"columns listed as both categorical and numeric: {both}")
        for group in (self.categorical, self.numeric):
            dupes = sorted({c for c in group if group.count(c) > 1})
            if dupes:
                raise ValueError(f"columns listed twice: {dupes}")
        if not self.categorical and not self.numeric:
            raise ValueError("at least one feature column is needed")
        return self


DEFAULT_MIN_ROWS = {"train": 20, "validation": 10, "test": 10}


class SplitSpec(_Section):
    """Held-out fractions of the rows; the rest is the training split."""

    test: float = Field(default=0.2, gt=0, lt=0.9)
    validation: float = Field(default=0.2, ge=0, lt=0.9)
    stratify: bool = True
    seed: int = Field(default=42, ge=0)
    min_rows: dict[Literal["train", "validation", "test"], Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="Fewest rows each part may hold; defaults: train 20, "
        "validation 10, test 10.")
    min_per_class: int = Field(default=2, ge=0, description="Fewest rows of each class in "
                               "every part (and every cross-validation fold).")

    def minimum_rows(self) -> dict[str, int]:
        """Fewest rows per part: the defaults with the spec's ``min_rows`` on top."""
        return {**DEFAULT_MIN_ROWS, **self.min_rows}

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitSpec:
        if self.test + self.validation >= 0.9:
            raise ValueError("test + validation must leave at least 10% of rows for training")
        return self


class DataSpec(_Section):
    """Where the rows come from and what the columns mean."""

    source: str = Field(min_length=1, description="A named data set (heart-csv, "
                        "uci-cleveland), a path to a CSV file, or an https URL.")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    columns: list[str] | None = Field(default=None,
                                      description="Column names for a file without header.")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    na_values: list[str] = Field(default_factory=lambda: ["", "?", "NA", "NaN"])
    missing_codes: dict[str, list[str]] = Field(
        default_factory=dict, description="Per-column codes that mean 'not measured' (e.g. "
        "chol: ['0'] in the Swiss and VA files); the model applies them at every site.")
    id: str | None = Field(default=None, description="A column that identifies a row; the "
                           "split hashes it (else the row's content), so rows keep their part "
                           "when the data grows.")
    target: str | TargetSpec
    features: FeaturesSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    streaming: bool | Literal["auto"] = "auto"

    @property
    def target_spec(self) -> TargetSpec:
        """The target as a TargetSpec whether it was given as a name or a mapping."""
        return self.target if isinstance(self.target, TargetSpec) else TargetSpec(
            column=self.target)

    @model_validator(mode="after")
    def _target_not_feature(self) -> DataSpec:
        col = self.target_spec.column
        if col in self.features.categorical or col in self.features.numeric:
            raise ValueError(f"the target column {col!r} is also listed as a feature")
        if self.id is not None and self.id in (col, *self.features.categorical,
                                               *self.features.numeric):
            raise ValueError(f"the id column {self.id!r} is also the target or a feature")
        strangers = sorted(set(self.missing_codes) - {*self.features.categorical,
                                                       *self.features.numeric})
        if strangers:
            raise ValueError(f"missing_codes names columns that are not features: {strangers}")
        return self


class DenseSpec(_Section):
    """One hidden Dense layer."""

    units: int = Field(gt=0, le=65536)
    activation: str = "relu"
    initializer: str = "glorot_uniform"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    l2: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return _one_of(v, V.activation_names(), "activation")

    @field_validator("initializer")
    @classmethod
    def _initializer(cls, v: str) -> str:
        return _one_of(v, V.INITIALIZERS, "initializer")


class OutputSpec(_Section):
    """The output layer: sigmoid (binary), softmax with N units, or linear (regression)."""

    units: int = Field(default=1, gt=0, le=10000)
    activation: str = "sigmoid"
    initializer: str = "glorot_uniform"

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return _one_of(v, V.OUTPUT_ACTIVATIONS, "output activation")

    @field_validator("initializer")
    @classmethod
    def _initializer(cls, v: str) -> str:
        return _one_of(v, V.INITIALIZERS, "initializer")

    @property
    def task(self) -> str:
        """binary, multiclass or regression, from the activation."""
        return {"sigmoid": "binary", "softmax": "multiclass", "linear": "regression"}[
            self.activation]


class ModelSpec(_Section):
    """The network: zero or more hidden Dense layers, then the output layer."""

    hidden: list[DenseSpec] = Field(default_factory=list)
    output: OutputSpec = Field(default_factory=OutputSpec)


class OptimizerSpec(_Section):
    """Optimiser and its learning rate (momentum for SGD, weight decay for AdamW)."""

    name: str = "adam"
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _one_of(v, V.OPTIMIZERS, "optimizer")


class EarlyStoppingSpec(_Section):
    """Stop when the monitored value stops improving."""

    monitor: Literal["val_loss", "loss", "val_auc", "val_accuracy"] = "val_loss"
    patience: int = Field(default=10, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)
    restore_best: bool = True


class TrainSpec(_Section):
    """How the network is fitted."""

    loss: str = "binary_crossentropy"
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    batch_size: int = Field(default=32, gt=0, le=1_000_000)
    epochs: int = Field(default=100, gt=0, le=100_000)
    early_stopping: EarlyStoppingSpec | None = None
    class_weight: Literal["balanced"] | dict[int, Annotated[float, Field(gt=0)]] | None = None
    seed: int = Field(default=42, ge=0)
    device: Literal["auto", "cpu", "gpu"] = "auto"
    mixed_precision: bool = False

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        return _one_of(v, V.LOSSES, "loss")


class CVSpec(_Section):
    """Repeated stratified k-fold cross-validation."""

    folds: int = Field(default=5, ge=2, le=50)
    repeats: int = Field(default=1, ge=1, le=50)
    together: bool = Field(default=True, description="Train the folds' networks at once in "
                           "one compiled program (statistically equivalent to one after "
                           "another, several times faster for small networks).")


class ThresholdCosts(_Section):
    """A decision threshold derived from what each kind of error costs (binary outputs)."""

    false_negative_cost: float = Field(gt=0.0, description="Cost of missing a case.")
    false_positive_cost: float = Field(default=1.0, gt=0.0,
                                       description="Cost of treating a non-case.")
    method: Literal["cost_ratio", "validation"] = Field(
        default="cost_ratio",
        description="cost_ratio: t = FP cost / (FP cost + FN cost), right for calibrated "
        "risks; validation: the threshold with the least expected cost on validation rows.")

    @property
    def ratio_threshold(self) -> float:
        """The threshold at which treating and not treating cost the same, for true risks."""
        return self.false_positive_cost / (self.false_positive_cost + self.false_negative_cost)


class DecisionCurveSpec(_Section):
    """Thresholds of the decision curve and those whose net benefit is reported."""

    low: float = Field(default=0.01, gt=0.0, lt=1.0)
    high: float = Field(default=0.6, gt=0.0, lt=1.0)
    report_at: list[float] = Field(default_factory=lambda: list(REPORT_AT), min_length=1)

    @field_validator("report_at")
    @classmethod
    def _probabilities(cls, v: list[float]) -> list[float]:
        for t in v:
            if not 0.0 < t < 1.0:
                raise ValueError(f"a risk threshold strictly between 0 and 1, got {t}")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> DecisionCurveSpec:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class SubgroupSpec(_Section):
    """A subgroup column: its levels, or bands of a numeric column (``bins`` are edges)."""

    column: str = Field(min_length=1)
    bins: list[float] | None = Field(default=None, min_length=2, description="Band edges, "
                                     "e.g. [0, 50, 60, 120]: [0, 50), [50, 60), [60, 120).")

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"band edges must increase, got {v}")
        return v


class SampleSizeSpec(_Section):
    """Riley's minimum sample size (binary outcomes): an anticipated C statistic or
    Cox-Snell R² of the model (heartflow.evaluation.sample_size)."""

    anticipated_c: float | None = Field(default=None, gt=0.5, lt=1.0, description="The C "
                                        "statistic (ROC AUC) the model is expected to reach; "
                                        f"default {ANTICIPATED_C} when neither is given.")
    anticipated_r2: float | None = Field(default=None, gt=0.0, lt=1.0, description="Or the "
                                         "anticipated Cox-Snell R².")

    @model_validator(mode="after")
    def _one(self) -> SampleSizeSpec:
        if self.anticipated_c is not None and self.anticipated_r2 is not None:
            raise ValueError("give anticipated_c or anticipated_r2, not both")
        return self

    @property
    def c_statistic(self) -> float | None:
        """The anticipated C statistic in force (the default when neither is given)."""
        if self.anticipated_r2 is not None:
            return None
        return ANTICIPATED_C if self.anticipated_c is None else self.anticipated_c


MIN_RESAMPLES = 20  # fewer bootstrap refits give an optimism too noisy to subtract


class ValidationSpec(_Section):
    """Internal validation of the whole development by the optimism bootstrap (binary)."""

    method: Literal["bootstrap"] = "bootstrap"
    resamples: int = Field(default=200, ge=MIN_RESAMPLES, le=2000, description="Bootstrap "
                           f"refits (at least {MIN_RESAMPLES}; Harrell suggests 200).")


class EvaluateSpec(_Section):
    """How the model is judged on held-out rows."""

    metrics: list[str] | None = None
    threshold: float | ThresholdCosts = Field(
        default=0.5, description="A risk threshold in (0, 1), or {false_negative_cost: 3} to "
        "derive it from error costs.")
    baselines: list[str] = Field(default_factory=list)
    cv: CVSpec | None = None
    decision_curve: DecisionCurveSpec = Field(default_factory=DecisionCurveSpec)
    subgroups: list[str | SubgroupSpec] = Field(
        default_factory=list, description="Columns to report by: 'sex', or {column: age, "
        "bins: [0, 50, 60, 120]}.")
    min_subgroup_rows: int = Field(
        default=MIN_SUBGROUP_ROWS, ge=1, description="Subgroups with fewer rows (or fewer "
        "than 5 of either outcome) are flagged too small to judge.")
    validation: ValidationSpec | None = Field(
        default=None, description="{method: bootstrap, resamples: 200}: optimism-corrected "
        "figures and prediction instability from refits of the whole development.")
    sample_size: SampleSizeSpec | None = Field(
        default=None, description="Riley's minimum sample size; reported for every binary "
        "model (anticipated C 0.8 unless given here).")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float | ThresholdCosts) -> float | ThresholdCosts:
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError(f"a threshold strictly between 0 and 1, got {v}")
        return v

    @property
    def decision_threshold(self) -> float:
        """The declared threshold: as given, or from the cost ratio. A run settles the one in
        force after training (``evaluation.thresholds.settle_threshold``: with
        ``method: validation`` it is chosen on validation rows) and records it with the
        model (``ModelMeta.threshold``); the spec itself never changes."""
        if isinstance(self.threshold, ThresholdCosts):
            return self.threshold.ratio_threshold
        return float(self.threshold)

    @property
    def costs(self) -> ThresholdCosts | None:
        """Error costs, when the threshold is derived from them."""
        return self.threshold if isinstance(self.threshold, ThresholdCosts) else None

    @property
    def subgroup_specs(self) -> list[SubgroupSpec]:
        """Every subgroup as a :class:`SubgroupSpec`."""
        return [SubgroupSpec(column=g) if isinstance(g, str) else g for g in self.subgroups]

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: list[str]) -> list[str]:
        for name in v:
            _one_of(name, V.BASELINES, "baseline")
        return v


class PromoteSpec(_Section):
    """When a new version may take the ``champion`` alias (heartflow.evaluation.gate)."""

    metric: str | None = Field(default=None, description="Default: roc_auc (binary), "
                               "accuracy (multiclass), rmse (regression).")
    rule: Literal["superior", "non_inferior", "point"] = Field(
        default="superior", description="superior: the lower 95% bound of challenger minus "
        "champion (paired bootstrap on rows neither saw) must exceed margin; non_inferior: "
        "must exceed -margin; point: the point difference must exceed margin.")
    margin: float = Field(default=0.0, ge=0.0,
                          validation_alias=AliasChoices("margin", "min_improvement"),
                          description="Margin of the rule (min_improvement: its old name).")
    must_beat_baselines: bool = False
    require_approval: bool = Field(default=False, description="A version the gate passes "
                                   "stays challenger until `heartflow approve NAME VERSION`.")
    min_gate_rows: int = Field(default=10, ge=1, description="Fewest test rows the champion "
                               "never trained or validated on that the gate will decide on.")


class RegisterSpec(_Section):
    """Model registry settings."""

    enabled: bool = True
    model_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    promote: PromoteSpec = Field(default_factory=PromoteSpec)


class MonitorSpec(_Section):
    """How ``heartflow monitor`` judges a batch against the model's development reference.

    A check reports drift only when its effect size passes its threshold *and* its test's
    p-value is below ``p_value``: large batches make every p-value small, small batches
    make effect sizes noisy. The values are stored with the model's reference at training
    time (``monitoring/reference.json``), so a model is always judged by its own rules.
    """

    psi: float = Field(default=0.2, gt=0.0, description="Population stability index of a "
                       "variable's (or the risks') bins above which it has drifted (0.1-0.25: "
                       "moderate shift, above 0.25: large).")
    ks: float = Field(default=0.1, gt=0.0, lt=1.0, description="Kolmogorov-Smirnov distance "
                      "between the batch and the development distribution of a numeric "
                      "variable (or the risks) above which it has drifted.")
    missing_share: float = Field(default=0.1, gt=0.0, lt=1.0, description="Rise in a "
                                 "variable's share of missing values (absolute).")
    out_of_range: float = Field(default=0.1, gt=0.0, lt=1.0, description="Rise in a numeric "
                                "variable's share of values outside its development range "
                                "(absolute).")
    auc_drop: float = Field(default=0.05, gt=0.0, lt=1.0, description="Fall of ROC AUC "
                            "from its development value.")
    calibration_intercept: float = Field(default=0.5, gt=0.0, description="Change of the "
                                         "calibration intercept (log-odds) from development.")
    calibration_slope: float = Field(default=0.3, gt=0.0, description="Change of the "
                                     "calibration slope from development.")
    brier: float = Field(default=0.05, gt=0.0, lt=1.0, description="Rise of the Brier score "
                         "from development.")
    net_benefit: float = Field(default=0.05, gt=0.0, lt=1.0, description="Fall of the net "
                               "benefit at the model's threshold from development.")
    p_value: float = Field(default=0.01, gt=0.0, lt=1.0, description="A check's test must "
                           "give a p-value below this as well.")
    min_rows: int = Field(default=30, ge=5, description="Fewest rows (with a value, for a "
                          "variable's distribution) a check judges; fewer: skipped, with why.")
    min_events: int = Field(default=10, ge=5, description="Fewest rows with and without the "
                            "outcome for ROC AUC, calibration slope and net benefit (the "
                            "calibration intercept and Brier score need 5 of each).")


warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Spec(_Section):
    """A whole heartflow spec."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                      description="Experiment name: letters, digits, '.', '_' or '-'.")
    description: str = ""
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    register: RegisterSpec = Field(default_factory=RegisterSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)

    @property
    def task(self) -> str:
        """binary, multiclass or regression."""
        return self.model.output.task

    @property
    def model_name(self) -> str:
        """Registered model name (defaults to the spec name)."""
        return self.register.model_name or self.name

    @property
    def promotion_metric(self) -> str:
        """Metric the promotion gate compares."""
        default = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
        return self.register.promote.metric or default[self.task]

    @property
    def metrics(self) -> list[str]:
        """Evaluation metrics, defaulted by task."""
        return self.evaluate.metrics or list(V.DEFAULT_METRICS[self.task])
