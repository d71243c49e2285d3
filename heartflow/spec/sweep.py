"""Sweep specs: a base spec plus axes over any field by dotted path.

```yaml
sweep:
  base: heart_16.yaml                 # relative to this file
  axes:
    model.hidden.0.units: [0, 4, 8, 16, 32, 64]   # 0 removes the layer
    train.optimizer.learning_rate: [0.01, 0.001]
  seeds: [1, 2]                       # train.seed (and split seed stays fixed)
  seeds_together: true                # a trial's seeds train together in one program
  strategy: grid                      # or random, with max_trials
  max_trials: null
  metric: roc_auc                     # ranking metric (default: the promotion metric)
  workers: null                       # default: CPU count
  register: false                     # register each trial's model
```
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heartflow.errors import SpecError
from heartflow.spec.loading import LoadedSpec, _to_spec_error, load_spec, load_spec_text
from heartflow.spec.yaml_source import parse, read_text


class SweepSection(BaseModel):
    """The ``sweep:`` section."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)
    seeds_together: bool = True
    strategy: Literal["grid", "random"] = "grid"
    max_trials: int | None = Field(default=None, gt=0)
    metric: str | None = None
    workers: int | None = Field(default=None, gt=0, le=64)
    register: bool = False
    random_seed: int = 0


class SweepFile(BaseModel):
    """A sweep file holds one ``sweep:`` section."""

    model_config = ConfigDict(extra="forbid")

    sweep: SweepSection


@dataclass
class Trial:
    """One point of the sweep: its overrides and the validated spec."""

    number: int
    overrides: dict[str, Any]
    loaded: LoadedSpec

    @property
    def label(self) -> str:
        """Short text for progress lines."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "base"


@dataclass
class Sweep:
    """A validated sweep: base spec and all trials."""

    path: str
    section: SweepSection
    base: LoadedSpec
    trials: list[Trial]

    @property
    def name(self) -> str:
        """Experiment name (defaults to the base spec's name)."""
        return self.section.name or self.base.spec.name

    @property
    def metric(self) -> str:
        """Ranking metric."""
        return self.section.metric or self.base.spec.promotion_metric

    @property
    def workers(self) -> int:
        """Worker processes."""
        return min(self.section.workers or os.cpu_count() or 1, len(self.trials)) or 1


def points(section: SweepSection) -> list[dict[str, Any]]:
    """Override dicts for every trial (grid, or a random sample of it)."""
    axes = dict(section.axes)
    if section.seeds:
        axes["train.seed"] = list(section.seeds)
    if not axes:
        return [{}]
    names = list(axes)
    grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(
        *(axes[n] for n in names))]
    if section.strategy == "random" or (section.max_trials and section.max_trials < len(grid)):
        rng = random.Random(section.random_seed)
        grid = rng.sample(grid, min(section.max_trials or len(grid), len(grid)))
    return grid


def load_sweep(path: str) -> Sweep:
    """Read a sweep file, load its base spec and validate every trial before anything runs."""
    text = read_text(path)
    doc = parse(text, path)
    try:
        section = SweepFile.model_validate(doc.data).sweep
    except ValidationError as exc:
        raise _to_spec_error(exc, doc) from None
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), section.base)
    base = load_spec(base_path)
    for axis, values in section.axes.items():
        if not values:
            line, column = doc.locate(("sweep", "axes", axis))
            raise SpecError("an axis needs at least one value", path=path, line=line,
                            column=column, field=f"sweep.axes.{axis}")
    trials = []
    for number, overrides in enumerate(points(section), start=1):
        try:
            loaded = load_spec_text(base.text, base.path, overrides=overrides)
        except SpecError as err:
            axis = next((a for a in section.axes if err.field and err.field.startswith(
                a.rsplit(".", 1)[0])), None)
            line, column = doc.locate(("sweep", "axes", axis) if axis else ("sweep",))
            raise SpecError(f"trial {number} ({_label(overrides)}) is not a valid spec: "
                            f"{err.detail}", path=path, line=line, column=column,
                            field=err.field) from None
        trials.append(Trial(number, overrides, loaded))
    return Sweep(path=path, section=section, base=base, trials=trials)


def _label(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items())
