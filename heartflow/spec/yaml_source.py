"""Safe YAML reading that remembers where every value came from.

The spec is read with PyYAML's safe composer (no Python tags, no code), then
built into plain dicts/lists while recording the line and column of each
field path, so validation errors can point at ``file:line:column``.
Duplicate keys, non-standard tags, oversized files and alias bombs are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from heartflow.errors import SpecError

MAX_BYTES = 1_000_000
MAX_NODES = 100_000

Path = tuple[str | int, ...]

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STANDARD_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}
_AS_TEXT_TAGS = {"tag:yaml.org,2002:timestamp"}


@dataclass
class SourcedDocument:
    """A parsed YAML document plus the position (1-based line, column) of each path."""

    data: Any
    path: str
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, loc: Path) -> tuple[int | None, int | None]:
        """Position of the deepest known prefix of ``loc``."""
        for end in range(len(loc), -1, -1):
            pos = self.positions.get(tuple(loc[:end]))
            if pos:
                return pos
        return None, None


def read_text(path: str) -> str:
    """Read a spec file as UTF-8 text, refusing huge or binary files."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError("file not found", path=path) from None
    except IsADirectoryError:
        raise SpecError("is a directory, expected a YAML file", path=path) from None
    except OSError as exc:
        raise SpecError(f"cannot read file ({exc.strerror})", path=path) from None
    if len(raw) > MAX_BYTES:
        raise SpecError(f"file is larger than {MAX_BYTES:,} bytes; a spec is a small YAML file",
                        path=path, line=1, column=1)
    if b"\x00" in raw:
        nul = raw.index(b"\x00")
        line = raw[:nul].count(b"\n") + 1
        column = nul - (raw.rfind(b"\n", 0, nul) + 1) + 1
        raise SpecError("file contains NUL bytes: this is binary data, not YAML", path=path,
                        line=line, column=column)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"file is not valid UTF-8 text (byte 0x{raw[exc.start]:02x})",
                        path=path, line=line, column=column) from None


def parse(text: str, path: str = "<spec>") -> SourcedDocument:
    """Parse YAML text into plain Python data with positions."""
    try:
        node = yaml.compose(text, Loader=_SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
            problem = "a tab character; YAML indents with spaces, never tabs"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise SpecError(f"YAML syntax error: {problem}", path=path, line=line,
                        column=column) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", path=path, line=1, column=1) from None
    doc = SourcedDocument(data=None, path=path)
    if node is None:
        raise SpecError("the spec is empty; expected a mapping with at least name, data and model",
                        path=path, line=1, column=1)
    budget = [MAX_NODES]
    doc.data = _build(node, (), doc, budget)
    return doc


def _build(node: yaml.Node, loc: Path, doc: SourcedDocument, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise SpecError(
            f"the document expands to more than {MAX_NODES:,} values (YAML alias bomb?)",
            path=doc.path, line=node.start_mark.line + 1, column=node.start_mark.column + 1)
    position = (node.start_mark.line + 1, node.start_mark.column + 1)
    doc.positions.setdefault(loc, position)
    if node.tag in _AS_TEXT_TAGS and isinstance(node, yaml.ScalarNode):
        return node.value
    if node.tag not in _STANDARD_TAGS:
        raise SpecError(f"YAML tag {node.tag!r} is not allowed; specs hold plain data only",
                        path=doc.path, line=position[0], column=position[1],
                        field=_dotted(loc) or None)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError("YAML merge keys (<<) are not supported in specs",
                                path=doc.path, line=key_node.start_mark.line + 1,
                                column=key_node.start_mark.column + 1)
            key = _build(key_node, (*loc, "<key>"), doc, budget)
            if isinstance(key, (dict, list)):
                raise SpecError("mapping keys must be plain scalars", path=doc.path,
                                line=key_node.start_mark.line + 1,
                                column=key_node.start_mark.column + 1)
            if key in out:
                raise SpecError(f"duplicate key {key!r}", path=doc.path,
                                line=key_node.start_mark.line + 1,
                                column=key_node.start_mark.column + 1,
                                field=_dotted((*loc, str(key))))
            child = (*loc, key if isinstance(key, int) else str(key))
            doc.positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(value_node, child, doc, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), doc, budget) for i, item in enumerate(node.value)]
    constructor = yaml.SafeLoader.yaml_constructors[node.tag]
    return constructor(yaml.SafeLoader(""), node)


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n")
    if line < len(lines) and column < len(lines[line]):
        return lines[line][column]
    return ""


def _dotted(loc: Path) -> str:
    return ".".join(str(p) for p in loc if p != "<key>")
