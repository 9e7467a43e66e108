"""Filters: the conditions that choose a destination event type (SPEC §2 "Filters").

    predicate = compile_filter({"all": [{"field": "type", "op": "eq", "value": "track"}]})
    predicate(event)  # -> bool

A filter is a condition `{field: PATH, op: OP, value: V}` or a combination
`{all: [...]}`, `{any: [...]}`, `{not: {...}}`, nested freely. It is compiled once,
when the sync loads, into plain closures: evaluating it per event does no parsing,
no dispatch on the op name and no regex compilation.

Comparison rules (JSON semantics, not Python's):

- `eq`/`neq`/`in`/`not_in`/`contains`: `1` equals `1.0`, but `true` is not `1` and
  `"1"` is not `1`; objects and arrays compare element by element with the same rules.
- `gt`/`gte`/`lt`/`lte`: false whenever the field is not a number (booleans are not
  numbers); the configured value must be a number.
- `exists`: present and not null; `not_exists`: absent or null.
- A missing field equals nothing, so `neq`, `not_in` and `not_contains` are true for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streamctl.core.errors import SpecError
from streamctl.core.errors import suggest as did_you_mean
from streamctl.core.events import Event
from streamctl.filters.equality import json_equal, make_membership
from streamctl.mappings.paths import ABSENT, Getter, compile_path

Predicate = Callable[[Event], bool]
NodePath = tuple[str | int, ...]

OPS = (
    "eq", "neq", "in", "not_in", "contains", "not_contains", "starts_with", "ends_with",
    "matches", "gt", "gte", "lt", "lte", "exists", "not_exists", "is_true", "is_false",
)  # fmt: skip

UNARY_OPS = frozenset({"exists", "not_exists", "is_true", "is_false"})
COMBINATORS = ("all", "any", "not")
CONDITION_KEYS = ("field", "op", "value")
_NUMBER_TYPES = (int, float)


def compile_filter(spec: Any) -> Predicate:
    """Compile a filter spec once; raises SpecError (with the node path) for unknown ops or bad regexes.

    >>> is_order = compile_filter({"all": [
    ...     {"field": "type", "op": "eq", "value": "track"},
    ...     {"field": "event", "op": "eq", "value": "Order Completed"},
    ... ]})
    >>> is_order({"type": "track", "event": "Order Completed"})
    True
    """
    return _compile_node(spec, ())


def _compile_node(node: Any, at: NodePath) -> Predicate:
    if not isinstance(node, Mapping):
        msg = (
            "a filter must be a condition {field, op, value} or one of all/any/not, "
            f"got {type(node).__name__} {node!r}"
        )
        raise SpecError(msg, at)
    combinators = [key for key in COMBINATORS if key in node]
    if combinators:
        if len(node) != 1:
            others = ", ".join(repr(k) for k in node if k != combinators[0])
            msg = f"{combinators[0]!r} must be alone in its filter node; also found {others}"
            raise SpecError(msg, at)
        key = combinators[0]
        if key == "not":
            return _negate(_compile_node(node["not"], (*at, "not")))
        return _compile_combination(key, node[key], (*at, key))
    if "op" not in node and "field" not in node:
        unknown = next(iter(node), "")
        hint = did_you_mean(str(unknown), (*COMBINATORS, *CONDITION_KEYS))
        msg = f"unknown filter key {unknown!r}{hint}; expected all, any, not or a condition {{field, op, value}}"
        raise SpecError(msg, (*at, str(unknown)))
    return _compile_condition(node, at)


def _compile_combination(key: str, children: Any, at: NodePath) -> Predicate:
    if not isinstance(children, Sequence) or isinstance(children, str):
        msg = f"{key!r} takes a list of filters, got {type(children).__name__} {children!r}"
        raise SpecError(msg, at)
    if not children:
        msg = f"{key!r} needs at least one filter; remove it to match every event"
        raise SpecError(msg, at)
    predicates = [_compile_node(child, (*at, i)) for i, child in enumerate(children)]
    return _all_of(predicates) if key == "all" else _any_of(predicates)


def _all_of(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda event: first(event) and second(event)
    if len(predicates) == 3:
        first, second, third = predicates
        return lambda event: first(event) and second(event) and third(event)
    fixed = tuple(predicates)

    def all_of(event: Event) -> bool:
        # A plain loop: all() over a generator costs a frame per event.
        for predicate in fixed:  # noqa: SIM110
            if not predicate(event):
                return False
        return True

    return all_of


def _any_of(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda event: first(event) or second(event)
    fixed = tuple(predicates)

    def any_of(event: Event) -> bool:
        for predicate in fixed:  # noqa: SIM110
            if predicate(event):
                return True
        return False

    return any_of


def _negate(predicate: Predicate) -> Predicate:
    return lambda event: not predicate(event)


# -- conditions ------------------------------------------------------------------------


def _compile_condition(node: Mapping[str, Any], at: NodePath) -> Predicate:
    for key in node:
        if key not in CONDITION_KEYS:
            hint = did_you_mean(str(key), CONDITION_KEYS)
            msg = f"unknown key {key!r} in a filter condition{hint}; a condition has field, op and value"
            raise SpecError(msg, (*at, str(key)))
    if "field" not in node:
        msg = "a filter condition needs a `field` (the path to read)"
        raise SpecError(msg, at)
    if "op" not in node:
        msg = f"the condition on {node['field']!r} needs an `op`: one of {', '.join(OPS)}"
        raise SpecError(msg, at)
    op = node["op"]
    if op not in OPS:
        hint = did_you_mean(str(op), OPS)
        msg = f"unknown op {op!r}{hint}; known ops: {', '.join(OPS)}"
        raise SpecError(msg, (*at, "op"))
    try:
        get = compile_path(node["field"])
    except SpecError as exc:
        raise SpecError(str(exc), (*at, "field")) from None
    if op in UNARY_OPS:
        if "value" in node:
            msg = f"op {op!r} takes no value; remove `value: {node['value']!r}`"
            raise SpecError(msg, (*at, "value"))
        return _UNARY[op](get)
    if "value" not in node:
        msg = f"op {op!r} needs a `value`"
        raise SpecError(msg, at)
    return _BINARY[op](get, node["value"], (*at, "value"))


def _eq(get: Getter, value: Any, at: NodePath) -> Predicate:
    # Specialise on the configured value's type so the common cases are one comparison.
    if isinstance(value, str):
        return lambda event: get(event) == value  # no other JSON type equals a str
    if value is None or isinstance(value, bool):
        return lambda event: get(event) is value
    if isinstance(value, _NUMBER_TYPES):
        return lambda event: _is_number_equal(get(event), value)
    _check_json(value, at)
    return lambda event: json_equal(get(event), value)


def _is_number_equal(actual: Any, value: float) -> bool:
    return actual == value and actual.__class__ is not bool


def _neq(get: Getter, value: Any, at: NodePath) -> Predicate:
    return _negate(_eq(get, value, at))


def _in(get: Getter, value: Any, at: NodePath) -> Predicate:
    if not isinstance(value, list):
        msg = f"op 'in' takes a list of values, got {type(value).__name__} {value!r}"
        raise SpecError(msg, at)
    _check_json(value, at)
    contains = make_membership(value)
    return lambda event: contains(get(event))


def _not_in(get: Getter, value: Any, at: NodePath) -> Predicate:
    if not isinstance(value, list):
        msg = f"op 'not_in' takes a list of values, got {type(value).__name__} {value!r}"
        raise SpecError(msg, at)
    return _negate(_in(get, value, at))


def _contains(get: Getter, value: Any, at: NodePath) -> Predicate:
    _check_json(value, at)
    if isinstance(value, str):

        def contains_text_or_item(event: Event) -> bool:
            actual = get(event)
            if isinstance(actual, str):
                return value in actual
            if isinstance(actual, list):
                return value in actual  # only an equal str matches a str
            return False

        return contains_text_or_item

    def contains_item(event: Event) -> bool:
        actual = get(event)
        if isinstance(actual, list):
            return any(json_equal(item, value) for item in actual)
        return False

    return contains_item


def _not_contains(get: Getter, value: Any, at: NodePath) -> Predicate:
    return _negate(_contains(get, value, at))


def _string_value(op: str, value: Any, at: NodePath) -> str:
    if not isinstance(value, str):
        msg = f"op {op!r} compares strings; value must be a string, got {type(value).__name__} {value!r}"
        raise SpecError(msg, at)
    return value


def _starts_with(get: Getter, value: Any, at: NodePath) -> Predicate:
    prefix = _string_value("starts_with", value, at)

    def starts_with(event: Event) -> bool:
        actual = get(event)
        return isinstance(actual, str) and actual.startswith(prefix)

    return starts_with


def _ends_with(get: Getter, value: Any, at: NodePath) -> Predicate:
    suffix = _string_value("ends_with", value, at)

    def ends_with(event: Event) -> bool:
        actual = get(event)
        return isinstance(actual, str) and actual.endswith(suffix)

    return ends_with


def _matches(get: Getter, value: Any, at: NodePath) -> Predicate:
    source = _string_value("matches", value, at)
    try:
        search = re.compile(source).search
    except re.error as exc:
        msg = f"invalid regular expression {source!r}: {exc}"
        raise SpecError(msg, at) from None

    def matches(event: Event) -> bool:
        actual = get(event)
        return isinstance(actual, str) and search(actual) is not None

    return matches


def _number_value(op: str, value: Any, at: NodePath) -> float:
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        msg = f"op {op!r} compares numbers; value must be a number, got {type(value).__name__} {value!r}"
        raise SpecError(msg, at)
    return value


def _gt(get: Getter, value: Any, at: NodePath) -> Predicate:
    bound = _number_value("gt", value, at)

    def gt(event: Event) -> bool:
        actual = get(event)
        return actual.__class__ in _NUMBER_TYPES and actual > bound

    return gt


def _gte(get: Getter, value: Any, at: NodePath) -> Predicate:
    bound = _number_value("gte", value, at)

    def gte(event: Event) -> bool:
        actual = get(event)
        return actual.__class__ in _NUMBER_TYPES and actual >= bound

    return gte


def _lt(get: Getter, value: Any, at: NodePath) -> Predicate:
    bound = _number_value("lt", value, at)

    def lt(event: Event) -> bool:
        actual = get(event)
        return actual.__class__ in _NUMBER_TYPES and actual < bound

    return lt


def _lte(get: Getter, value: Any, at: NodePath) -> Predicate:
    bound = _number_value("lte", value, at)

    def lte(event: Event) -> bool:
        actual = get(event)
        return actual.__class__ in _NUMBER_TYPES and actual <= bound

    return lte


def _exists(get: Getter) -> Predicate:
    def exists(event: Event) -> bool:
        actual = get(event)
        return actual is not ABSENT and actual is not None

    return exists


def _not_exists(get: Getter) -> Predicate:
    return _negate(_exists(get))


def _is_true(get: Getter) -> Predicate:
    return lambda event: get(event) is True


def _is_false(get: Getter) -> Predicate:
    return lambda event: get(event) is False


def _check_json(value: Any, at: NodePath) -> None:
    """Refuse values YAML can produce but events never hold (dates, sets), which would never match."""
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, (*at, i))
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, (*at, str(key)))
        return
    msg = f"filter value {value!r} is a {type(value).__name__}, not a JSON value; quote it to compare as a string"
    raise SpecError(msg, at)


_UNARY: dict[str, Callable[[Getter], Predicate]] = {
    "exists": _exists,
    "not_exists": _not_exists,
    "is_true": _is_true,
    "is_false": _is_false,
}
_BINARY: dict[str, Callable[[Getter, Any, NodePath], Predicate]] = {
    "eq": _eq,
    "neq": _neq,
    "in": _in,
    "not_in": _not_in,
    "contains": _contains,
    "not_contains": _not_contains,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "matches": _matches,
    "gt": _gt,
    "gte": _gte,
    "lt": _lt,
    "lte": _lte,
}
