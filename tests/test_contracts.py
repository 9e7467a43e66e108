from __future__ import annotations

import pytest
import yaml

from streamctl.contracts import compile_contract
from streamctl.core.errors import SpecError

WEB = yaml.safe_load(
    """
name: web
on_undeclared_event: block
events:
  - name: Order Completed
    on_violation: block
    on_undeclared_fields: omit
    properties:
      type: object
      required: [order_id, total]
      properties:
        order_id: { type: string }
        total: { type: number, minimum: 0 }
        coupon: { type: string }
    context:
      type: object
      properties:
        locale: { type: string }
    versions:
      v2:
        properties:
          type: object
          required: [order_id, revenue]
          properties:
            order_id: { type: string }
            revenue: { type: number }
  - name: Product Viewed
    on_undeclared_fields: block
    properties:
      type: object
      properties:
        sku: { type: string }
  - name: Signed Up
    properties:
      type: object
      properties:
        plan: { type: string, default: free }
  - type: identify
    traits:
      type: object
      properties:
        email: { type: string, format: email }
  - type: page
    name: Pricing
    properties: { type: object, properties: { path: { type: string } } }
"""
)


@pytest.fixture(scope="module")
def contract():
    return compile_contract(WEB, "web")


def order(properties, **extra):
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "properties": properties,
        **extra,
    }


def test_a_valid_event_is_allowed_unchanged(contract):
    event = order({"order_id": "o1", "total": 9.5})
    result = contract.check(event)
    assert result.outcome == "allowed"
    assert result.violations == ()
    assert result.event is event


def test_schema_violations_carry_pointers_and_block(contract):
    result = contract.check(order({"order_id": 1, "total": -3}))
    assert result.outcome == "blocked"
    assert [(v.kind, v.pointer, v.message) for v in result.violations] == [
        ("schema", "/properties/order_id", "1 is not of type 'string'"),
        ("schema", "/properties/total", "-3 is less than the minimum of 0"),
    ]
    assert {(v.contract, v.event_name, v.version) for v in result.violations} == {
        ("web", "Order Completed", None)
    }


def test_a_missing_required_property_points_at_the_key(contract):
    result = contract.check(order({"total": 1}))
    assert [(v.pointer, v.message) for v in result.violations] == [
        ("/properties/order_id", "'order_id' is a required property")
    ]


def test_missing_properties_object_is_checked_as_empty(contract):
    result = contract.check({"type": "track", "event": "Order Completed", "userId": "u1"})
    assert result.outcome == "blocked"
    assert len(result.violations) == 2


def test_omit_removes_undeclared_fields_records_them_and_leaves_the_input_alone(contract):
    event = order({"order_id": "o1", "total": 2, "debug": True, "a/b": 1})
    result = contract.check(event)
    assert result.outcome == "omitted"
    assert result.event["properties"] == {"order_id": "o1", "total": 2}
    assert event["properties"]["debug"] is True
    assert [(v.kind, v.pointer) for v in result.violations] == [
        ("undeclared_field", "/properties/debug"),
        ("undeclared_field", "/properties/a~1b"),
    ]


def test_block_on_undeclared_fields(contract):
    result = contract.check(
        {
            "type": "track",
            "event": "Product Viewed",
            "userId": "u",
            "properties": {"sku": "s", "x": 1},
        }
    )
    assert result.outcome == "blocked"
    assert [v.kind for v in result.violations] == ["undeclared_field"]


def test_allow_records_violations_but_lets_the_event_through():
    spec = {
        "events": [
            {
                "name": "E",
                "properties": {"type": "object", "properties": {"n": {"type": "integer"}}},
            }
        ]
    }
    result = compile_contract(spec, "c").check(
        {"type": "track", "event": "E", "properties": {"n": "1", "z": 0}}
    )
    assert result.outcome == "allowed"
    assert sorted(v.kind for v in result.violations) == ["schema", "undeclared_field"]


def test_event_names_match_exactly(contract):
    for name in ("order completed", "Order Completed ", "OrderCompleted"):
        result = contract.check(order({"order_id": "o", "total": 1}, event=name))
        assert result.outcome == "blocked"
        assert [(v.kind, v.pointer) for v in result.violations] == [("undeclared_event", "/event")]


def test_undeclared_events_are_allowed_by_default():
    contract = compile_contract({"events": []}, "open")
    result = contract.check({"type": "track", "event": "Anything", "userId": "u"})
    assert result.outcome == "allowed"
    assert result.violations[0].kind == "undeclared_event"


def test_versions_are_chosen_by_context_schema_version(contract):
    v2 = order({"order_id": "o1", "revenue": 3}, context={"schemaVersion": "v2"})
    assert contract.check(v2).outcome == "allowed"
    v1_shape = order({"order_id": "o1", "total": 3}, context={"schemaVersion": "v2"})
    result = contract.check(v1_shape)
    assert result.outcome == "blocked"
    assert {v.version for v in result.violations} == {"v2"}
    assert ("schema", "/properties/revenue") in [(v.kind, v.pointer) for v in result.violations]
    # The version replaces the properties schema only: the entry's context schema still applies.
    bad_context = order(
        {"order_id": "o1", "revenue": 3}, context={"schemaVersion": "v2", "locale": 5}
    )
    assert [v.pointer for v in contract.check(bad_context).violations] == ["/context/locale"]


def test_an_unknown_schema_version_is_a_schema_violation(contract):
    result = contract.check(order({"order_id": "o1", "total": 3}, context={"schemaVersion": "v9"}))
    assert result.outcome == "blocked"
    assert result.violations[0].pointer == "/context/schemaVersion"
    assert "unknown schema version 'v9' (declared: v2)" in result.violations[0].message


def test_identify_checks_traits_with_formats(contract):
    good = contract.check({"type": "identify", "userId": "u", "traits": {"email": "a@example.com"}})
    assert good.violations == ()
    bad = contract.check({"type": "identify", "userId": "u", "traits": {"email": "nope"}})
    assert [(v.pointer, v.kind) for v in bad.violations] == [("/traits/email", "schema")]
    assert bad.outcome == "allowed"  # on_violation defaults to allow


def test_pages_are_matched_by_name(contract):
    assert (
        contract.check(
            {"type": "page", "name": "Pricing", "userId": "u", "properties": {"path": "/p"}}
        ).violations
        == ()
    )
    other = contract.check({"type": "page", "name": "Home", "userId": "u"})
    assert (other.outcome, other.violations[0].pointer) == ("blocked", "/name")


def test_schema_defaults_never_fill_in_the_event(contract):
    event = {"type": "track", "event": "Signed Up", "userId": "u", "properties": {}}
    result = contract.check(event)
    assert result.event["properties"] == {}


def test_contract_level_defaults_apply_to_every_event():
    spec = {
        "on_violation": "block",
        "context": {"type": "object", "required": ["app"]},
        "events": [{"name": "E", "properties": {"type": "object"}}],
    }
    result = compile_contract(spec, "c").check({"type": "track", "event": "E", "context": {}})
    assert result.outcome == "blocked"
    assert result.violations[0].pointer == "/context/app"


@pytest.mark.parametrize(
    ("spec", "message", "path"),
    [
        (
            {"events": [{"name": "E", "properties": {"type": "objekt"}}]},
            "invalid JSON Schema",
            ("events", 0, "properties", "type"),
        ),
        (
            {"events": [{"name": "E", "properties": {"minimum": "zero"}}]},
            "invalid JSON Schema",
            ("events", 0, "properties", "minimum"),
        ),
        (
            {"events": [{"name": "E", "on_violation": "warn"}]},
            "on_violation must be one of allow, block",
            ("events", 0, "on_violation"),
        ),
        (
            {"events": [{"name": "E"}, {"name": "E"}]},
            "track 'E' is declared twice",
            ("events", 1, "name"),
        ),
        ({"events": [{"type": "track"}]}, "needs a name", ("events", 0, "name")),
        (
            {"events": [{"name": "E", "versions": {"v2": {"props": {}}}}]},
            "unknown key 'props'",
            ("events", 0, "versions", "v2", "props"),
        ),
    ],
)
def test_invalid_contracts_raise_spec_error_with_the_node_path(spec, message, path):
    with pytest.raises(SpecError, match=message) as caught:
        compile_contract(spec, "bad")
    assert caught.value.path == path


def test_formats_are_checked_and_where_jsonschema_is_lenient_the_fast_verdict_is_the_violation():
    spec = {
        "events": [
            {
                "name": "E",
                "properties": {
                    "type": "object",
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "cur": {"type": "string", "pattern": "^[A-Z]{3}$"},
                        "site": {"type": "string", "format": "hostname"},
                    },
                },
            }
        ]
    }
    contract = compile_contract(spec, "c")
    assert (
        contract.check(
            {
                "type": "track",
                "event": "E",
                "properties": {"at": "2024-01-01T00:00:00Z", "cur": "EUR"},
            }
        ).violations
        == ()
    )
    [bad_time] = contract.check(
        {"type": "track", "event": "E", "properties": {"at": "yesterday"}}
    ).violations
    assert (bad_time.pointer, bad_time.message) == (
        "/properties/at",
        "'yesterday' is not a 'date-time'",
    )
    [newline] = contract.check(
        {"type": "track", "event": "E", "properties": {"cur": "EUR\n"}}
    ).violations
    assert newline.pointer == "/properties/cur"
    assert "must match pattern" in newline.message
    [bad_host] = contract.check(
        {"type": "track", "event": "E", "properties": {"site": "-bad-"}}
    ).violations
    assert bad_host.pointer == "/properties/site"
    assert (
        "hostname" in bad_host.message
    )  # jsonschema's own words when fqdn is installed, else fastjsonschema's
