"""The one module that reads python-liquid's syntax tree (its internal AST classes).

python-liquid's public API renders templates and lists the filters and variables they
use (`template.analyze()`); it does not say where a filter is applied or with which
arguments, nor what an output statement is made of. Mappings need both:

- `filter_calls`: every filter application and its arguments, so `cast: 'nmber'` is
  refused when the sync loads rather than on the first event;
- `sole_output`: the one output statement of a template that has nothing else, whose
  value `cast` may return typed (a number stays a number);
- `path_outputs`: a template made of text and `{{ root.key | filter: 'literal' }}`
  outputs, as plain data, for the fast path of `streamctl.mappings.templates`, which
  resolves paths by indexing and calls the same filter functions: replay of 100,000
  events spent about a third of its pipeline time in Liquid's renderer before it.

Everything here returns plain data (or None: "not of that shape, use Liquid"), so
python-liquid's internals stop at this module; tests/test_templates.py has a test
that fails when they change shape (and the fast path would silently switch off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from liquid import RenderContext
from liquid.ast import Node
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions.arguments import PositionalArgument
from liquid.builtin.expressions.filtered import (
    Filter,
    FilteredExpression,
    TernaryFilteredExpression,
)
from liquid.builtin.expressions.path import Path
from liquid.builtin.expressions.primitive import Literal
from liquid.builtin.output import OutputNode
from liquid.expression import Expression
from liquid.stringify import to_liquid_string as to_liquid_string  # Liquid's text of a value
from liquid.template import BoundTemplate

NOT_LITERAL = object()  # an argument that is a variable or an expression, not a literal


@dataclass(frozen=True)
class FilterCall:
    """One filter application: `cast: 'number'` is FilterCall("cast", True, ("number",))."""

    name: str
    positional_only: bool  # every argument is positional (no `key: value` ones)
    arguments: tuple[Any, ...]  # each literal's value, or NOT_LITERAL


@dataclass(frozen=True)
class SoleOutput:
    """A template's only output statement: its filters, and its value given a context."""

    filters: tuple[FilterCall, ...]
    evaluate: Callable[[RenderContext], Any]


@dataclass(frozen=True)
class PathOutput:
    """`{{ root.key.key | filter: 'literal' ... }}`: a path of plain keys, literal arguments."""

    root: str
    keys: tuple[str | int, ...]
    filters: tuple[FilterCall, ...]
    text: str  # the path as written, for Liquid's "... is undefined" hint
    token: Any  # where it is in the source, for Liquid's Undefined


def filter_calls(template: BoundTemplate) -> Iterator[FilterCall]:
    """Every filter application in the template, nested tags and expressions included."""
    static_context = RenderContext(template)

    def expression_filters(expression: Expression) -> Iterator[Filter]:
        if isinstance(expression, FilteredExpression | TernaryFilteredExpression):
            yield from expression.filters or ()
        if isinstance(expression, TernaryFilteredExpression):
            yield from expression.tail_filters or ()
            yield from expression_filters(expression.left)
        for child in expression.children():
            yield from expression_filters(child)

    def node_filters(node: Node) -> Iterator[Filter]:
        for expression in node.expressions():
            yield from expression_filters(expression)
        for child in node.children(static_context, include_partials=False):
            yield from node_filters(child)

    for node in template.nodes:
        for filter_ in node_filters(node):
            yield _call(filter_)


def sole_output(template: BoundTemplate) -> SoleOutput | None:
    """The template's one output statement when it has nothing else but whitespace."""
    meaningful = [n for n in template.nodes if not (isinstance(n, ContentNode) and n.blank)]
    if len(meaningful) != 1 or type(meaningful[0]) is not OutputNode:
        return None
    expression = meaningful[0].expression
    filters = expression.filters if type(expression) is FilteredExpression else None
    return SoleOutput(tuple(_call(f) for f in filters or ()), expression.evaluate)


def path_outputs(template: BoundTemplate) -> list[str | PathOutput] | None:
    """The template as text and path outputs, in order; None if it has anything else."""
    parts: list[str | PathOutput] = []
    for node in template.nodes:
        if type(node) is ContentNode:
            parts.append(node.text)
            continue
        if type(node) is not OutputNode:
            return None
        output = _path_output(node.expression)
        if output is None:
            return None
        parts.append(output)
    return parts


def _path_output(expression: Expression) -> PathOutput | None:
    if type(expression) is not FilteredExpression or type(expression.left) is not Path:
        return None
    path = expression.left
    root, *keys = path.path
    if not isinstance(root, str) or not all(isinstance(k, str | int) for k in keys):
        return None
    filters = tuple(_call(f) for f in expression.filters or ())
    return PathOutput(root, tuple(keys), filters, str(path), path.token)  # type: ignore[arg-type]


def _call(filter_: Filter) -> FilterCall:
    arguments = tuple(
        arg.value.value
        if isinstance(arg, PositionalArgument) and isinstance(arg.value, Literal)
        else NOT_LITERAL
        for arg in filter_.args
    )
    positional = all(isinstance(arg, PositionalArgument) for arg in filter_.args)
    return FilterCall(filter_.name, positional, arguments)
