"""One YAML project file, parsed into plain data that remembers where each value came from.

PyYAML's composer keeps a `Mark` (line, column) on every node; this module builds the
plain Python value from the node tree itself, so every value and every mapping key
keeps its position, and every later problem can be reported as `path:line:col`.
Along the way it interpolates `${ENV}` references, flags duplicate keys and collects
the values that came from the environment (they are secrets).

    doc = parse_document(text, "syncs/a.yaml", env=os.environ)
    doc.data                                   # {"name": ..., "event_types": [...]}
    doc.problem(("event_types", 0, "type"), "unknown event type 'x'")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from streamctl.config.interpolate import interpolate
from streamctl.core.errors import Problem, Severity

NodePath = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line and column

STR_TAG = "tag:yaml.org,2002:str"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# Tags a whole `${VAR}` may take on after interpolation, as if written there: `port: ${PORT}`.
RETYPABLE_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("int", "float", "bool", "null"))


@dataclass
class Document:
    """A parsed file: its data, where each value and key sits, and what went wrong reading it."""

    path: str  # relative to the project root, with forward slashes
    data: Any = None
    value_positions: dict[NodePath, Position] = field(default_factory=dict)
    key_positions: dict[NodePath, Position] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    # Values left empty because an environment variable is missing: already reported,
    # so structural checks of these values would only repeat the problem.
    unresolved: set[NodePath] = field(default_factory=set)
    # Quoted strings that were one whole `${VAR}`: numbers or booleans where one is expected.
    quoted_references: set[NodePath] = field(default_factory=set)

    def position(self, path: NodePath, *, key: bool = False) -> Position:
        """The position of the value at `path` (or of its key), else of its nearest ancestor."""
        if key and path in self.key_positions:
            return self.key_positions[path]
        for end in range(len(path), -1, -1):
            found = self.value_positions.get(path[:end])
            if found is not None:
                return found
        return (1, 1)

    def coerce(self, path: NodePath, expected: Iterable[str]) -> tuple[bool, Any]:
        """Read the quoted `"${VAR}"` at `path` as the JSON type expected there, in place.

        Returns (True, value) when the value now has one of the `expected` types."""
        if path not in self.quoted_references:
            return False, None
        parent = self.data
        for part in path[:-1]:
            parent = parent[part]
        typed = typed_scalar(parent[path[-1]])
        wanted = set(expected)
        kinds = {bool: "boolean", int: "integer", float: "number", type(None): "null"}
        kind = kinds.get(type(typed))
        if kind is None or not (kind in wanted or (kind == "integer" and "number" in wanted)):
            return False, None
        parent[path[-1]] = typed
        return True, typed

    def problem(
        self, path: NodePath, message: str, *, severity: Severity = "error", key: bool = False
    ) -> Problem:
        line, column = self.position(path, key=key)
        return Problem(self.path, line, column, message, severity)


def parse_document(text: str, path: str, env: Mapping[str, str]) -> Document:
    """Parse one YAML file; syntax errors become problems, never exceptions."""
    doc = Document(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        doc.problems.append(Problem(path, line, column, f"invalid YAML: {reason}"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(path, 1, 1, f"invalid YAML: {exc}"))
        return doc
    if root is not None:
        doc.data = _Builder(doc, env).build(root, ())
    return doc


def _position(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, doc: Document, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.env = env
        self.constructor = SafeConstructor()

    def build(self, node: Node, path: NodePath) -> Any:
        self.doc.value_positions[path] = _position(node)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node, path)

    def _mapping(self, node: MappingNode, path: NodePath) -> dict[str, Any]:
        self.constructor.flatten_mapping(node)  # YAML merge keys (`<<: *defaults`)
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                line, column = _position(key_node)
                self.doc.problems.append(
                    Problem(self.doc.path, line, column, "a mapping key must be a plain string")
                )
                continue
            # The key as written: `on:` or `1:` stay the strings "on" and "1".
            key = str(key_node.value)
            line, column = _position(key_node)
            if key in first_seen:
                message = f"duplicate key {key!r} (first defined on line {first_seen[key]})"
                self.doc.problems.append(Problem(self.doc.path, line, column, message))
                continue
            first_seen[key] = line
            self.doc.key_positions[(*path, key)] = (line, column)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: ScalarNode, path: NodePath) -> Any:
        if node.tag == TIMESTAMP_TAG:
            return node.value  # JSON has no dates: keep the text
        if node.tag != STR_TAG:
            return self.constructor.construct_object(node)
        result = interpolate(node.value, self.env)
        if result.missing:
            self.doc.unresolved.add(path)
        for name in result.missing:
            self.doc.problems.append(
                self.doc.problem(path, f"environment variable {name} is not set and has no default")
            )
        self.doc.secrets.update(result.secrets)
        if result.whole and node.style is None:
            return typed_scalar(result.text)
        elif result.whole:
            # `port: "${PORT}"` (quoted, as flow mappings require): stays a string unless
            # a number or boolean is expected there (see `Document.coerce`).
            self.doc.quoted_references.add(path)
        return result.text


_RESOLVER = Resolver()
_SCALARS = SafeConstructor()


def typed_scalar(text: str) -> Any:
    """`text` read as a plain YAML scalar: 8080 an int, true a bool, other text itself."""
    tag = _RESOLVER.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if tag in RETYPABLE_TAGS:
        return _SCALARS.construct_object(ScalarNode(tag, text))
    return text
