"""Building one sync (`syncs/NAME.yaml`) into a compiled SyncConfig, checking it on the way.

Structural problems were already reported from the schema; this checks what a schema
cannot: references to sources and destinations, the function file, the destination's
event types and their required fields, static values against field types, and it
compiles filters and mappings (their SpecErrors point at the offending node).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from streamctl.config.documents import Document, NodePath
from streamctl.config.schema import TYPE_WORDS, is_clean, type_word
from streamctl.core.errors import Problem, SpecError, suggest
from streamctl.core.model import (
    EMPTY,
    BackoffPolicy,
    DeliveryPolicy,
    EventTypeRule,
    FunctionRef,
    Location,
    SyncConfig,
)
from streamctl.core.units import parse_duration, parse_rate
from streamctl.destinations.base import CatalogEntry, EventTypeSpec, JSONType
from streamctl.filters import Predicate, compile_filter
from streamctl.functions import check_function
from streamctl.mappings import CompiledMapping, SyncVars, compile_mapping

T = TypeVar("T")


@dataclass(frozen=True)
class SyncContext:
    """What a sync may refer to: the names streamctl.yaml declares and the destinations' catalog entries."""

    root: Path
    # None: streamctl.yaml (or that section) could not be read, so references are not checked
    sources: Collection[str] | None
    destinations: Collection[str] | None
    catalog_of: Mapping[str, CatalogEntry]  # destination name -> its type's catalog entry


@dataclass
class _SyncBuild:
    doc: Document
    broken: set[NodePath]
    context: SyncContext
    problems: list[Problem] = field(default_factory=list)

    def error(self, path: NodePath, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, key=key))

    def warn(self, path: NodePath, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, severity="warning", key=key))

    def clean(self, path: NodePath) -> bool:
        return is_clean(path, self.broken)


def sync_name(doc: Document) -> str:
    """The sync's `name:`, or its file name without the extension."""
    data = doc.data if isinstance(doc.data, dict) else {}
    name = data.get("name")
    return name if isinstance(name, str) and name else Path(doc.path).stem


def build_sync(
    doc: Document, broken: set[NodePath], context: SyncContext
) -> tuple[SyncConfig | None, list[Problem]]:
    """The compiled sync (None when anything is wrong) and every problem found in it."""
    build = _SyncBuild(doc, broken, context)
    data = doc.data
    if not isinstance(data, dict):
        return None, build.problems
    name = sync_name(doc)
    source = _reference(build, data, "source", context.sources, "source")
    destination = _reference(build, data, "destination", context.destinations, "destination")
    entry = context.catalog_of.get(destination) if destination else None
    function = _function(build, data)
    delivery = _delivery(build, data.get("delivery"), entry)
    sync_vars = SyncVars(name, source or "", destination or "")
    rules = _event_types(build, data.get("event_types"), entry, sync_vars)
    ok = not broken and not any(p.severity == "error" for p in build.problems)
    if not ok or source is None or destination is None or rules is None:
        return None, build.problems
    match = data.get("match", "first")
    config = SyncConfig(
        name=name,
        source=source,
        destination=destination,
        event_types=rules,
        match=match,
        function=function,
        delivery=delivery,
        location=Location(doc.path, *doc.position(("name",) if "name" in data else ())),
    )
    return config, build.problems


def _reference(
    build: _SyncBuild, data: dict[str, Any], key: str, known: Collection[str] | None, what: str
) -> str | None:
    value = data.get(key)
    if not isinstance(value, str) or known is None:
        return None
    if value not in known:
        listing = ", ".join(sorted(known)) or "none"
        message = (
            f"unknown {what} {value!r}{suggest(value, known)}; "
            f"streamctl.yaml defines {what}s: {listing}"
        )
        build.error((key,), message)
        return None
    return value


def _function(build: _SyncBuild, data: dict[str, Any]) -> FunctionRef | None:
    spec = data.get("function")
    if spec is None or not build.clean(("function",)):
        return None
    at: NodePath = ("function",)
    relative, settings, timeout = spec, data.get("function_settings", EMPTY), None
    if isinstance(spec, dict):
        relative = spec["path"]
        settings = spec.get("settings", settings)
        timeout = spec.get("timeout")
        at = ("function", "path")
    if timeout is None:
        timeout = data.get("function_timeout", 5.0)
    ref = FunctionRef(
        path=(build.context.root / relative).resolve(),
        settings=settings,
        timeout=parse_duration(timeout),
    )
    reason = check_function(ref)
    if reason is not None:
        build.error(at, reason)
        return None
    return ref


def _delivery(build: _SyncBuild, spec: Any, entry: CatalogEntry | None) -> DeliveryPolicy:
    if not isinstance(spec, dict) or not build.clean(("delivery",)):
        return DeliveryPolicy()
    defaults = DeliveryPolicy()
    batch_size = spec.get("batch_size")
    if batch_size is not None and entry is not None and batch_size > entry.max_batch_size:
        build.error(
            ("delivery", "batch_size"),
            f"batch_size {batch_size} is over the {entry.type} destination's limit of "
            f"{entry.max_batch_size} events per request",
        )
    backoff = spec.get("backoff", {})
    initial = parse_duration(backoff.get("initial", defaults.backoff.initial))
    maximum = parse_duration(backoff.get("max", defaults.backoff.max))
    if maximum < initial:
        build.error(("delivery", "backoff"), "backoff.max is shorter than backoff.initial")
    rate = None if spec.get("rate_limit") is None else parse_rate(spec["rate_limit"])
    if rate is not None and rate <= 0:
        build.error(("delivery", "rate_limit"), "rate_limit must be above zero")
    return DeliveryPolicy(
        batch_size=batch_size,
        concurrency=spec.get("concurrency", defaults.concurrency),
        rate_limit=rate,
        max_attempts=spec.get("max_attempts", defaults.max_attempts),
        max_age=parse_duration(spec.get("max_age", defaults.max_age)),
        backoff=BackoffPolicy(initial=initial, max=maximum),
        ordering=spec.get("ordering", defaults.ordering),
        timeout=parse_duration(spec.get("timeout", defaults.timeout)),
    )


def _event_types(
    build: _SyncBuild, specs: Any, entry: CatalogEntry | None, sync_vars: SyncVars
) -> tuple[EventTypeRule, ...] | None:
    if not isinstance(specs, list):
        return None
    rules: list[EventTypeRule] = []
    complete = True
    for index, spec in enumerate(specs):
        rule = _event_type(build, ("event_types", index), spec, entry, sync_vars)
        complete = complete and rule is not None
        if rule is not None:
            rules.append(rule)
    _check_catch_all(build, specs)
    return tuple(rules) if complete and rules else None


def _event_type(
    build: _SyncBuild,
    path: NodePath,
    spec: Any,
    entry: CatalogEntry | None,
    sync_vars: SyncVars,
) -> EventTypeRule | None:
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        return None
    type_name: str = spec["type"]
    type_spec = _type_spec(build, path, type_name, entry)
    mappings: dict[str, Any] = spec["mappings"] if isinstance(spec.get("mappings"), dict) else {}
    if type_spec is not None and entry is not None:
        _check_mappings(build, (*path, "mappings"), mappings, entry, type_spec)
    predicate: Predicate | None = _compiled(
        build, (*path, "filter"), spec.get("filter"), compile_filter
    )
    mapping: CompiledMapping | None = _compiled(
        build,
        (*path, "mappings"),
        mappings,
        lambda m: compile_mapping(m, sync=sync_vars, event_type=type_spec),
    )
    if mapping is None or ("filter" in spec and predicate is None):
        return None
    line, column = build.doc.position(path)
    return EventTypeRule(type_name, predicate, mapping, Location(build.doc.path, line, column))


def _type_spec(
    build: _SyncBuild, path: NodePath, type_name: str, entry: CatalogEntry | None
) -> EventTypeSpec | None:
    if entry is None:
        return None
    type_spec = entry.event_type(type_name)
    if type_spec is None:
        names = [t.name for t in entry.event_types]
        build.error(
            (*path, "type"),
            f"the {entry.type} destination has no event type {type_name!r}"
            f"{suggest(type_name, names)}; its event types: {', '.join(names)}",
        )
    return type_spec


def _check_mappings(
    build: _SyncBuild,
    path: NodePath,
    mappings: dict[str, Any],
    entry: CatalogEntry,
    type_spec: EventTypeSpec,
) -> None:
    where = f"{entry.type} event type {type_spec.name!r}"
    for section, accepted in (
        ("user", type_spec.user_fields),
        ("properties", type_spec.properties),
    ):
        if section in mappings and not accepted:
            build.error((*path, section), f"{where} takes no {section!r} section", key=True)
    user = mappings.get("user")
    if type_spec.user_keys and isinstance(user, dict):
        for name in user:
            if name not in type_spec.user_keys:
                build.error(
                    (*path, "user", name),
                    f"{where} has no user field {name!r}{suggest(name, type_spec.user_keys)}; "
                    f"its user fields: {', '.join(type_spec.user_keys)}",
                    key=True,
                )
    required = mappings.get("required")
    required = required if isinstance(required, dict) else {}
    for field_spec in type_spec.required:
        if field_spec.name not in required:
            at = (*path, "required") if "required" in mappings else path
            build.error(
                at,
                f"required field {field_spec.name!r} of {where} is not mapped",
                key=True,
            )
    known = [f.name for f in (*type_spec.required, *type_spec.optional)]
    for name, value in required.items():
        named = type_spec.field(name)
        if named is None:
            if not type_spec.open_fields:
                build.error(
                    (*path, "required", name),
                    f"{where} has no field {name!r}{suggest(name, known)}; "
                    f"its fields: {', '.join(known) or 'none'}",
                    key=True,
                )
            continue
        if isinstance(value, dict) and "static" in value:
            static = value["static"]
            if not matches_json_type(static, named.type):
                build.error(
                    (*path, "required", name, "static"),
                    f"field {name!r} of {where} takes {TYPE_WORDS[named.type]}; "
                    f"the static value {static!r} is {type_word(static)}",
                )


def matches_json_type(value: Any, json_type: JSONType) -> bool:
    """Whether a JSON value has a JSON Schema type (`integer` accepts 2.0, never true)."""
    if json_type == "any":
        return True
    if isinstance(value, bool):
        return json_type == "boolean"
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float),
        "integer": lambda v: isinstance(v, int) or (isinstance(v, float) and v.is_integer()),
        "boolean": lambda v: False,
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    return checks[json_type](value)


def _compiled(
    build: _SyncBuild, path: NodePath, spec: Any, compile_node: Callable[[Any], T]
) -> T | None:
    """`compile_node(spec)`, or None with a problem at the node its SpecError names."""
    if spec is None or not build.clean(path):
        return None
    try:
        return compile_node(spec)
    except SpecError as exc:
        build.error((*path, *exc.path), str(exc))
        return None


def _check_catch_all(build: _SyncBuild, specs: list[Any]) -> None:
    unfiltered = [i for i, s in enumerate(specs) if isinstance(s, dict) and "filter" not in s]
    if not specs:
        return
    last = len(specs) - 1
    if last not in unfiltered:
        build.warn(
            ("event_types", last),
            "no catch-all event type: events that match no filter are recorded as 'filtered' "
            "and not delivered; end the list with an event type without a filter if that is "
            "not intended",
        )
    match = build.doc.data.get("match", "first") if isinstance(build.doc.data, dict) else "first"
    for index in unfiltered:
        if index < last and match == "first":
            build.warn(
                ("event_types", index),
                f"event_types[{index}] has no filter and matches every event, so the event "
                "types after it are never used (match: first)",
            )
