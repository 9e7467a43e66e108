"""JSON equality for filters: `1 == 1.0`, but `true != 1` and `"1" != 1` (Python says otherwise)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def json_equal(left: Any, right: Any) -> bool:
    """Whether two JSON values are equal: numbers by value, booleans only to booleans,
    objects and arrays element by element under the same rules."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(json_equal(value, right[key]) for key, value in left.items())
        )
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(right, dict | list):
        return False
    return bool(left == right)


def make_membership(values: list[Any]) -> Callable[[Any], bool]:
    """A fast `x in values` under JSON equality, for the `in` and `not_in` ops.

    Scalars go into hash sets split by kind, because Python's sets would find `True`
    in `{1}` and `1` in `{True}`; objects and arrays fall back to `json_equal`.
    """
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if isinstance(v, int | float) and not isinstance(v, bool))
    booleans = tuple(v for v in values if isinstance(v, bool))
    has_null = any(v is None for v in values)
    containers = tuple(v for v in values if isinstance(v, dict | list))

    def contains(actual: Any) -> bool:
        kind = actual.__class__
        if kind is str:
            return actual in strings
        if kind is int or kind is float:
            return actual in numbers
        if kind is bool:
            return actual in booleans  # tuple membership: True in (True,) only; 1 is never here
        if actual is None:
            return has_null
        if kind is dict or kind is list:
            return any(json_equal(actual, v) for v in containers)
        return False

    return contains
