"""Liquid templates of mappings: variables, bracket access, cast/json/sha256, typed
results, errors, and the fast path rendering exactly like python-liquid."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from streamctl.core.errors import MappingError, SpecError
from streamctl.mappings.paths import ABSENT
from streamctl.mappings.templates import CAST_TYPES, cast_filter, compile_template

SYNC = {"name": "orders-to-braze", "source": "web", "destination": "braze-prod"}

EVENT = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user_42",
    "context": {"traits": {"email": "Ada@Example.com", "plan": "pro"}},
    "properties": {
        "total": "12.50",
        "amount": 12.5,
        "whole": 12.0,
        "count": 3,
        "flag": True,
        "coupon": None,
        "name": "Zoë's café",
        "raw_json": '{"a": [1, 2]}',
        "raw_list": "[1, 2]",
        "page.url": "https://example.com/p",
        "tags": ["a", "b"],
        "products": [{"sku": "p1", "price": 10}, {"sku": "p2", "price": 2.5}],
        "bad_number": "12 apples",
    },
}


def render(source, event=EVENT, **kwargs):
    return compile_template(source, field="f", sync=SYNC, **kwargs).render(event)


# -- variables and access -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ row.userId }}", "user_42"),
        ("{{ event.userId }}", "user_42"),  # row and event are both the whole event
        (
            "{{ sync.name }}/{{ sync.source }}/{{ sync.destination }}",
            "orders-to-braze/web/braze-prod",
        ),
        ("{{ row['properties'].count }}", "3"),
        ('{{ row["context"]["traits"]["email"] }}', "Ada@Example.com"),
        ("{{ row.properties['page.url'] }}", "https://example.com/p"),
        ("{{ row.properties.products[1].sku }}", "p2"),
        ("{{ row.properties.products[-1].price }}", "2.5"),
        ("{{ row.properties.products.first.sku }}", "p1"),
        ("{{ row.properties.products.size }}", "2"),
        ("{{ row.properties.tags }}", "ab"),  # Liquid joins arrays
        ("{{ row.properties.flag }}", "true"),
        ("{{ row.properties.coupon }}", ""),
        ("{{ row.properties.missing }}", ""),
        ("{{ row.event }} by {{ row.userId }}", "Order Completed by user_42"),
        ("{% if row.properties.flag %}yes{% else %}no{% endif %}", "yes"),
        (
            "{% for p in row.properties.products %}{{ p.sku }}{% unless forloop.last %},{% endunless %}{% endfor %}",
            "p1,p2",
        ),
        ("{% assign n = row.properties.count | plus: 1 %}{{ n }}", "4"),
        ("plain text", "plain text"),
    ],
)
def test_text_templates(source, expected):
    assert render(source) == expected


# -- the extra filters ---------------------------------------------------------------------


def test_json_filter():
    assert (
        render("{{ row.properties.products | json }}")
        == '[{"sku":"p1","price":10},{"sku":"p2","price":2.5}]'
    )
    assert render("{{ row.properties.name | json }}") == '"Zoë\'s café"'
    assert render("{{ row.properties.missing | json }}") == "null"
    assert render("{{ row.properties.coupon | json }}") == "null"


def test_sha256_filter_hashes_the_utf8_text():
    expected = hashlib.sha256(b"ada@example.com").hexdigest()
    assert render("{{ row.context.traits.email | downcase | sha256 }}") == expected
    assert (
        render("{{ row.properties.name | sha256 }}")
        == hashlib.sha256("Zoë's café".encode()).hexdigest()
    )
    assert render("{{ row.properties.count | sha256 }}") == hashlib.sha256(b"3").hexdigest()


def test_sha256_of_a_missing_value_is_not_the_hash_of_nothing():
    assert render("{{ row.context.traits.phone | sha256 }}") == ""
    assert render("{{ row.context.traits.phone | sha256 | cast: 'string' }}") is ABSENT


# -- cast and typed results ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "target", "expected"),
    [
        ("12", "number", 12),
        ("12.50", "number", 12.5),
        (" 7 ", "number", 7),
        ("1e3", "number", 1000.0),
        (4, "number", 4),
        (2.5, "number", 2.5),
        ("3", "integer", 3),
        (12.0, "integer", 12),
        ("12.0", "integer", 12),
        (7, "integer", 7),
        ("x", "string", "x"),
        (12, "string", "12"),
        (1.5, "string", "1.5"),
        (True, "string", "true"),
        ({"a": [1]}, "string", '{"a":[1]}'),
        ([1, "b"], "string", '[1,"b"]'),
        (True, "boolean", True),
        ("true", "boolean", True),
        (" FALSE ", "boolean", False),
        ("1", "boolean", True),
        (0, "boolean", False),
        ({"a": 1}, "object", {"a": 1}),
        ('{"a": 1}', "object", {"a": 1}),
        ([1], "array", [1]),
        ("[1, 2]", "array", [1, 2]),
        (None, "number", None),  # null stays null
        (None, "string", None),
    ],
)
def test_casts(value, target, expected):
    result = cast_filter(value, target)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("abc", "number"),
        ("", "number"),
        ("nan", "number"),
        ("inf", "number"),
        (True, "number"),  # booleans are not numbers
        ([1], "number"),
        (12.5, "integer"),
        ("12.5", "integer"),
        (False, "integer"),
        ("yes", "boolean"),
        (2, "boolean"),
        ("[1]", "object"),
        ("not json", "object"),
        ('{"a": 1}', "array"),
        (5, "array"),
    ],
)
def test_impossible_casts_fail(value, target):
    template = compile_template("{{ row.v | cast: '" + target + "' }}", field="price", sync=SYNC)
    with pytest.raises(MappingError) as exc:
        template.render({"v": value})
    assert exc.value.field == "price"
    assert "field 'price'" in str(exc.value)
    assert f"to {target}" in str(exc.value)


def test_cast_error_names_the_value():
    with pytest.raises(MappingError, match=r"""field 'f': cannot cast "12 apples" to number"""):
        render("{{ row.properties.bad_number | cast: 'number' }}")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ row.properties.total | cast: 'number' }}", 12.5),
        ("{{ row.properties.count | cast: 'string' }}", "3"),
        ("{{ row.properties.whole | cast: 'integer' }}", 12),
        ("{{ row.properties.flag | cast: 'boolean' }}", True),
        ("{{ row.properties.raw_json | cast: 'object' }}", {"a": [1, 2]}),
        ("{{ row.properties.raw_list | cast: 'array' }}", [1, 2]),
        ("{{ row.properties.products | cast: 'array' }}", EVENT["properties"]["products"]),
        ("  {{ row.properties.count | cast: 'number' }}\n", 3),  # surrounding whitespace is ignored
        ("{{- row.properties.count | times: 2 | cast: 'number' -}}", 6),
        ("{{ row.properties.coupon | cast: 'number' }}", None),
        ("{{ row.properties.missing | cast: 'number' }}", ABSENT),
        ("{{ row.properties.products[5].price | cast: 'number' }}", ABSENT),
    ],
)
def test_cast_as_last_filter_of_the_only_output_types_the_value(source, expected):
    template = compile_template(source, field="f", sync=SYNC)
    assert template.typed
    result = template.render(EVENT)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ row.properties.total | cast: 'number' | plus: 1 }}", "13.5"),  # cast not last
        (
            "total: {{ row.properties.total | cast: 'number' }}",
            "total: 12.5",
        ),  # not the only content
        (
            "{{ row.properties.count | cast: 'number' }}{{ row.properties.count | cast: 'number' }}",
            "33",
        ),
        ("{% if true %}{{ row.properties.count | cast: 'number' }}{% endif %}", "3"),
        ("{{ row.properties.missing | cast: 'number' | default: 0 }}", "0"),
    ],
)
def test_cast_elsewhere_still_renders_text(source, expected):
    template = compile_template(source, field="f", sync=SYNC)
    assert not template.typed
    assert template.render(EVENT) == expected


# -- errors --------------------------------------------------------------------------------


def test_a_failing_filter_is_a_mapping_error_naming_the_field_and_template():
    template = compile_template(
        "{{ row.properties.count | divided_by: 0 }}", field="properties.ratio", sync=SYNC
    )
    with pytest.raises(MappingError) as exc:
        template.render(EVENT)
    assert exc.value.field == "properties.ratio"
    assert "field 'properties.ratio'" in str(exc.value)
    assert "divided_by" in str(exc.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ row.userId ", "invalid Liquid template"),
        ("{% if row.userId %}x", "invalid Liquid template"),
        ("{{ row.userId | upcas }}", "unknown Liquid filter 'upcas' (did you mean 'upcase'?)"),
        ("{{ rows.userId }}", "unknown template variable 'rows' (did you mean 'row'?)"),
        ("{{ properties.total }}", "unknown template variable 'properties'"),
        ("{{ row.total | cast: 'float' }}", "unknown cast type 'float'"),
        ("{{ row.total | cast }}", "cast takes one type"),
        ("{{ row.total | cast: 'number', 'string' }}", "cast takes one type"),
    ],
)
def test_compile_errors(source, message):
    with pytest.raises(SpecError) as exc:
        compile_template(source, field="f", sync=SYNC)
    assert message in str(exc.value)


def test_a_template_must_be_a_string():
    with pytest.raises(SpecError, match="must be a string"):
        compile_template(12, field="f", sync=SYNC)


def test_a_cast_type_from_a_variable_is_checked_when_rendering():
    template = compile_template("{{ row.properties.count | cast: row.type }}", field="f", sync=SYNC)
    with pytest.raises(MappingError, match="unknown type 'track'"):
        template.render(EVENT)


# -- the fast path renders exactly like Liquid ------------------------------------------------

CORPUS_TEMPLATES = [
    "{{ row.userId }}",
    "{{ event.userId }}",
    "{{ row.properties.total }}",
    "{{ row.properties.amount }}",
    "{{ row.properties.whole }}",
    "{{ row.properties.flag }}",
    "{{ row.properties.coupon }}",
    "{{ row.properties.tags }}",
    "{{ row.properties.products }}",
    "{{ row.properties }}",
    "{{ row.properties.missing }}",
    "{{ row.missing.deeper.still }}",
    "{{ row.properties.products[0].price }}",
    "{{ row.properties.products[1].sku | upcase }}",
    "{{ row.properties.products[9].sku | upcase }}",
    "{{ row.properties.products[-1].price | times: 2 }}",
    "{{ row['properties']['count'] | plus: 1 }}",
    "{{ row.properties['page.url'] | split: '/' | last }}",
    "{{ row.event[0] }}",
    "{{ row.userId.name }}",
    "{{ row.properties.tags.x }}",
    "{{ row.event }} by {{ row.userId }}",
    "[{{ row.properties.coupon | default: 'none' }}]",
    "{{ row.properties.missing | default: 'n/a' | upcase }}",
    "{{ row.context.traits.email | downcase | sha256 }}",
    "{{ row.context.traits.phone | sha256 }}",
    "{{ row.properties | json }}",
    "{{ row.properties.missing | json }}",
    "{{ row.properties.name | truncate: 6 }}",
    "{{ row.properties.name | size }}",
    "{{ row.properties.products | map: 'price' | join: '+' }}",
    "{{ row.properties.count | divided_by: 0 }}",
    "{{ row.properties.count | divided_by: 2.0 | round: 1 }}",
    "{{ row.properties.total | cast: 'number' }}",
    "{{ row.properties.total | cast: 'integer' }}",
    "{{ row.properties.bad_number | cast: 'number' }}",
    "{{ row.properties.missing | cast: 'number' }}",
    "{{ row.properties.coupon | cast: 'string' }}",
    "{{ row.properties.count | cast: 'string' | append: '!' }}",
    "{{ row.properties.raw_json | cast: 'object' }}",
    "{{ row.properties.tags | cast: 'array' }}",
    "{{ row.properties.tags | cast: 'string' }}",
    "{{ sync.name | upcase }}",
    "{{ sync.name[0] }}",
    "{{ sync.nothing }}",
    "{{ row.userId | append: '-' | append: row.event }}",
    "{{ row.properties.amount | at_least: 20 }}",
    "{{ row.properties.amount | minus: 'x' }}",
]

CORPUS_EVENTS = [
    EVENT,
    {"type": "identify", "userId": None, "traits": {"email": "x@y.z"}},
    {"type": "track", "event": "", "properties": {"total": None, "tags": [], "products": []}},
    {
        "type": "track",
        "event": "E",
        "properties": {"total": "abc", "tags": "not a list", "products": "nope", "count": "7"},
    },
    {"properties": {"products": [None, {"price": "5"}]}, "context": {"traits": None}},
    {},
]


def outcome(template, event):
    try:
        value = template.render(event)
    except MappingError as exc:
        return ("error", str(exc), exc.field)
    return ("value", type(value).__name__, value)


@pytest.mark.parametrize("source", CORPUS_TEMPLATES)
def test_fast_path_renders_like_liquid(source):
    fast = compile_template(source, field="f", sync=SYNC)
    liquid = compile_template(source, field="f", sync=SYNC, fast_path=False)
    assert not liquid.fast
    for event in CORPUS_EVENTS:
        assert outcome(fast, event) == outcome(liquid, event), (source, event)


def test_most_of_the_corpus_takes_the_fast_path():
    fast = [s for s in CORPUS_TEMPLATES if compile_template(s, field="f", sync=SYNC).fast]
    # Only a filter argument that is itself a variable keeps a template off the fast path.
    assert set(CORPUS_TEMPLATES) - set(fast) == {
        "{{ row.userId | append: '-' | append: row.event }}"
    }


def test_tags_and_special_keys_use_liquid():
    for source in (
        "{% if row.userId %}{{ row.userId }}{% endif %}",
        "{{ row.properties.products.size }}",
    ):
        assert not compile_template(source, field="f", sync=SYNC).fast


def test_every_cast_type_agrees_on_every_value():
    values = [
        None,
        True,
        False,
        0,
        1,
        2.5,
        3.0,
        "",
        "1",
        "2.5",
        "true",
        "[1]",
        '{"a":1}',
        [1],
        {"a": 1},
    ]
    for target, value in itertools.product(CAST_TYPES, values):
        source = "{{ row.v | cast: '" + target + "' }}"
        fast = compile_template(source, field="f", sync=SYNC)
        liquid = compile_template(source, field="f", sync=SYNC, fast_path=False)
        assert outcome(fast, {"v": value}) == outcome(liquid, {"v": value}), (target, value)


def test_dotted_array_indexes_get_a_hint():
    with pytest.raises(SpecError, match=r"index arrays with brackets: products\[0\]\.price"):
        compile_template("{{ row.properties.products.0.price }}", field="f", sync=SYNC)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% for i in (1..1000000) %}x{% endfor %}", "loop iteration limit"),
        ("{% for i in (1..100) %}{{ row.big }}{% endfor %}", "output stream limit"),
    ],
)
def test_a_runaway_template_is_stopped_as_a_mapping_error(source, message):
    template = compile_template(source, field="f", sync=SYNC)
    with pytest.raises(MappingError, match=message):
        template.render({"big": "x" * 20_000})


def test_sha256_after_string_filters_does_not_hash_a_missing_value():
    # downcase turns a missing value into "", which must not become sha256("")
    assert render("{{ row.context.traits.phone | strip | downcase | sha256 }}") == ""
    assert render("{{ row.context.traits.phone | strip | sha256 | cast: 'string' }}") == ""


def test_liquid_ast_reads_the_shapes_the_fast_path_and_checks_need() -> None:
    # streamctl.mappings.liquid_ast reads python-liquid's internal syntax tree: this fails
    # when an upgrade changes it (the fast path would otherwise switch itself off).
    from streamctl.mappings.liquid_ast import (
        NOT_LITERAL,
        FilterCall,
        PathOutput,
        filter_calls,
        path_outputs,
        sole_output,
    )
    from streamctl.mappings.templates import ENVIRONMENT

    template = ENVIRONMENT.from_string("Hi {{ row.properties.items[0] | default: 'x' | upcase }}!")
    parts = path_outputs(template)
    assert parts is not None and parts[0] == "Hi " and parts[2] == "!"
    output = parts[1]
    assert isinstance(output, PathOutput)
    assert (output.root, output.keys) == ("row", ("properties", "items", 0))
    assert output.filters == (FilterCall("default", True, ("x",)), FilterCall("upcase", True, ()))

    typed = ENVIRONMENT.from_string(" {{ event.total | cast: kind }} ")
    only = sole_output(typed)
    assert only is not None and only.filters == (FilterCall("cast", True, (NOT_LITERAL,)),)
    assert path_outputs(ENVIRONMENT.from_string("{% if row %}x{% endif %}")) is None

    nested = ENVIRONMENT.from_string("{% for x in row.a %}{{ x | cast: 'nmber' }}{% endfor %}")
    assert [c.arguments for c in filter_calls(nested)] == [("nmber",)]
    assert compile_template("{{ row.a | upcase }}", field="f", sync={}).fast
