"""Field mappings: the three sections, the five value forms, absent vs null, and the
per-event checks of required fields against the destination's event type."""

from __future__ import annotations

import copy

import pytest

from streamctl.core.errors import MappingError, SpecError
from streamctl.destinations.base import EventTypeSpec, FieldSpec, MappedEvent
from streamctl.mappings import SyncVars, compile_mapping, is_json_type, json_type_of

SYNC = SyncVars("purchases-to-braze", "web", "braze-prod")

PURCHASE = EventTypeSpec(
    "purchase",
    required=(
        FieldSpec("external_id", "string"),
        FieldSpec("product_id", "string"),
        FieldSpec("price", "number"),
        FieldSpec("quantity", "integer"),
        FieldSpec("currency", "string"),
        FieldSpec("time", "any"),
    ),
    optional=(FieldSpec("properties", "object"),),
)

ORDER = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user_42",
    "timestamp": "2026-11-26T09:00:00Z",
    "context": {"traits": {"email": "ada@example.com", "plan": None}},
    "properties": {
        "total": "30.50",
        "coupon": None,
        "products": [{"product_id": "p1", "price": 10, "quantity": 2}],
        "page.url": "https://example.com/checkout",
    },
}

PURCHASE_SPEC = {
    "required": {
        "external_id": {"field": "userId"},
        "product_id": {"field": "properties.products.0.product_id"},
        "price": {"template": "{{ row.properties.total | cast: 'number' }}"},
        "quantity": {"field": "properties.products.0.quantity"},
        "currency": {"static": "USD"},
        "time": {"field": "timestamp"},
    },
    "user": {
        "email": {"field": "context.traits.email"},
        "plan": {"field": "context.traits.plan"},
        "phone": {"field": "context.traits.phone"},
    },
    "properties": {
        "coupon": {"field": "properties.coupon"},
        "url": {"field": r"properties.page\.url"},
        "source": {"template": "{{ sync.source }}"},
    },
}


def purchase(spec=PURCHASE_SPEC):
    return compile_mapping(spec, sync=SYNC, event_type=PURCHASE)


def test_a_full_mapping():
    mapped = purchase().apply(ORDER)
    assert mapped == MappedEvent(
        required={
            "external_id": "user_42",
            "product_id": "p1",
            "price": 30.5,
            "quantity": 2,
            "currency": "USD",
            "time": "2026-11-26T09:00:00Z",
        },
        user={"email": "ada@example.com", "plan": None},  # null kept, missing phone omitted
        properties={"coupon": None, "url": "https://example.com/checkout", "source": "web"},
    )


def test_sections_are_optional_and_empty_sections_map_to_empty_dicts():
    mapping = compile_mapping(
        {"required": {"name": {"field": "event"}}}, sync=SYNC, event_type=None
    )
    assert mapping.apply(ORDER) == MappedEvent({"name": "Order Completed"}, {}, {})
    assert compile_mapping({}, sync=SYNC, event_type=None).apply(ORDER) == MappedEvent({}, {}, {})
    assert compile_mapping({"user": None}, sync=SYNC, event_type=None).apply(ORDER) == MappedEvent(
        {}, {}, {}
    )


def test_the_whole_properties_object():
    mapping = compile_mapping(
        {"properties": {"properties": {"field": "properties"}}}, sync=SYNC, event_type=None
    )
    assert mapping.apply(ORDER).properties == {"properties": ORDER["properties"]}


# -- array and object ------------------------------------------------------------------------


def test_nested_arrays_and_objects():
    spec = {
        "properties": {
            "ids": {"array": [{"field": "userId"}, {"field": "anonymousId"}, {"static": "fixed"}]},
            "order": {
                "object": {
                    "total": {"template": "{{ row.properties.total | cast: 'number' }}"},
                    "first": {"object": {"sku": {"field": "properties.products.0.product_id"}}},
                    "none": {"field": "properties.nothing"},
                    "null": {"field": "properties.coupon"},
                    "list": {
                        "array": [{"object": {"e": {"field": "event"}}}, {"array": [{"static": 1}]}]
                    },
                }
            },
        }
    }
    mapped = compile_mapping(spec, sync=SYNC, event_type=None).apply(ORDER)
    assert mapped.properties == {
        "ids": ["user_42", "fixed"],  # the absent anonymousId is left out
        "order": {
            "total": 30.5,
            "first": {"sku": "p1"},
            "null": None,
            "list": [{"e": "Order Completed"}, [1]],
        },
    }


def test_static_objects_are_fresh_per_event():
    mapping = compile_mapping(
        {"properties": {"meta": {"static": {"tags": ["a"]}}}}, sync=SYNC, event_type=None
    )
    first = mapping.apply(ORDER)
    first.properties["meta"]["tags"].append("mutated")
    assert mapping.apply(ORDER).properties["meta"] == {"tags": ["a"]}


@pytest.mark.parametrize("value", ["USD", 0, 2.5, False, None, [1, {"a": None}]])
def test_static_values_are_any_json(value):
    mapping = compile_mapping({"properties": {"x": {"static": value}}}, sync=SYNC, event_type=None)
    assert mapping.apply({}).properties == {"x": value}


# -- per-event checks of required fields ----------------------------------------------------


def without(event, *path):
    out = copy.deepcopy(event)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def with_value(event, value, *path):
    out = copy.deepcopy(event)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        (
            without(ORDER, "userId"),
            "external_id",
            "required field 'external_id' of event type 'purchase' is missing: userId is not in the event",
        ),
        (
            with_value(ORDER, [], "properties", "products"),
            "product_id",
            "is missing: properties.products.0.product_id is not in the event",
        ),
        (
            without(ORDER, "properties", "total"),
            "price",
            "required field 'price' of event type 'purchase' is missing: its template's value is missing",
        ),
        (
            without(ORDER, "timestamp"),
            "time",
            "required field 'time' of event type 'purchase' is missing",
        ),
    ],
)
def test_a_missing_required_field_is_a_mapping_error(event, field, message):
    with pytest.raises(MappingError) as exc:
        purchase().apply(event)
    assert exc.value.field == field
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        (with_value(ORDER, 42, "userId"), "external_id", "must be a string, got integer 42"),
        (with_value(ORDER, None, "userId"), "external_id", "must be a string, got null"),
        (
            with_value(ORDER, 2.5, "properties", "products", 0, "quantity"),
            "quantity",
            "must be an integer, got number 2.5",
        ),
        (
            with_value(ORDER, True, "properties", "products", 0, "quantity"),
            "quantity",
            "must be an integer, got boolean true",
        ),
        (
            with_value(ORDER, "2", "properties", "products", 0, "quantity"),
            "quantity",
            'must be an integer, got string "2"',
        ),
        (
            with_value(ORDER, {"id": 1}, "properties", "products", 0, "product_id"),
            "product_id",
            'must be a string, got object {"id":1}',
        ),
    ],
)
def test_a_mistyped_required_field_is_a_mapping_error(event, field, message):
    with pytest.raises(MappingError) as exc:
        purchase().apply(event)
    assert exc.value.field == field
    assert message in str(exc.value)


def test_integers_are_numbers_and_whole_floats_are_integers():
    event = with_value(ORDER, 3.0, "properties", "products", 0, "quantity")
    assert purchase().apply(event).required["quantity"] == 3.0
    spec = {**PURCHASE_SPEC, "required": {**PURCHASE_SPEC["required"], "price": {"static": 10}}}
    assert purchase(spec).apply(ORDER).required["price"] == 10


def test_a_boolean_is_not_a_number():
    spec = {**PURCHASE_SPEC, "required": {**PURCHASE_SPEC["required"], "price": {"field": "flag"}}}
    with pytest.raises(MappingError, match="must be a number, got boolean true"):
        purchase(spec).apply({**ORDER, "flag": True})


def test_long_values_are_truncated_in_messages():
    event = with_value(ORDER, ["x" * 50] * 20, "userId")
    with pytest.raises(MappingError) as exc:
        purchase().apply(event)
    assert str(exc.value).endswith("...")
    assert len(str(exc.value)) < 300


def test_a_failing_template_names_the_field_and_value():
    with pytest.raises(MappingError) as exc:
        purchase().apply(with_value(ORDER, "thirty", "properties", "total"))
    assert exc.value.field == "price"
    assert str(exc.value) == """field 'price': cannot cast "thirty" to number"""


def test_templates_in_other_sections_are_labelled_by_section():
    mapping = compile_mapping(
        {"user": {"age": {"template": "{{ row.age | cast: 'integer' }}"}}},
        sync=SYNC,
        event_type=None,
    )
    with pytest.raises(MappingError) as exc:
        mapping.apply({"age": "old"})
    assert exc.value.field == "user.age"


def test_without_an_event_type_nothing_is_required():
    mapping = compile_mapping({"required": {"id": {"field": "userId"}}}, sync=SYNC, event_type=None)
    assert mapping.apply({}).required == {}


def test_open_event_types_check_only_their_required_fields():
    custom = EventTypeSpec("custom", required=(FieldSpec("name", "string"),), open_fields=True)
    mapping = compile_mapping(
        {"required": {"name": {"field": "event"}, "anything": {"field": "nope"}}},
        sync=SYNC,
        event_type=custom,
    )
    assert mapping.apply(ORDER).required == {"name": "Order Completed"}


# -- compile-time errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message", "path"),
    [
        (
            {"requried": {}},
            "unknown mapping section 'requried' (did you mean 'required'?)",
            ("requried",),
        ),
        ({"user": ["email"]}, "section 'user' must map field names", ("user",)),
        (
            {"required": {"price": "USD"}},
            "for a constant write {static: 'USD'}",
            ("required", "price"),
        ),
        (
            {"required": {"price": {"feild": "x"}}},
            "unknown mapping value 'feild' (did you mean 'field'?)",
            ("required", "price", "feild"),
        ),
        (
            {"required": {"price": {"field": "a", "static": 1}}},
            "exactly one of",
            ("required", "price"),
        ),
        ({"required": {"price": {}}}, "found nothing", ("required", "price")),
        (
            {"required": {"price": {"field": "a..b"}}},
            "empty segment",
            ("required", "price", "field"),
        ),
        (
            {"required": {"price": {"template": "{{ row.total | cast: 'nmber' }}"}}},
            "field 'price': unknown cast type 'nmber'",
            ("required", "price", "template"),
        ),
        (
            {"required": {"price": {"template": "{{ row.total "}}},
            "invalid Liquid template",
            ("required", "price", "template"),
        ),
        (
            {"properties": {"items": {"array": {"field": "x"}}}},
            "`array` takes a list",
            ("properties", "items", "array"),
        ),
        (
            {"properties": {"items": {"array": [{"field": "x"}, {"fieldd": "y"}]}}},
            "field 'properties.items[1]'",
            ("properties", "items", "array", 1, "fieldd"),
        ),
        (
            {"properties": {"o": {"object": [1]}}},
            "`object` takes a map",
            ("properties", "o", "object"),
        ),
        (
            {"properties": {"o": {"object": {"a": {"object": {"b": {"template": "{{ nope }}"}}}}}}},
            "field 'properties.o.a.b'",
            ("properties", "o", "object", "a", "object", "b", "template"),
        ),
        ("required", "mappings must be a map", ()),
    ],
)
def test_compile_errors_name_the_node(spec, message, path):
    with pytest.raises(SpecError) as exc:
        compile_mapping(spec, sync=SYNC, event_type=None)
    assert message in str(exc.value)
    assert exc.value.path == path


# -- JSON types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "json_type", "expected"),
    [
        (1, "number", True),
        (1.5, "number", True),
        (True, "number", False),
        (1, "integer", True),
        (1.0, "integer", True),
        (1.5, "integer", False),
        (False, "integer", False),
        ("1", "string", True),
        (None, "string", False),
        (True, "boolean", True),
        (0, "boolean", False),
        ({}, "object", True),
        ([], "object", False),
        ([], "array", True),
        (None, "any", True),
    ],
)
def test_is_json_type(value, json_type, expected):
    assert is_json_type(value, json_type) is expected


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean"),
        (3, "integer"),
        (3.0, "integer"),
        (3.5, "number"),
        ("", "string"),
        ({}, "object"),
        ([], "array"),
    ],
)
def test_json_type_of(value, name):
    assert json_type_of(value) == name
