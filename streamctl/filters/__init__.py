"""Filters: the conditions that choose a destination event type (SPEC §2 "Filters").

    predicate = compile_filter({"all": [{"field": "type", "op": "eq", "value": "track"}]})
    predicate(event)  # -> bool

TODO(issue 3): implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamctl.events import Event

Predicate = Callable[[Event], bool]

OPS = (
    "eq", "neq", "in", "not_in", "contains", "not_contains", "starts_with", "ends_with",
    "matches", "gt", "gte", "lt", "lte", "exists", "not_exists", "is_true", "is_false",
)  # fmt: skip


def compile_filter(spec: Any) -> Predicate:
    """Compile a filter spec once; raises SpecError (with the node path) for unknown ops or bad regexes."""
    raise NotImplementedError
