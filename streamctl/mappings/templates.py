"""Liquid templates of field mappings (SPEC §2 "Templates"), compiled once per sync load.

    template = compile_template("{{ row.properties.total | cast: 'number' }}",
                                field="price", sync={"name": "s", "source": "web", "destination": "b"})
    template.render(event)  # -> 12.5 (typed: `cast` ends the only output), or a str

Variables: `row` and `event` (both the whole event) and `sync` (`name`, `source`,
`destination`). Extra filters: `cast`, `json`, `sha256`.

Two renderers produce the same result:

- the Liquid renderer (python-liquid), used for every template;
- a fast path for templates made only of text and `{{ path | filter: literal ... }}`
  outputs (read from Liquid's syntax tree by `streamctl.mappings.liquid_ast`, the one
  module that touches python-liquid's internals), which resolves the path with plain indexing and calls the very same filter
  functions. It falls back to the Liquid renderer on any exception (a missing key, a
  filter error), so every edge case (undefined values, `size`/`first`/`last`, error
  messages) is Liquid's own. tests/test_templates.py renders a corpus both ways.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from liquid import BoundTemplate, Environment, Undefined, is_undefined
from liquid.exceptions import FilterArgumentError, LiquidError

from streamctl.core.errors import MappingError, SpecError, suggest
from streamctl.core.events import Event
from streamctl.mappings.liquid_ast import (
    NOT_LITERAL,
    FilterCall,
    PathOutput,
    SoleOutput,
    filter_calls,
    path_outputs,
    sole_output,
    to_liquid_string,
)
from streamctl.mappings.paths import ABSENT

VARIABLES: Final = ("row", "event", "sync")
CAST_TYPES: Final = ("number", "integer", "string", "boolean", "object", "array")
VALUE_EXCERPT: Final = 120

Renderer = Callable[[Event], Any]


def excerpt(value: Any, limit: int = VALUE_EXCERPT) -> str:
    """`repr`-like text of a value for error messages, cut to `limit` characters."""
    if is_undefined(value) or value is ABSENT:
        return "(missing)"
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the extra filters -------------------------------------------------------------------


class CastError(FilterArgumentError):
    """`cast` could not convert a value; carries the value for the mapping error."""

    def __init__(self, value: Any, target: str, reason: str = "") -> None:
        self.value = value
        self.target = target
        self.reason = reason
        super().__init__(self.describe(), token=None)

    def describe(self) -> str:
        because = f" ({self.reason})" if self.reason else ""
        return f"cannot cast {excerpt(self.value)} to {self.target}{because}"


def cast_filter(value: Any, target: Any) -> Any:
    """`{{ x | cast: 'number' }}`: convert to a JSON type; missing and null pass through."""
    if is_undefined(value) or value is None:
        return value
    caster = _CASTS.get(target)
    if caster is None:
        raise FilterArgumentError(
            f"cast: unknown type {target!r}; expected one of {', '.join(CAST_TYPES)}", token=None
        )
    return caster(value)


def _cast_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise CastError(value, "number", "booleans are not numbers")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return _parse_number(value, "number")
    raise CastError(value, "number")


def _parse_number(text: str, target: str) -> int | float:
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        number = float(stripped)
    except ValueError:
        raise CastError(text, target) from None
    if not math.isfinite(number):
        raise CastError(text, target, "not a finite number")
    return number


def _cast_integer(value: Any) -> int:
    number = _cast_number(value) if not isinstance(value, bool) else None
    if number is None:
        raise CastError(value, "integer", "booleans are not numbers")
    if isinstance(number, float):
        if not number.is_integer():
            raise CastError(value, "integer", "it has a fractional part; round it first")
        return int(number)
    return number


def _cast_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return to_liquid_string(value, autoescape=False)
    return _json_text(value)


_BOOLEAN_WORDS: Final = {"true": True, "false": False, "1": True, "0": False}


def _cast_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS:
        return _BOOLEAN_WORDS[value.strip().lower()]
    raise CastError(value, "boolean", "expected true, false, 1 or 0")


def _cast_container(kind: type, target: str) -> Callable[[Any], Any]:
    def cast(value: Any) -> Any:
        if isinstance(value, kind):
            return value
        if kind is list and isinstance(value, tuple):
            return list(value)
        if isinstance(value, str):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise CastError(value, target, "not JSON") from None
            if isinstance(parsed, kind):
                return parsed
        raise CastError(value, target)

    return cast


_CASTS: Final[dict[str, Callable[[Any], Any]]] = {
    "number": _cast_number,
    "integer": _cast_integer,
    "string": _cast_string,
    "boolean": _cast_boolean,
    "object": _cast_container(dict, "object"),
    "array": _cast_container(list, "array"),
}


def _json_text(value: Any) -> str:
    if is_undefined(value):
        value = None
    try:
        return orjson.dumps(value, default=_json_default).decode()
    except TypeError as exc:
        raise FilterArgumentError(f"json: {exc}", token=None) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | range):
        return list(value)
    if is_undefined(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_filter(value: Any) -> str:
    """`{{ row.properties | json }}`: the value as compact JSON (missing becomes null)."""
    return _json_text(value)


def sha256_filter(value: Any) -> Any:
    """`{{ email | downcase | sha256 }}`: hex SHA-256 of the UTF-8 text. Missing, null and
    empty inputs pass through unchanged (`downcase` turns a missing value into ""), so a
    missing identifier never becomes the hash of an empty string, shared by every user."""
    if is_undefined(value) or value is None or value == "":
        return value
    text = value if isinstance(value, str) else to_liquid_string(value, autoescape=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class MappingEnvironment(Environment):
    """Liquid for mappings: the standard tags and filters, with limits so that one
    template cannot stall the pipeline (a runaway loop or a huge output is a mapping error)."""

    loop_iteration_limit = 10_000
    output_stream_limit = 1_000_000  # characters; events themselves are capped at 32 KB
    context_depth_limit = 30


def make_environment() -> Environment:
    """The Liquid environment of mappings: standard filters plus cast, json and sha256."""
    env = MappingEnvironment()
    env.add_filter("cast", cast_filter)
    env.add_filter("json", json_filter)
    env.add_filter("sha256", sha256_filter)
    return env


ENVIRONMENT: Final = make_environment()


# -- compiling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledTemplate:
    """A template ready to render per event.

    `typed` is true when `cast` is the last filter of the template's only output: then
    `render` returns that JSON value (ABSENT when the input was missing) instead of text.
    `fast` tells whether the plain-Python renderer is used (for tests and benchmarks).
    """

    source: str
    field: str
    typed: bool
    fast: bool
    render: Renderer


def compile_template(
    source: str, *, field: str, sync: Mapping[str, str], fast_path: bool = True
) -> CompiledTemplate:
    """Parse and check a template once; raises SpecError for syntax errors, unknown
    filters, unknown variables and unknown cast types. `fast_path=False` forces the
    Liquid renderer (the reference the fast path is tested against)."""
    if not isinstance(source, str):
        msg = f"a template must be a string, got {type(source).__name__} {source!r}"
        raise SpecError(msg)
    try:
        template = ENVIRONMENT.from_string(source)
    except LiquidError as exc:
        msg = f"invalid Liquid template {source!r}: {exc.message}"
        if re.search(r"\.\d", source):
            msg += "; in templates, index arrays with brackets: products[0].price"
        raise SpecError(msg) from None
    _check_template(template, source)
    globals_ = {"sync": dict(sync)}
    output = sole_output(template)
    typed = output is not None and bool(output.filters) and output.filters[-1].name == "cast"
    slow = (
        _typed_renderer(template, output, source, field, globals_)
        if typed and output
        else _text_renderer(template, source, field, globals_)
    )
    fast = _fast_renderer(template, typed, slow, globals_) if fast_path else None
    return CompiledTemplate(source, field, typed, fast is not None, fast or slow)


def _check_template(template: BoundTemplate, source: str) -> None:
    analysis = template.analyze(include_partials=False)
    for name in analysis.filters:
        if name not in ENVIRONMENT.filters:
            msg = (
                f"unknown Liquid filter {name!r}{suggest(name, ENVIRONMENT.filters)} in {source!r}"
            )
            raise SpecError(msg)
    for name in analysis.globals:
        if name not in VARIABLES:
            msg = (
                f"unknown template variable {name!r}{suggest(name, VARIABLES)} in {source!r}; "
                "templates see row, event (both the whole event) and sync"
            )
            raise SpecError(msg)
    for call in filter_calls(template):
        if call.name == "cast":
            _check_cast_arguments(call, source)


def _check_cast_arguments(call: FilterCall, source: str) -> None:
    if len(call.arguments) != 1 or not call.positional_only:
        msg = f"cast takes one type, e.g. cast: 'number', in {source!r}"
        raise SpecError(msg)
    (value,) = call.arguments
    if value is not NOT_LITERAL and value not in CAST_TYPES:
        target = str(value)
        msg = (
            f"unknown cast type {value!r}{suggest(target, CAST_TYPES)} in {source!r}; "
            f"expected one of {', '.join(CAST_TYPES)}"
        )
        raise SpecError(msg)


# -- the Liquid renderers ----------------------------------------------------------------


def _text_renderer(
    template: BoundTemplate, source: str, field: str, globals_: dict[str, Any]
) -> Renderer:
    sync = globals_["sync"]

    def render(event: Event) -> str:
        try:
            return template.render(row=event, event=event, sync=sync)
        except Exception as exc:  # a filter's own exception types vary; all are mapping errors
            raise _render_error(exc, field, source) from None

    return render


def _typed_renderer(
    template: BoundTemplate,
    output: SoleOutput,
    source: str,
    field: str,
    globals_: dict[str, Any],
) -> Renderer:
    evaluate = output.evaluate
    context_class = template.context_class
    make_globals = template.make_globals
    sync = globals_["sync"]

    def render(event: Event) -> Any:
        context = context_class(
            template, globals=make_globals({"row": event, "event": event, "sync": sync})
        )
        try:
            value = evaluate(context)
        except Exception as exc:
            raise _render_error(exc, field, source) from None
        return ABSENT if is_undefined(value) else value

    return render


def _render_error(exc: Exception, field: str, source: str) -> MappingError:
    if isinstance(exc, CastError):
        msg = f"field {field!r}: {exc.describe()}"
        return MappingError(msg, field=field)
    reason = exc.message if isinstance(exc, LiquidError) else f"{type(exc).__name__}: {exc}"
    msg = f"field {field!r}: template {source!r} failed: {reason}"
    return MappingError(msg, field=field)


# -- the fast path -----------------------------------------------------------------------

_SPECIAL_KEYS: Final = frozenset({"size", "first", "last"})  # Liquid resolves these itself
_LOOKUP_ERRORS: Final = (KeyError, TypeError, IndexError)  # what Liquid turns into undefined


def _fast_renderer(
    template: BoundTemplate, typed: bool, slow: Renderer, globals_: dict[str, Any]
) -> Renderer | None:
    """A plain-Python renderer for text + `{{ path | filter: literal }}` templates, or None.

    Each output becomes a function that walks its path with `obj[key]` (what Liquid's
    `RenderContext.get_item` does for keys other than size/first/last), yields Liquid's
    `Undefined` where Liquid would (a KeyError, TypeError or IndexError on the way), and
    applies the very same filter callables. If a filter raises, the event goes to the
    Liquid renderer, which produces Liquid's exact error.
    """
    pieces = path_outputs(template)
    if pieces is None:
        return None
    parts: list[str | Renderer] = []
    for piece in pieces:
        if isinstance(piece, str):
            parts.append(piece)
            continue
        evaluate = _fast_expression(piece, globals_)
        if evaluate is None:
            return None
        parts.append(evaluate)
    outputs = [p for p in parts if not isinstance(p, str)]
    if typed:
        return _fast_typed(outputs[0], slow)
    return _fast_text(parts, slow)


def _fast_typed(evaluate: Renderer, slow: Renderer) -> Renderer:
    def render(event: Event) -> Any:
        try:
            value = evaluate(event)
        except Exception:
            return slow(event)
        return ABSENT if isinstance(value, Undefined) else value

    return render


def _fast_text(parts: list[str | Renderer], slow: Renderer) -> Renderer:
    if len(parts) == 1 and not isinstance(parts[0], str):
        evaluate = parts[0]

        def render_one(event: Event) -> Any:
            try:
                value = evaluate(event)
            except Exception:
                return slow(event)
            return value if value.__class__ is str else to_liquid_string(value, False)

        return render_one

    fixed = tuple(parts)

    def render(event: Event) -> Any:
        try:
            return "".join(
                [p if p.__class__ is str else to_liquid_string(p(event), False) for p in fixed]  # type: ignore[operator]
            )
        except Exception:
            return slow(event)

    return render


def _fast_expression(output: PathOutput, globals_: dict[str, Any]) -> Renderer | None:
    root, keys = output.root, output.keys
    if root not in VARIABLES or any(key in _SPECIAL_KEYS for key in keys):
        return None
    filters: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    for call in output.filters:
        compiled = _fast_filter(call)
        if compiled is None:
            return None
        filters.append(compiled)
    undefined = ENVIRONMENT.undefined(root, hint=f"{output.text} is undefined", token=output.token)
    resolve = _fast_resolver(root, keys, globals_["sync"], undefined)
    if not filters:
        return resolve
    if len(filters) == 1:
        ((func, args),) = filters
        return lambda event: func(resolve(event), *args)
    chain = tuple(filters)

    def evaluate(event: Event) -> Any:
        value = resolve(event)
        for func, args in chain:
            value = func(value, *args)
        return value

    return evaluate


def _fast_resolver(
    root: str, keys: tuple[str | int, ...], sync: dict[str, str], undefined: Undefined
) -> Renderer:
    """`event -> value` for a path of plain keys; `undefined` where Liquid finds nothing.

    The default Undefined renders and filters the same whatever its name and hint, so
    one instance per path serves every event.
    """
    if root == "sync":
        value = _walk(sync, keys, undefined)  # the same for every event
        return lambda event: value
    if len(keys) == 0:
        return lambda event: event
    if all(isinstance(k, str) for k in keys) and len(keys) <= 3:
        return _fast_keys(keys, undefined)  # type: ignore[arg-type]

    return lambda event: _walk(event, keys, undefined)


def _walk(value: Any, keys: tuple[str | int, ...], undefined: Undefined) -> Any:
    try:
        for key in keys:
            # Liquid refuses integer indexes into strings (string_sequences is off).
            if key.__class__ is int and isinstance(value, str):
                return undefined
            value = value[key]
    except _LOOKUP_ERRORS:
        return undefined
    return value


def _fast_keys(keys: tuple[str, ...], undefined: Undefined) -> Renderer:
    if len(keys) == 1:
        (k1,) = keys

        def resolve1(event: Event) -> Any:
            try:
                return event[k1]
            except _LOOKUP_ERRORS:
                return undefined

        return resolve1
    if len(keys) == 2:
        k1, k2 = keys

        def resolve2(event: Event) -> Any:
            try:
                return event[k1][k2]
            except _LOOKUP_ERRORS:
                return undefined

        return resolve2
    k1, k2, k3 = keys

    def resolve3(event: Event) -> Any:
        try:
            return event[k1][k2][k3]
        except _LOOKUP_ERRORS:
            return undefined

    return resolve3


def _fast_filter(call: FilterCall) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
    func = ENVIRONMENT.filters.get(call.name)
    if func is None or getattr(func, "with_context", False):
        return None
    if getattr(func, "with_environment", False):
        func = functools.partial(func, environment=ENVIRONMENT)
    if not call.positional_only or any(arg is NOT_LITERAL for arg in call.arguments):
        return None
    return func, call.arguments
