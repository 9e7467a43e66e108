"""Field mappings: `field`, `static`, `template`, `array`, `object` (SPEC §2 "Mapping values").

    mapping = compile_mapping(spec, sync=SyncVars("s", "web", "braze"), event_type=spec_of_type)
    mapping.apply(event)  # -> MappedEvent, raises MappingError naming the field and value

A `mappings:` block has up to three sections, `required`, `user` and `properties`,
each a map of destination field names to mapping values. Everything is compiled once:
paths into getters, templates into renderers, statics into constants. Per event,
`apply` builds the three dicts, leaves out fields whose value is absent, and checks
that each required field of the destination's event type is present with its JSON
type.

Mapped values share structure with the event (`{field: properties}` is the event's
own dict), so whoever receives a MappedEvent must not mutate it in place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from streamctl.core.errors import MappingError, SpecError, suggest
from streamctl.core.events import Event
from streamctl.destinations.base import EventTypeSpec, JSONType, MappedEvent
from streamctl.mappings.paths import ABSENT, compile_path
from streamctl.mappings.templates import compile_template, excerpt

SECTIONS: Final = ("required", "user", "properties")
VALUE_FORMS: Final = ("field", "static", "template", "array", "object")

ValueFn = Callable[[Event], Any]
NodePath = tuple[str | int, ...]


@dataclass(frozen=True)
class SyncVars:
    """The `sync` variable of templates."""

    name: str
    source: str
    destination: str

    def as_template_variable(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source, "destination": self.destination}


# -- JSON types of required fields -------------------------------------------------------


def json_type_of(value: Any) -> str:
    """The JSON type name of a value, `integer` for whole numbers, as in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


TYPE_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "string": lambda value: isinstance(value, str),
    "number": _is_number,  # an integer is a number; a boolean is not
    "integer": _is_integer,  # 2.0 is an integer (JSON Schema), true is not
    "boolean": lambda value: isinstance(value, bool),
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "any": lambda value: True,
}


def is_json_type(value: Any, json_type: JSONType) -> bool:
    """Whether `value` has the destination field type `json_type`."""
    return TYPE_CHECKS[json_type](value)


# -- compiled mappings -------------------------------------------------------------------


@dataclass(frozen=True)
class RequiredCheck:
    """One required field of the event type: its JSON type and where its value comes from."""

    name: str
    type: JSONType
    origin: str  # for "missing" messages: "properties.total is not in the event"


class CompiledMapping:
    """A `mappings:` block ready to apply to events; built by `compile_mapping`."""

    def __init__(
        self,
        sections: Mapping[str, tuple[tuple[str, ValueFn], ...]],
        checks: tuple[RequiredCheck, ...],
        event_type: str | None,
    ) -> None:
        self._required = sections.get("required", ())
        self._user = sections.get("user", ())
        self._properties = sections.get("properties", ())
        self._checks = tuple((c, TYPE_CHECKS[c.type]) for c in checks)
        self.event_type = event_type

    def apply(self, event: Event) -> MappedEvent:
        """Map one event; raises MappingError when a required field is missing or mistyped,
        or when a template fails."""
        required = _build(self._required, event)
        for check, has_type in self._checks:
            value = required.get(check.name, ABSENT)
            if value is ABSENT:
                raise self._missing(check)
            if not has_type(value):
                raise self._mistyped(check, value)
        return MappedEvent(
            required,
            _build(self._user, event) if self._user else {},
            _build(self._properties, event) if self._properties else {},
        )

    def _missing(self, check: RequiredCheck) -> MappingError:
        where = f" of event type {self.event_type!r}" if self.event_type else ""
        msg = f"required field {check.name!r}{where} is missing: {check.origin}"
        return MappingError(msg, field=check.name)

    def _mistyped(self, check: RequiredCheck, value: Any) -> MappingError:
        where = f" of event type {self.event_type!r}" if self.event_type else ""
        article = "an" if check.type[0] in "aeiou" else "a"
        msg = (
            f"required field {check.name!r}{where} must be {article} {check.type}, "
            f"got {json_type_of(value)} {excerpt(value)}"
        )
        return MappingError(msg, field=check.name)


def _build(items: tuple[tuple[str, ValueFn], ...], event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value_of in items:
        value = value_of(event)
        if value is not ABSENT:
            out[name] = value
    return out


def compile_mapping(
    spec: Mapping[str, Any], *, sync: SyncVars, event_type: EventTypeSpec | None
) -> CompiledMapping:
    """Compile a `mappings:` block (required / user / properties); raises SpecError with the node path.

    Checks against the destination catalog (sections it accepts, required fields left
    unmapped, unknown field names) belong to the loader, which reports them all at
    once; here each required field's type becomes a per-event check.

    >>> mapping = compile_mapping(
    ...     {"required": {"name": {"field": "event"}}, "properties": {"plan": {"static": "pro"}}},
    ...     sync=SyncVars("s", "web", "file"), event_type=None)
    >>> mapping.apply({"event": "Signed Up"}).required
    {'name': 'Signed Up'}
    """
    if not isinstance(spec, Mapping):
        msg = f"mappings must be a map of sections (required, user, properties), got {spec!r}"
        raise SpecError(msg)
    compiler = _ValueCompiler(sync.as_template_variable())
    sections: dict[str, tuple[tuple[str, ValueFn], ...]] = {}
    origins: dict[str, str] = {}
    for section, fields in spec.items():
        if section not in SECTIONS:
            msg = f"unknown mapping section {section!r}{suggest(str(section), SECTIONS)}; sections: {', '.join(SECTIONS)}"
            raise SpecError(msg, (str(section),))
        if fields is None:
            continue
        if not isinstance(fields, Mapping):
            msg = f"section {section!r} must map field names to mapping values, got {type(fields).__name__} {fields!r}"
            raise SpecError(msg, (section,))
        items = []
        for name, value_spec in fields.items():
            label = str(name) if section == "required" else f"{section}.{name}"
            items.append((str(name), compiler.compile(value_spec, label, (section, str(name)))))
            if section == "required":
                origins[str(name)] = _origin(value_spec)
        sections[section] = tuple(items)
    checks = tuple(
        RequiredCheck(field.name, field.type, origins.get(field.name, "it is not mapped"))
        for field in (event_type.required if event_type else ())
    )
    return CompiledMapping(sections, checks, event_type.name if event_type else None)


def _origin(value_spec: Any) -> str:
    if isinstance(value_spec, Mapping):
        if "field" in value_spec:
            return f"{value_spec['field']} is not in the event"
        if "template" in value_spec:
            return "its template's value is missing from the event"
    return "its value is missing"


class _ValueCompiler:
    """Compiles one mapping value (and its nested values) into `event -> value | ABSENT`."""

    def __init__(self, sync: dict[str, str]) -> None:
        self.sync = sync

    def compile(self, spec: Any, label: str, at: NodePath) -> ValueFn:
        if not isinstance(spec, Mapping):
            msg = (
                f"field {label!r}: a mapping value is one of {{field: PATH}}, {{static: VALUE}}, "
                f"{{template: LIQUID}}, {{array: [...]}}, {{object: {{...}}}}; got {spec!r}"
            )
            if isinstance(spec, str | int | float | bool):
                msg += f" (for a constant write {{static: {spec!r}}})"
            raise SpecError(msg, at)
        forms = [key for key in spec if key in VALUE_FORMS]
        unknown = [key for key in spec if key not in VALUE_FORMS]
        if unknown:
            key = str(unknown[0])
            msg = f"field {label!r}: unknown mapping value {key!r}{suggest(key, VALUE_FORMS)}; expected one of {', '.join(VALUE_FORMS)}"
            raise SpecError(msg, (*at, key))
        if len(forms) != 1:
            found = " and ".join(repr(k) for k in forms) or "nothing"
            msg = f"field {label!r}: a mapping value has exactly one of {', '.join(VALUE_FORMS)}; found {found}"
            raise SpecError(msg, at)
        form = forms[0]
        value = spec[form]
        at = (*at, form)
        if form == "field":
            return self._field(value, label, at)
        if form == "static":
            return _static(value)
        if form == "template":
            return self._template(value, label, at)
        if form == "array":
            return self._array(value, label, at)
        return self._object(value, label, at)

    def _field(self, path: Any, label: str, at: NodePath) -> ValueFn:
        try:
            return compile_path(path)
        except SpecError as exc:
            raise SpecError(f"field {label!r}: {exc}", at) from None

    def _template(self, source: Any, label: str, at: NodePath) -> ValueFn:
        try:
            return compile_template(source, field=label, sync=self.sync).render
        except SpecError as exc:
            raise SpecError(f"field {label!r}: {exc}", at) from None

    def _array(self, items: Any, label: str, at: NodePath) -> ValueFn:
        if not isinstance(items, list):
            msg = f"field {label!r}: `array` takes a list of mapping values, got {items!r}"
            raise SpecError(msg, at)
        parts = tuple(self.compile(item, f"{label}[{i}]", (*at, i)) for i, item in enumerate(items))

        def build_array(event: Event) -> list[Any]:
            out = []
            for value_of in parts:
                value = value_of(event)
                if value is not ABSENT:
                    out.append(value)
            return out

        return build_array

    def _object(self, fields: Any, label: str, at: NodePath) -> ValueFn:
        if not isinstance(fields, Mapping):
            msg = f"field {label!r}: `object` takes a map of keys to mapping values, got {fields!r}"
            raise SpecError(msg, at)
        items = tuple(
            (str(key), self.compile(value, f"{label}.{key}", (*at, str(key))))
            for key, value in fields.items()
        )
        return lambda event: _build(items, event)


def _static(value: Any) -> ValueFn:
    # A static object or array is copied per event, so one payload's consumer cannot
    # change what the next event gets.
    if isinstance(value, dict | list):
        return lambda event: copy.deepcopy(value)
    return lambda event: value
