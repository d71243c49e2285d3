"""Load a spec file: safe YAML, typed validation, cross-field checks, located errors."""

from __future__ import annotations

import difflib
import html
import os
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from heartflow.errors import SpecError
from heartflow.spec import schema
from heartflow.spec import vocabulary as V
from heartflow.spec.overrides import apply_overrides
from heartflow.spec.schema import Spec
from heartflow.spec.yaml_source import SourcedDocument, parse, read_text


@dataclass
class LoadedSpec:
    """A validated spec with the text it came from and where it lives."""

    spec: Spec
    text: str
    path: str
    document: SourcedDocument
    overrides: dict[str, Any] | None = None

    @property
    def base_dir(self) -> str:
        """Folder relative data paths are resolved against."""
        return os.path.dirname(os.path.abspath(self.path))

    def table(self) -> str:
        """The full spec as resolved YAML (defaults filled in, overrides applied)."""
        import yaml  # lazy: PyYAML, only to write the spec back out

        return yaml.safe_dump(self.spec.model_dump(mode="json", exclude_none=True),
                              sort_keys=False)

    def __repr__(self) -> str:
        s = self.spec
        layers = [f"{h.units} {h.activation}" for h in s.model.hidden] or ["no hidden layer"]
        network = " -> ".join([*layers, f"{s.model.output.units} {s.model.output.activation}"])
        changed = f"; overrides {self.overrides}" if self.overrides else ""
        return (f"spec {s.name} ({self.path}{changed})\n"
                f"  data {s.data.source}; network {network}; {s.train.loss}, "
                f"{s.train.epochs} epochs\n"
                "  more: .table() resolved YAML, .spec fields, hf.show(spec) layers and "
                "parameters")

    def _repr_html_(self) -> str:
        head = html.escape(repr(self).splitlines()[0])
        return f"<p><b>{head}</b></p><pre>{html.escape(self.table())}</pre>"


def load_spec(path: str, *, overrides: dict[str, Any] | None = None) -> LoadedSpec:
    """Read and validate the spec at ``path`` or raise :class:`SpecError`.

    The spec layer reads no data: whether ``data.source`` exists is checked by
    :func:`heartflow.data.sources.check_spec_source`.
    """
    text = read_text(path)
    return load_spec_text(text, path, overrides=overrides)


def load_spec_text(text: str, path: str = "<spec>", *,
                   overrides: dict[str, Any] | None = None) -> LoadedSpec:
    """Validate YAML text (optionally with dotted-path overrides applied)."""
    doc = parse(text, path)
    if not isinstance(doc.data, dict):
        raise SpecError(f"the spec must be a mapping of sections, got {_kind(doc.data)}",
                        path=path, line=1, column=1)
    data = doc.data
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise _to_spec_error(exc, doc) from None
    loaded = LoadedSpec(spec=spec, text=text, path=path, document=doc, overrides=overrides)
    for loc, message in semantic_problems(spec):
        raise located(loaded, loc, message)
    return loaded


def located(loaded: LoadedSpec, loc: tuple[str | int, ...], message: str) -> SpecError:
    """A SpecError pointing at the file, line and column of the field at ``loc``."""
    line, column = loaded.document.locate(loc)
    return SpecError(message, path=loaded.path, line=line, column=column, field=_dotted(loc))


def streaming_problems(spec: Spec) -> list[tuple[tuple[str | int, ...], str]]:
    """Fields a streamed (larger than memory) run cannot honour, as (location, message)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    fix = "set data.streaming: false to load the file in memory, or remove the field"
    if spec.task != "binary":
        out.append((("model", "output", "activation"),
                    f"streamed data supports sigmoid (binary) outputs only, not "
                    f"{spec.model.output.activation}; {fix}"))
    if spec.evaluate.cv is not None:
        out.append((("evaluate", "cv"), "cross-validation refits on every fold and needs the "
                    f"rows in memory; {fix}"))
    if spec.evaluate.baselines:
        out.append((("evaluate", "baselines"), "scikit-learn baselines need the rows in "
                    f"memory; {fix}"))
    if spec.evaluate.validation is not None:
        out.append((("evaluate", "validation"), "the optimism bootstrap refits on resamples "
                    f"of the rows and needs them in memory; {fix}"))
    if spec.register.promote.must_beat_baselines:
        out.append((("register", "promote", "must_beat_baselines"),
                    f"needs evaluate.baselines, which streamed data cannot run; {fix}"))
    return out


def check_streamable(loaded: LoadedSpec, path: str) -> None:
    """Raise a located SpecError when a file chosen for streaming meets a field it cannot honour."""
    for loc, message in streaming_problems(loaded.spec):
        raise located(loaded, loc, f"{path} is streamed (data.streaming: "
                      f"{loaded.spec.data.streaming}, file over 200 MB or streaming: true): "
                      f"{message}")


def _evaluation_problems(spec: Spec) -> list[tuple[tuple[str | int, ...], str]]:
    """Cost-derived thresholds and subgroups: binary risk models, declared columns."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    ev = spec.evaluate
    if ev.costs is not None and spec.task != "binary":
        out.append((("evaluate", "threshold"), "a threshold from error costs is for binary "
                    "(sigmoid) outputs; for several classes weight them with "
                    "train.class_weight"))
    if (ev.costs is not None and ev.costs.method == "validation"
            and spec.data.split.validation == 0):
        out.append((("evaluate", "threshold", "method"), "choosing the threshold on "
                    "validation rows needs data.split.validation above 0; or use "
                    "method: cost_ratio"))
    features = spec.data.features
    for i, group in enumerate(ev.subgroup_specs):
        loc: tuple[str | int, ...] = ("evaluate", "subgroups", i)
        if group.column not in (*features.numeric, *features.categorical):
            out.append((loc, f"subgroup column {group.column!r} is not a feature of this "
                        "spec; declare it under data.features (numeric or categorical)"))
        elif group.bins is not None and group.column not in features.numeric:
            out.append((loc, f"bins split a numeric column; {group.column!r} is categorical "
                        "(its levels are the subgroups: write just the column name)"))
    if spec.task != "binary" and ev.subgroups:
        out.append((("evaluate", "subgroups"), "subgroup reports are for binary risk models"))
    if spec.task != "binary" and ev.validation is not None:
        out.append((("evaluate", "validation"), "the optimism bootstrap reports calibration "
                    "and threshold figures of binary risk models; for other tasks use "
                    "evaluate.cv"))
    if spec.task != "binary" and ev.sample_size is not None:
        out.append((("evaluate", "sample_size"), "Riley's minimum sample size is computed "
                    "here for binary outcomes only (pmsampsize also covers continuous and "
                    "survival outcomes, with other inputs); remove this section"))
    return out


def semantic_problems(spec: Spec) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field rules pydantic field types cannot express, as (location, message)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    output, task = spec.model.output, spec.task
    if output.activation == "sigmoid" and output.units != 1:
        out.append((("model", "output", "units"),
                    f"a sigmoid output has 1 unit (binary), got {output.units}; for "
                    f"{output.units} classes use activation: softmax with units: {output.units}"))
    if output.activation == "softmax" and output.units < 2:
        out.append((("model", "output", "units"),
                    "a softmax output needs one unit per class (2 or more), got 1; for a "
                    "binary target use activation: sigmoid with units: 1"))
    if spec.train.loss not in V.TASK_LOSSES[task]:
        out.append((("train", "loss"),
                    f"loss {spec.train.loss!r} does not fit a {output.activation} output "
                    f"({task}); allowed: {', '.join(V.TASK_LOSSES[task])}"))
    allowed_metrics = V.TASK_METRICS[task]
    for i, metric in enumerate(spec.evaluate.metrics or []):
        if metric not in allowed_metrics:
            close = difflib.get_close_matches(metric, allowed_metrics, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append((("evaluate", "metrics", i),
                        f"unknown metric {metric!r} for a {task} model{hint} Allowed: "
                        f"{', '.join(allowed_metrics)}"))
    if spec.promotion_metric not in allowed_metrics:
        out.append((("register", "promote", "metric"),
                    f"promotion metric {spec.promotion_metric!r} is not a {task} "
                    f"metric; allowed: {', '.join(allowed_metrics)}"))
    if task == "regression" and spec.train.class_weight is not None:
        out.append((("train", "class_weight"), "class weights apply to classification only"))
    if task == "regression" and spec.evaluate.baselines:
        out.append((("evaluate", "baselines"), "baselines are available for classification"))
    target = spec.data.target_spec
    if task == "regression" and target.positive is not None:
        out.append((("data", "target", "positive"),
                    "a linear (regression) output takes the target as a number; remove "
                    "'positive'"))
    if spec.data.streaming is True:
        out.extend(streaming_problems(spec))
    if spec.register.promote.must_beat_baselines and not spec.evaluate.baselines:
        out.append((("register", "promote", "must_beat_baselines"),
                    "must_beat_baselines needs evaluate.baselines (e.g. [logistic_regression])"))
    out.extend(_evaluation_problems(spec))
    es = spec.train.early_stopping
    if es and task == "regression" and es.monitor in ("val_auc", "val_accuracy"):
        out.append((("train", "early_stopping", "monitor"),
                    f"{es.monitor} is not computed for a regression (linear) output; monitor "
                    "val_loss or loss"))
    if es and es.monitor.startswith("val_") and spec.data.split.validation == 0:
        out.append((("train", "early_stopping", "monitor"),
                    f"monitoring {es.monitor} needs a validation split; set "
                    "data.split.validation above 0 or monitor 'loss'"))
    return out


def _to_spec_error(exc: ValidationError, doc: SourcedDocument) -> SpecError:
    errors = [_clean(err, doc.data) for err in exc.errors(include_url=False)]
    errors = _drop_union_noise(errors)
    # A misspelt key explains the "missing" error of the key it was meant to be.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    line, column = doc.locate(first["loc"])
    message = _message(first)
    if len(errors) > 1:
        extra = []
        for err in errors[1:5]:
            eline, ecol = doc.locate(err["loc"])
            extra.append(f"\n  {doc.path}:{eline}:{ecol}: {_dotted(err['loc'])}: {_message(err)}")
        message += "".join(extra)
        if len(errors) > 5:
            message += f"\n  (and {len(errors) - 5} more)"
    return SpecError(message, path=doc.path, line=line, column=column,
                     field=_dotted(first["loc"]) or None)


def _clean(err: dict[str, Any], data: Any) -> dict[str, Any]:
    """Drop pydantic's union-member tags from an error location."""
    loc: list[str | int] = []
    node = data
    raw = list(err["loc"])
    for i, part in enumerate(raw):
        last = i == len(raw) - 1
        if isinstance(node, dict) and part in node:
            loc.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            loc.append(part)
            node = node[part]
        elif last and err["type"] in ("missing", "extra_forbidden"):
            loc.append(part)
        # anything else is a union-member tag ('str', 'TargetSpec', ...): skipped
    return {**err, "loc": tuple(loc), "raw_loc": tuple(raw)}


def _drop_union_noise(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """When a union member's error goes deeper, drop the shallow type mismatches."""
    kept = []
    for err in errors:
        deeper = any(o is not err and len(o["loc"]) > len(err["loc"])
                     and o["loc"][: len(err["loc"])] == err["loc"] for o in errors)
        if deeper and err["type"].endswith("_type"):
            continue
        kept.append(err)
    return kept or errors


def _message(err: dict[str, Any]) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        allowed = _fields_at(err["raw_loc"][:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}{hint} Allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind not in ("value_error",) and "input" in err:
        given = repr(err["input"])
        given = given if len(given) <= 60 else given[:57] + "..."
        msg = f"{msg} (given: {given})"
    return msg


def _fields_at(raw_loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model reached by following ``raw_loc`` from Spec."""
    model: Any = Spec
    for part in raw_loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if _is_model(model) else None
        if field is None:
            # a union tag such as 'TargetSpec': follow it by class name

            candidate = getattr(schema, str(part), None)
            if _is_model(candidate):
                model = candidate
            continue
        model = _model_in(field.annotation)
    return list(model.model_fields) if _is_model(model) else []


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _model_in(annotation: Any) -> Any:
    if _is_model(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)
