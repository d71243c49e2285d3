"""The package's layers point down: every import between heartflow's folders (module-level or
inside a function) goes from a higher layer to a lower one, so there are no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# Highest first. A layer may import any layer after it; runtime and errors are leaves.
LAYERS = ["cli", "api", "pipelines", "tracking", "evaluation", "model", "data", "spec",
          "runtime", "errors"]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "heartflow" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] if node.module != "heartflow" else [
                f"heartflow.{alias.name}" for alias in node.names]
    return found


def test_imports_point_down_the_layers() -> None:
    sources = {p: "pipelines" for p in (ROOT / "pipelines").rglob("*.py")}
    for path in (ROOT / "heartflow").rglob("*.py"):
        rel = path.relative_to(ROOT / "heartflow")
        layer = rel.parts[0].removesuffix(".py")
        if layer in LAYERS:
            sources[path] = layer
    upward = []
    for path, layer in sources.items():
        for module in _imports(path):
            target = _layer(module)
            if target and target != layer and LAYERS.index(target) < LAYERS.index(layer):
                upward.append(f"{path.relative_to(ROOT)} ({layer}) imports {module}")
    assert sources and not upward, "\n".join(upward)


def test_every_folder_is_a_layer() -> None:
    folders = {p.name for p in (ROOT / "heartflow").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), folders - set(LAYERS)
