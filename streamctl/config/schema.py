"""Structural validation of project files against the JSON Schemas in `schemas/`.

The schemas ship in the package so editors can use them too (for example with the
YAML language server: `# yaml-language-server: $schema=...`). Each jsonschema error
becomes a Problem at the line and column of the offending node, in words a person
can act on: unknown keys name the closest known key, enums list the choices.

    problems, broken = check_structure(doc, "sync")
    # broken: the node paths that failed, so later checks skip what would only repeat them
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any, Literal

import jsonschema
from jsonschema.exceptions import ValidationError

from streamctl.channels import CHANNELS
from streamctl.config.documents import Document, NodePath
from streamctl.core.errors import Problem, suggest

SchemaName = Literal["streamctl", "sync", "contract", "tests"]

TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


@cache
def load_schema(name: SchemaName) -> dict[str, Any]:
    """The JSON Schema for a kind of project file, as shipped in the package."""
    text = resources.files("streamctl.config.schemas").joinpath(f"{name}.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    if name == "streamctl":  # the channel types are those of the one table (the file's copy
        # is for editors; tests/test_config_loader.py keeps it equal)
        channel_type(schema)["enum"] = sorted(CHANNELS)
    return schema


def channel_type(schema: dict[str, Any]) -> dict[str, Any]:
    """The `type` property of an alert channel in streamctl.schema.json."""
    node: dict[str, Any] = schema["definitions"]["channel"]["properties"]["type"]
    return node


@cache
def _validator(name: SchemaName) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(load_schema(name))


def check_structure(doc: Document, name: SchemaName) -> tuple[list[Problem], set[NodePath]]:
    """Every structural problem of `doc`, and the paths of the nodes they concern."""
    problems: list[Problem] = []
    broken: set[NodePath] = set()
    data = {} if doc.data is None else doc.data
    validator = _validator(name)
    if _coerce_quoted_references(doc, validator.iter_errors(data)):
        data = doc.data
    for error in validator.iter_errors(data):
        path: NodePath = tuple(error.absolute_path)
        if path in doc.unresolved:
            broken.add(path)
            continue
        for problem, where in _problems_of(doc, path, error):
            problems.append(problem)
            broken.add(where)
    return problems, broken


def _coerce_quoted_references(doc: Document, errors: Iterable[ValidationError]) -> bool:
    changed = False
    for error in errors:
        if error.validator != "type":
            continue
        expected = error.validator_value
        names = expected if isinstance(expected, list) else [expected]
        coerced, _ = doc.coerce(tuple(error.absolute_path), [str(n) for n in names])
        changed = changed or coerced
    return changed


def is_clean(path: NodePath, broken: Iterable[NodePath]) -> bool:
    """No structural problem at `path`, inside it, or at one of its ancestors' own level."""
    return not any(b[: len(path)] == path or path[: len(b)] == b for b in broken)


def describe(path: NodePath) -> str:
    """`event_types[0].mappings.required.price` for a node path."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def type_word(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    for name, kind in (("object", dict), ("array", list), ("string", str), ("integer", int)):
        if isinstance(value, kind):
            return TYPE_WORDS[name]
    return TYPE_WORDS["number"]


def _problems_of(
    doc: Document, path: NodePath, error: ValidationError
) -> list[tuple[Problem, NodePath]]:
    """Problems for one error, each with the path later checks must skip.

    An unknown or missing key breaks only that key, not the whole mapping around it."""
    where = f"{describe(path)}: " if path else ""
    if error.validator == "additionalProperties":
        return _unknown_keys(doc, path, error)
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        what = describe(path) or "the file"
        problem = doc.problem(path, f"{what} is missing required key {missing!r}", key=True)
        return [(problem, (*path, missing))]
    custom = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if custom:
        return [(doc.problem(path, f"{where}{custom}"), path)]
    if error.validator == "type":
        expected = error.validator_value
        names = expected if isinstance(expected, list) else [expected]
        words = " or ".join(TYPE_WORDS.get(str(n), str(n)) for n in names)
        got = type_word(error.instance)
        return [(doc.problem(path, f"{where}expected {words}, got {got}"), path)]
    if error.validator == "enum":
        choices = [str(c) for c in error.validator_value]
        hint = suggest(str(error.instance), choices)
        message = f"{where}{error.instance!r} is not one of {', '.join(choices)}{hint}"
        return [(doc.problem(path, message), path)]
    return [(doc.problem(path, f"{where}{error.message}"), path)]


def _unknown_keys(
    doc: Document, path: NodePath, error: ValidationError
) -> list[tuple[Problem, NodePath]]:
    known = list(error.schema.get("properties", {}))
    extra = [k for k in error.instance if k not in known]
    where = f" in {describe(path)}" if path else ""
    return [
        (
            doc.problem((*path, key), f"unknown key {key!r}{where}{suggest(key, known)}", key=True),
            (*path, key),
        )
        for key in extra
    ]
