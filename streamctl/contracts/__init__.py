"""Data contracts: JSON Schema draft 7 per event name (SPEC §2 "contracts/NAME.yaml").

    contract = compile_contract(yaml.safe_load(text), name="web")
    result = contract.check(event)   # -> ContractResult
    result.outcome                   # "allowed" | "blocked" | "omitted"
    result.violations                # (Violation(kind, pointer, message, ...), ...)
    result.event                     # the event to go on with (undeclared keys removed when omitted)

An event is looked up by its call type and name: a `track` by `event`, a `page` or
`screen` by `name` (exact match, case and spaces included); `identify` and `group`
have one entry per type, which checks `traits`. Each entry may carry a `context`
schema and `versions`, chosen by the event's `context.schemaVersion`.

Speed: every schema is compiled twice, with fastjsonschema (generated Python code,
~35x faster than jsonschema on the pass path) and with jsonschema's Draft7Validator.
The fast validator decides; only when it rejects a value does jsonschema run, to
report every error with its JSON pointer. Where jsonschema finds nothing wrong with
a rejected value (fastjsonschema checks `date-time` without optional packages and
reads `$` as ECMA 262 does), fastjsonschema's own message is the violation.
See docs/contracts.md for the measured figures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import fastjsonschema
import jsonschema
from jsonschema import Draft7Validator

from streamctl.core.errors import SpecError
from streamctl.core.events import CALL_TYPES, Event
from streamctl.core.outcomes import ContractResult, Violation

Enforcement = Literal["allow", "block"]
FieldEnforcement = Literal["allow", "block", "omit"]

NodePath = tuple[str | int, ...]

_NAMED_TYPES = {
    "track": "event",
    "page": "name",
    "screen": "name",
}  # call type -> the key holding its name
_TARGET_KEY = {
    "track": "properties",
    "page": "properties",
    "screen": "properties",
    "identify": "traits",
    "group": "traits",
    "alias": None,
}
_CONTRACT_KEYS = frozenset(
    {
        "name",
        "description",
        "on_undeclared_event",
        "on_violation",
        "on_undeclared_fields",
        "context",
        "events",
    }
)
_EVENT_KEYS = frozenset(
    {
        "name",
        "type",
        "description",
        "on_violation",
        "on_undeclared_fields",
        "properties",
        "traits",
        "context",
        "versions",
    }
)
_VERSION_KEYS = frozenset({"properties", "traits", "context"})


class CompiledSchema:
    """One JSON Schema, fast to pass and thorough when it fails."""

    def __init__(self, schema: Mapping[str, Any], path: NodePath) -> None:
        try:
            Draft7Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            msg = f"invalid JSON Schema: {exc.message}"
            raise SpecError(msg, (*path, *exc.path)) from None
        self.schema = schema
        self._detailed = Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)
        self._fast: Callable[[Any], Any] | None
        try:
            # use_default=False: fastjsonschema would otherwise fill in `default`s, mutating events.
            self._fast = fastjsonschema.compile(dict(schema), use_default=False)
        except Exception:  # a schema fastjsonschema cannot compile still works, slower
            self._fast = None
        properties = schema.get("properties")
        self.declared = frozenset(properties) if isinstance(properties, dict) else frozenset()
        patterns = schema.get("patternProperties")
        self._patterns = (
            tuple(re.compile(p) for p in patterns) if isinstance(patterns, dict) else ()
        )

    def undeclared(self, checked: Mapping[str, Any]) -> list[str]:
        """The keys of `checked` the schema does not declare, in their order."""
        if checked.keys() <= self.declared:  # the common case, settled in one C-level step
            return []
        return [k for k in checked if not self.declares(k)]

    def declares(self, key: str) -> bool:
        """Whether a key of the checked object is declared (`properties` or `patternProperties`)."""
        if key in self.declared:
            return True
        return any(p.search(key) for p in self._patterns)

    def errors(self, value: Any, pointer: str) -> list[tuple[str, str]]:
        """(JSON pointer into the event, message) for each way `value` breaks the schema."""
        rejection: fastjsonschema.JsonSchemaValueException | None = None
        if self._fast is not None:
            try:
                self._fast(value)
                return []
            except fastjsonschema.JsonSchemaValueException as exc:
                rejection = exc
            except Exception:  # a crash of generated code: let jsonschema decide alone
                rejection = None
        found = []
        for error in sorted(
            self._detailed.iter_errors(value), key=lambda e: list(map(str, e.path))
        ):
            where = pointer + "".join("/" + _escape_pointer(str(p)) for p in error.path)
            if error.validator == "required" and isinstance(error.instance, dict):
                # Point at the missing key itself: /properties/total, not /properties.
                missing = [k for k in error.validator_value if k not in error.instance]
                if len(missing) == 1:
                    where += "/" + _escape_pointer(str(missing[0]))
            found.append((where, error.message))
        if not found and rejection is not None:
            # jsonschema saw nothing wrong where fastjsonschema is stricter and right: formats
            # jsonschema has no checker for, `$` matching before a final newline.
            found.append(_fast_violation(rejection, pointer))
        return found


def _fast_violation(exc: fastjsonschema.JsonSchemaValueException, pointer: str) -> tuple[str, str]:
    steps = list(exc.path or [])[1:]  # the first step is the root's name, "data"
    where = pointer + "".join("/" + _escape_pointer(str(p)) for p in steps)
    message = str(exc.message)
    name = str(exc.name or "")
    return where, message[len(name) + 1 :] if name and message.startswith(name + " ") else message


@dataclass(frozen=True)
class EventSchemas:
    """The schemas an event is checked with: its entry's, or one version's."""

    target: CompiledSchema | None  # properties (track/page/screen) or traits (identify/group)
    context: CompiledSchema | None


@dataclass(frozen=True)
class EventRule:
    """One entry of a contract's `events`."""

    name: str | None
    type: str
    on_violation: Enforcement
    on_undeclared_fields: FieldEnforcement
    schemas: EventSchemas
    versions: Mapping[str, EventSchemas]

    @property
    def target_key(self) -> str | None:
        return _TARGET_KEY[self.type]


class Contract:
    """A compiled contract. `check` is pure: it never mutates the event it is given."""

    def __init__(
        self,
        name: str,
        rules: Mapping[tuple[str, str | None], EventRule],
        on_undeclared_event: Enforcement,
    ) -> None:
        self.name = name
        self.rules = rules
        self.on_undeclared_event = on_undeclared_event

    def rule_for(self, event: Event) -> EventRule | None:
        """The entry that checks `event`: by type and exact name (track, page, screen) or type alone."""
        kind = event.get("type", "track")
        name_key = _NAMED_TYPES.get(kind)
        if name_key is None:
            return self.rules.get((kind, None))
        name = event.get(name_key)
        return self.rules.get((kind, name)) if isinstance(name, str) else None

    def check(self, event: Event) -> ContractResult:
        rule = self.rule_for(event)
        if rule is None:
            return self._undeclared_event(event)
        schemas, version, violations = self._select_version(rule, event)
        schema_failed = bool(violations)  # an unknown schemaVersion counts as a schema failure
        outcome: Literal["allowed", "blocked", "omitted"] = "allowed"
        key = rule.target_key
        target_schema = schemas.target if key else None
        target = event.get(key) if key else None

        if key and target_schema is not None and isinstance(target, dict):
            undeclared = target_schema.undeclared(target)
            if undeclared:
                violations.extend(
                    self._violation(
                        "undeclared_field", f"/{key}/{_escape_pointer(k)}",
                        f"{k!r} is not declared in the contract", event, version,
                    )
                    for k in undeclared
                )  # fmt: skip
                if rule.on_undeclared_fields == "block":
                    outcome = "blocked"
                elif rule.on_undeclared_fields == "omit":
                    target = {k: v for k, v in target.items() if k not in undeclared}
                    event = {**event, key: target}
                    outcome = "omitted"

        if key and target_schema is not None:
            for pointer, message in target_schema.errors(event.get(key, {}), f"/{key}"):
                violations.append(self._violation("schema", pointer, message, event, version))
                schema_failed = True
        if schemas.context is not None:
            for pointer, message in schemas.context.errors(event.get("context", {}), "/context"):
                violations.append(self._violation("schema", pointer, message, event, version))
                schema_failed = True
        if schema_failed and rule.on_violation == "block":
            outcome = "blocked"
        return ContractResult(outcome, event, tuple(violations))

    def _select_version(
        self, rule: EventRule, event: Event
    ) -> tuple[EventSchemas, str | None, list[Violation]]:
        context = event.get("context")
        wanted = context.get("schemaVersion") if isinstance(context, dict) else None
        if wanted is None:
            return rule.schemas, None, []
        version = str(wanted)
        schemas = rule.versions.get(version)
        if schemas is not None:
            return schemas, version, []
        declared = ", ".join(rule.versions) or "none"
        message = f"unknown schema version {version!r} (declared: {declared})"
        violation = self._violation("schema", "/context/schemaVersion", message, event, version)
        return rule.schemas, version, [violation]

    def _undeclared_event(self, event: Event) -> ContractResult:
        kind = event.get("type", "track")
        name_key = _NAMED_TYPES.get(kind)
        if name_key:
            pointer = f"/{name_key}"
            message = f"{kind} {event.get(name_key)!r} is not declared in contract {self.name!r}"
        else:
            pointer = "/type"
            message = f"{kind} calls are not declared in contract {self.name!r}"
        violation = self._violation("undeclared_event", pointer, message, event, None)
        outcome: Literal["allowed", "blocked"] = (
            "blocked" if self.on_undeclared_event == "block" else "allowed"
        )
        return ContractResult(outcome, event, (violation,))

    def _violation(
        self, kind: Literal["undeclared_event", "undeclared_field", "schema"],
        pointer: str, message: str, event: Event, version: str | None,
    ) -> Violation:  # fmt: skip
        name_key = _NAMED_TYPES.get(event.get("type", "track"))
        name = event.get(name_key) if name_key else event.get("type")
        return Violation(
            kind, pointer, message, self.name, name if isinstance(name, str) else None, version
        )


def compile_contract(spec: Mapping[str, Any], name: str) -> Contract:
    """Compile every schema once; raises SpecError (with the node path) for an invalid contract.

    compile_contract({"events": [{"name": "Signed Up", "properties": {"type": "object"}}]}, "web")
    """
    if not isinstance(spec, Mapping):
        msg = f"a contract must be a mapping, got {type(spec).__name__}"
        raise SpecError(msg)
    _check_keys(spec, _CONTRACT_KEYS, ())
    contract_name = spec.get("name", name)
    if not isinstance(contract_name, str) or not contract_name:
        raise SpecError("name must be a non-empty string", ("name",))
    on_undeclared_event = _choice(spec, "on_undeclared_event", ("allow", "block"), "allow", ())
    defaults = {
        "on_violation": _choice(spec, "on_violation", ("allow", "block"), "allow", ()),
        "on_undeclared_fields": _choice(
            spec, "on_undeclared_fields", ("allow", "block", "omit"), "allow", ()
        ),
        "context": _schema(spec.get("context"), ("context",)),
    }
    events = spec.get("events", [])
    if not isinstance(events, list):
        raise SpecError("events must be a list", ("events",))
    rules: dict[tuple[str, str | None], EventRule] = {}
    for index, entry in enumerate(events):
        rule = _compile_rule(entry, ("events", index), defaults)
        key = (rule.type, rule.name if rule.type in _NAMED_TYPES else None)
        if key in rules:
            what = (
                f"{rule.type} {rule.name!r}" if rule.type in _NAMED_TYPES else f"{rule.type} calls"
            )
            msg = f"{what} is declared twice"
            raise SpecError(msg, ("events", index, "name" if rule.type in _NAMED_TYPES else "type"))
        rules[key] = rule
    return Contract(contract_name, rules, on_undeclared_event)


def _compile_rule(entry: Any, path: NodePath, defaults: Mapping[str, Any]) -> EventRule:
    if not isinstance(entry, Mapping):
        raise SpecError("an event entry must be a mapping", path)
    _check_keys(entry, _EVENT_KEYS, path)
    kind = entry.get("type", "track")
    if kind not in CALL_TYPES:
        msg = f"unknown type {kind!r} (one of {', '.join(CALL_TYPES)})"
        raise SpecError(msg, (*path, "type"))
    name = entry.get("name")
    if kind in _NAMED_TYPES and (not isinstance(name, str) or not name):
        msg = f"a {kind} entry needs a name (the exact event name)"
        raise SpecError(msg, (*path, "name"))
    if name is not None and not isinstance(name, str):
        raise SpecError("name must be a string", (*path, "name"))
    schemas = _event_schemas(entry, kind, path, defaults["context"])
    versions_spec = entry.get("versions", {})
    if not isinstance(versions_spec, Mapping):
        raise SpecError(
            "versions must be a mapping of version name to schemas", (*path, "versions")
        )
    versions = {}
    for version, version_spec in versions_spec.items():
        version_path = (*path, "versions", version)
        if not isinstance(version_spec, Mapping):
            raise SpecError(
                "a version must be a mapping with properties/traits/context", version_path
            )
        _check_keys(version_spec, _VERSION_KEYS, version_path)
        compiled = _event_schemas(version_spec, kind, version_path, None)
        # A version replaces only what it declares.
        versions[str(version)] = EventSchemas(
            compiled.target or schemas.target, compiled.context or schemas.context
        )
    return EventRule(
        name=name,
        type=kind,
        on_violation=_choice(
            entry, "on_violation", ("allow", "block"), defaults["on_violation"], path
        ),
        on_undeclared_fields=_choice(
            entry,
            "on_undeclared_fields",
            ("allow", "block", "omit"),
            defaults["on_undeclared_fields"],
            path,
        ),
        schemas=schemas,
        versions=versions,
    )


def _event_schemas(
    spec: Mapping[str, Any], kind: str, path: NodePath, default_context: CompiledSchema | None
) -> EventSchemas:
    target_key = _TARGET_KEY[kind]
    # SPEC §2 calls the target schema `properties` for every type; `traits` reads better for identify.
    key = "traits" if "traits" in spec else "properties"
    if target_key is None and key in spec:
        msg = f"{kind} calls have no {key} to check; only context"
        raise SpecError(msg, (*path, key))
    if "traits" in spec and "properties" in spec:
        raise SpecError("give either properties or traits, not both", (*path, "traits"))
    target = _schema(spec.get(key), (*path, key))
    context = _schema(spec.get("context"), (*path, "context")) or default_context
    return EventSchemas(target, context)


def _schema(value: Any, path: NodePath) -> CompiledSchema | None:
    if value is None:
        return None
    if not isinstance(value, Mapping | bool):
        msg = f"a JSON Schema must be a mapping, got {type(value).__name__}"
        raise SpecError(msg, path)
    if isinstance(value, bool):
        value = {} if value else {"not": {}}
    return CompiledSchema(value, path)


def _choice(
    spec: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str, path: NodePath
) -> Any:
    value = spec.get(key, default)
    if value not in allowed:
        msg = f"{key} must be one of {', '.join(allowed)}, got {value!r}"
        raise SpecError(msg, (*path, key))
    return value


def _check_keys(spec: Mapping[str, Any], allowed: frozenset[str], path: NodePath) -> None:
    for key in spec:
        if key not in allowed:
            msg = f"unknown key {key!r} (expected one of {', '.join(sorted(allowed))})"
            raise SpecError(msg, (*path, key))


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
