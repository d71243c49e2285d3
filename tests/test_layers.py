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


def _module_name(path: Path) -> str:
    if path.is_relative_to(ROOT / "pipelines"):
        rel = path.relative_to(ROOT / "pipelines").with_suffix("")
        parts = ["heartflow", "pipelines", *rel.parts]
    else:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    paths = [*(ROOT / "heartflow").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]
    return {_module_name(p): p for p in paths}


def _targets(module: str, node: ast.AST, known: set[str]) -> list[str]:
    """The heartflow modules an import statement names (a package's __init__ included)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from package import submodule` depends on the submodule; `from module import
        # name` on the module.
        subs = [f"{node.module}.{a.name}" for a in node.names
                if f"{node.module}.{a.name}" in known]
        names = subs if len(subs) == len(node.names) else [node.module, *subs]
    else:
        return []
    return sorted({n for n in names if n in known and n != module})


def test_no_import_cycles_even_through_function_level_imports() -> None:
    """A cycle made of imports inside functions is still a cycle: the modules cannot be
    understood (or loaded) one without the other."""
    sources = _sources()
    known = set(sources)
    graph = {m: set() for m in known}
    for module, path in sources.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            graph[module].update(_targets(module, node, known))
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_imports_inside_functions_are_labelled_lazy_boundaries() -> None:
    """A module's dependencies are visible at its top; an import inside a function is only
    the lazy boundary of a heavy library (TensorFlow, MLflow, Prefect, ...) and says so
    with a ``# lazy`` comment on the statement or the line above it."""
    unlabelled = []
    for path in _sources().values():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body_imports = [n for n in ast.walk(func) if isinstance(n, (ast.Import,
                                                                       ast.ImportFrom))]
            for node in body_imports:
                span = lines[node.lineno - 2:node.end_lineno]
                group = _group_start(lines, node.lineno)
                if not any("lazy" in line for line in [*span, *group]):
                    unlabelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                                      f"{lines[node.lineno - 1].strip()}")
    assert not unlabelled, "\n".join(sorted(set(unlabelled)))


def _group_start(lines: list[str], lineno: int) -> list[str]:
    """The lines of the block of consecutive import lines that ``lineno`` belongs to."""
    start = lineno - 1
    while start > 0 and lines[start - 1].strip().startswith(("import ", "from ")):
        start -= 1
    return lines[max(0, start - 1):lineno]
