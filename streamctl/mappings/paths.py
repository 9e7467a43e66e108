"""Field references: `properties.products.0.price`, compiled once into fast getters.

SPEC §2 "Field references":

- dots separate keys; a numeric segment indexes an array (on an object it is a key);
- a backslash escapes a literal `.` or `\\` inside a key: `properties.page\\.url` reads
  the key `page.url`, `properties.a\\\\b` reads the key `a\\b`; spaces need no escaping;
- a path that does not exist resolves to `ABSENT` (the mapped field is omitted),
  while a JSON `null` stays `None`.

    get = compile_path("properties.products.0.price")
    get({"properties": {"products": [{"price": 9.5}]}})  # -> 9.5
    get({"properties": {}}) is ABSENT                    # -> True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, final

from streamctl.core.errors import SpecError


@final
class _Absent:
    """The type of `ABSENT`: a path that does not exist in the event (not JSON `null`)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()
"""What a missing path resolves to; a mapped field whose value is ABSENT is omitted."""

Getter = Callable[[Any], Any]
Segment = tuple[str, int | None]  # the key, and its array index when the key is all digits


def parse_path(path: str) -> tuple[str, ...]:
    """Split a field reference into its keys, resolving backslash escapes.

    >>> parse_path(r"properties.page\\.url")
    ('properties', 'page.url')

    Raises SpecError for an empty path, an empty segment (`a..b`), a dangling backslash
    or an escape of anything other than `.` and `\\`.
    """
    if not isinstance(path, str):
        msg = f"a field path must be a string, got {type(path).__name__} {path!r}"
        raise SpecError(msg)
    if not path:
        msg = "a field path cannot be empty"
        raise SpecError(msg)
    keys: list[str] = []
    key: list[str] = []
    chars = iter(enumerate(path))
    for i, char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                msg = (
                    f"field path {path!r} ends with a lone backslash; write \\\\ for a literal one"
                )
                raise SpecError(msg)
            if escaped[1] not in ".\\":
                msg = (
                    f"field path {path!r}: unknown escape \\{escaped[1]} at position {i + 1}; "
                    "only \\. and \\\\ are escapes"
                )
                raise SpecError(msg)
            key.append(escaped[1])
        elif char == ".":
            keys.append(_finish_key(path, key))
            key = []
        else:
            key.append(char)
    keys.append(_finish_key(path, key))
    return tuple(keys)


def _finish_key(path: str, key: list[str]) -> str:
    if not key:
        msg = f"field path {path!r} has an empty segment (two dots, or a dot at an end)"
        raise SpecError(msg)
    return "".join(key)


def format_path(keys: tuple[str, ...]) -> str:
    """The inverse of `parse_path`: keys back to a field reference with escapes."""
    return ".".join(k.replace("\\", "\\\\").replace(".", "\\.") for k in keys)


def compile_path(path: str) -> Getter:
    """Compile a field reference once into a getter `event -> value | ABSENT`.

    Paths of one to three object keys (the vast majority) get a dedicated closure with
    no loop; anything with an array index goes through the general walker.
    """
    keys = parse_path(path)
    segments: tuple[Segment, ...] = tuple(
        (key, int(key) if key.isdigit() and key.isascii() else None) for key in keys
    )
    if all(index is None for _, index in segments):
        if len(keys) == 1:
            return _getter1(keys[0])
        if len(keys) == 2:
            return _getter2(*keys)
        if len(keys) == 3:
            return _getter3(*keys)
    return _walker(segments)


def _getter1(k1: str) -> Getter:
    def get(event: Any) -> Any:
        if isinstance(event, dict):
            return event.get(k1, ABSENT)
        return ABSENT

    return get


def _getter2(k1: str, k2: str) -> Getter:
    def get(event: Any) -> Any:
        if isinstance(event, dict):
            value = event.get(k1)
            if isinstance(value, dict):
                return value.get(k2, ABSENT)
        return ABSENT

    return get


def _getter3(k1: str, k2: str, k3: str) -> Getter:
    def get(event: Any) -> Any:
        if isinstance(event, dict):
            value = event.get(k1)
            if isinstance(value, dict):
                value = value.get(k2)
                if isinstance(value, dict):
                    return value.get(k3, ABSENT)
        return ABSENT

    return get


def _walker(segments: tuple[Segment, ...]) -> Getter:
    def get(event: Any) -> Any:
        value = event
        for key, index in segments:
            if isinstance(value, dict):
                value = value.get(key, ABSENT)
                if value is ABSENT:
                    return ABSENT
            elif index is not None and isinstance(value, list) and index < len(value):
                value = value[index]
            else:
                return ABSENT
        return value

    return get
