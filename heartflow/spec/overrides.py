"""Dotted-path overrides of spec data (``model.hidden.0.units: 8``), used by sweeps.

Setting ``model.hidden.N.units`` to 0 removes hidden layer N, so a sweep over
``[0, 4, 8, 16]`` units starts from logistic regression, as the lecture does.
"""

from __future__ import annotations

import copy
from typing import Any

from heartflow.errors import SpecError


def _index(container: Any, part: str, path: str) -> str | int:
    if isinstance(container, list):
        if not part.isdigit():
            raise SpecError(f"{path}: {part!r} is not a list index")
        return int(part)
    return part


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``data[a][b][0]...`` for the dotted ``path``, creating mappings on the way."""
    parts = path.split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        key = _index(node, part, path)
        if isinstance(node, list):
            if key >= len(node):
                raise SpecError(f"{path}: index {key} is past the end of "
                                f"{'.'.join(parts[:depth]) or 'the spec'} ({len(node)} items)")
            node = node[key]
            continue
        if key not in node or node[key] is None:
            node[key] = [] if parts[depth + 1].isdigit() else {}
        node = node[key]
    last = _index(node, parts[-1], path)
    if isinstance(node, list):
        if last > len(node):
            raise SpecError(f"{path}: index {last} is past the end of the list")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError(f"{path}: cannot set a field inside a {type(node).__name__}")


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with every override applied."""
    out = copy.deepcopy(data)
    drop: list[int] = []
    for path, value in overrides.items():
        parts = path.split(".")
        if (len(parts) == 4 and parts[:2] == ["model", "hidden"] and parts[3] == "units"
                and value == 0 and parts[2].isdigit()):
            drop.append(int(parts[2]))
            continue
        set_path(out, path, value)
    if drop:
        hidden = out.get("model", {}).get("hidden") or []
        out.setdefault("model", {})["hidden"] = [
            layer for i, layer in enumerate(hidden) if i not in set(drop)]
    return out
