"""Filters: every op of SPEC §2, JSON equality, nesting and compile-time errors."""

from __future__ import annotations

import datetime

import pytest

from streamctl.core.errors import SpecError
from streamctl.filters import OPS, compile_filter
from streamctl.filters.equality import json_equal, make_membership

EVENT = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user_42",
    "properties": {
        "total": 30,
        "ratio": 1.0,
        "count": "5",
        "paid": True,
        "refunded": False,
        "one": 1,
        "coupon": None,
        "tags": ["sale", "vip", 1, True, {"a": 1}],
        "page.url": "https://shop.example.com/checkout?step=2",
        "dims": {"w": 1, "h": 2.0},
    },
}


def check(field, op, value=None, *, event=EVENT, has_value=True):
    node = {"field": field, "op": op}
    if has_value:
        node["value"] = value
    return compile_filter(node)(event)


# -- eq / neq: JSON equality -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("type", "track", True),
        ("type", "Track", False),
        ("properties.total", 30, True),
        ("properties.total", 30.0, True),  # 1 equals 1.0
        ("properties.ratio", 1, True),
        ("properties.total", "30", False),  # no string/number coercion
        ("properties.count", 5, False),
        ("properties.count", "5", True),
        ("properties.paid", True, True),
        ("properties.one", True, False),  # true is not 1
        ("properties.paid", 1, False),  # and 1 is not true
        ("properties.refunded", 0, False),
        ("properties.refunded", False, True),
        ("properties.coupon", None, True),
        ("properties.missing", None, False),  # absent is not null
        ("properties.dims", {"w": 1.0, "h": 2}, True),  # deep, with numeric equality
        ("properties.dims", {"w": True, "h": 2}, False),
        ("properties.dims", {"w": 1}, False),
        ("properties.tags", ["sale", "vip", 1.0, True, {"a": 1}], True),
        ("properties.tags", ["sale", "vip", True, 1, {"a": 1}], False),
        ("properties.missing", "x", False),
    ],
)
def test_eq_is_json_equality(field, value, expected):
    assert check(field, "eq", value) is expected
    assert check(field, "neq", value) is (not expected)


def test_neq_is_true_for_a_missing_field():
    assert check("properties.nothing", "neq", "x") is True


def test_json_equal_directly():
    assert json_equal([1, {"a": [2.0]}], [1.0, {"a": [2]}])
    assert not json_equal([True], [1])
    assert not json_equal({"a": 1}, [("a", 1)])
    assert not json_equal(0, False)
    assert json_equal(None, None)


# -- in / not_in ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "values", "expected"),
    [
        ("type", ["track", "page"], True),
        ("type", ["identify"], False),
        ("properties.total", [1, 30.0], True),
        ("properties.total", ["30"], False),
        ("properties.one", [True], False),  # Python's {True} would contain 1
        ("properties.paid", [1], False),
        ("properties.paid", [False, True], True),
        ("properties.coupon", [None], True),
        ("properties.missing", [None, "x"], False),
        ("properties.dims", [{"h": 2, "w": 1}], True),
        ("properties.tags", [["sale"]], False),
        ("properties.tags", [], False),
    ],
)
def test_in_and_not_in(field, values, expected):
    assert check(field, "in", values) is expected
    assert check(field, "not_in", values) is (not expected)


def test_membership_keeps_booleans_and_numbers_apart():
    contains = make_membership([1, 0, "a", None])
    assert contains(1) and contains(1.0) and contains(0) and contains("a") and contains(None)
    assert not contains(True) and not contains(False) and not contains("1")


@pytest.mark.parametrize("op", ["in", "not_in"])
@pytest.mark.parametrize("value", ["track", {"a": 1}, 3, None])
def test_in_needs_a_list(op, value):
    with pytest.raises(SpecError, match=f"op '{op}' takes a list") as exc:
        compile_filter({"field": "type", "op": op, "value": value})
    assert exc.value.path == ("value",)


# -- contains / starts_with / ends_with / matches ----------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("event", "Order", True),
        ("event", "order", False),
        ("event", "", True),
        ("properties.tags", "vip", True),
        ("properties.tags", "vi", False),  # array elements, not substrings
        ("properties.tags", 1.0, True),
        ("properties.tags", {"a": 1.0}, True),
        ("properties.tags", False, False),
        ("properties.total", "3", False),  # a number is not a string
        ("properties.missing", "x", False),
    ],
)
def test_contains(field, value, expected):
    assert check(field, "contains", value) is expected
    assert check(field, "not_contains", value) is (not expected)


def test_contains_true_in_an_array_is_not_one():
    event = {"flags": [1, 0]}
    assert check("flags", "contains", True, event=event) is False
    assert check("flags", "contains", 1, event=event) is True


def test_starts_and_ends_with():
    assert check("userId", "starts_with", "user_")
    assert not check("userId", "starts_with", "USER_")
    assert check("userId", "ends_with", "_42")
    assert not check("properties.total", "starts_with", "3")
    assert not check("properties.missing", "ends_with", "")


@pytest.mark.parametrize("op", ["starts_with", "ends_with", "matches"])
def test_string_ops_need_a_string_value(op):
    with pytest.raises(SpecError, match="value must be a string") as exc:
        compile_filter({"field": "userId", "op": op, "value": 4})
    assert exc.value.path == ("value",)


def test_matches_searches_anywhere_and_with_escaped_keys():
    assert check(r"properties.page\.url", "matches", r"checkout\?step=\d+$")
    assert check("userId", "matches", "[0-9]{2}")  # search, not fullmatch
    assert not check("userId", "matches", "^[0-9]")
    assert not check("properties.total", "matches", "30")  # not a string


def test_a_bad_regex_is_a_spec_error_at_its_node():
    spec = {
        "any": [
            {"field": "type", "op": "eq", "value": "x"},
            {"field": "event", "op": "matches", "value": "(unclosed"},
        ]
    }
    with pytest.raises(SpecError, match=r"invalid regular expression '\(unclosed'") as exc:
        compile_filter(spec)
    assert exc.value.path == ("any", 1, "value")


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("gt", 29.5, True),
        ("gt", 30, False),
        ("gte", 30.0, True),
        ("lt", 30.01, True),
        ("lt", 30, False),
        ("lte", 30, True),
    ],
)
def test_numeric_comparisons(op, value, expected):
    assert check("properties.total", op, value) is expected


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize(
    "field",
    [
        "properties.count",
        "properties.paid",
        "properties.missing",
        "properties.coupon",
        "properties.tags",
    ],
)
def test_numeric_comparisons_are_false_for_non_numbers(op, field):
    # "5" > 1 would be a TypeError in Python and True in JavaScript: here it is false.
    assert check(field, op, 1) is False
    assert check(field, op, -1000) is False


@pytest.mark.parametrize("value", ["10", True, None, [1]])
def test_numeric_ops_need_a_number_value(value):
    with pytest.raises(SpecError, match="value must be a number"):
        compile_filter({"field": "properties.total", "op": "gt", "value": value})


# -- presence and booleans ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "exists"),
    [
        ("type", True),
        ("properties.refunded", True),  # false exists
        ("properties.tags", True),
        ("properties.coupon", False),  # null does not
        ("properties.missing", False),
        ("properties.tags.9", False),
    ],
)
def test_exists_and_not_exists(field, exists):
    assert check(field, "exists", has_value=False) is exists
    assert check(field, "not_exists", has_value=False) is (not exists)


@pytest.mark.parametrize(
    ("field", "is_true", "is_false"),
    [
        ("properties.paid", True, False),
        ("properties.refunded", False, True),
        ("properties.one", False, False),  # 1 is not true
        ("properties.total", False, False),
        ("properties.count", False, False),
        ("properties.coupon", False, False),
        ("properties.missing", False, False),
    ],
)
def test_is_true_and_is_false_want_real_booleans(field, is_true, is_false):
    assert check(field, "is_true", has_value=False) is is_true
    assert check(field, "is_false", has_value=False) is is_false


@pytest.mark.parametrize("op", ["exists", "not_exists", "is_true", "is_false"])
def test_unary_ops_refuse_a_value(op):
    with pytest.raises(SpecError, match="takes no value") as exc:
        compile_filter({"field": "type", "op": op, "value": True})
    assert exc.value.path == ("value",)


# -- combinations ---------------------------------------------------------------------------


def test_nested_combinations():
    spec = {
        "all": [
            {"field": "type", "op": "eq", "value": "track"},
            {
                "any": [
                    {"field": "properties.total", "op": "gte", "value": 100},
                    {"not": {"field": "properties.tags", "op": "not_contains", "value": "vip"}},
                ]
            },
            {"not": {"any": [{"field": "userId", "op": "starts_with", "value": "test_"}]}},
        ]
    }
    predicate = compile_filter(spec)
    assert predicate(EVENT) is True
    assert predicate({**EVENT, "userId": "test_1"}) is False
    assert predicate({**EVENT, "properties": {"total": 5, "tags": []}}) is False
    assert predicate({**EVENT, "properties": {"total": 500}}) is True


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_all_and_any_of_every_size(size):
    true = {"field": "type", "op": "eq", "value": "track"}
    false = {"field": "type", "op": "eq", "value": "page"}
    for position in range(size):
        conditions = [true] * size
        conditions[position] = false
        assert compile_filter({"all": conditions})(EVENT) is False
        assert compile_filter({"any": conditions})(EVENT) is (size > 1)
        conditions = [false] * size
        conditions[position] = true
        assert compile_filter({"any": conditions})(EVENT) is True
    assert compile_filter({"all": [true] * size})(EVENT) is True
    assert compile_filter({"any": [false] * size})(EVENT) is False


def test_every_op_compiles_and_returns_a_bool():
    for op in OPS:
        node = {"field": "properties.total", "op": op}
        if op not in ("exists", "not_exists", "is_true", "is_false"):
            node["value"] = (
                [30]
                if op in ("in", "not_in")
                else ("3" if op in ("starts_with", "ends_with", "matches") else 30)
            )
        result = compile_filter(node)(EVENT)
        assert isinstance(result, bool), op


# -- malformed specs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message", "path"),
    [
        ({"field": "type", "op": "equals", "value": "x"}, "unknown op 'equals'", ("op",)),
        (
            {"field": "type", "op": "startswith", "value": "x"},
            "did you mean 'starts_with'",
            ("op",),
        ),
        (
            {
                "all": [
                    {"field": "a", "op": "eq", "value": 1},
                    {"field": "b", "op": "nope", "value": 1},
                ]
            },
            "unknown op",
            ("all", 1, "op"),
        ),
        ({"not": {"any": [{"field": "a", "op": "gt"}]}}, "needs a `value`", ("not", "any", 0)),
        ({"field": "type", "value": "x"}, "needs an `op`", ()),
        ({"op": "eq", "value": "x"}, "needs a `field`", ()),
        ({"feild": "type", "op": "eq", "value": "x"}, "did you mean 'field'", ("feild",)),
        ({"field": "type", "op": "eq", "vale": "x"}, "unknown key 'vale'", ("vale",)),
        ({"alll": []}, "unknown filter key 'alll'", ("alll",)),
        ({"all": {"field": "a"}}, "takes a list", ("all",)),
        ({"any": []}, "needs at least one", ("any",)),
        ({"all": [{"field": "a", "op": "exists"}], "field": "b"}, "must be alone", ()),
        ({"all": ["type == track"]}, "a filter must be a condition", ("all", 0)),
        ("type == track", "a filter must be a condition", ()),
        ({"field": "a..b", "op": "exists"}, "empty segment", ("field",)),
        (
            {"field": "when", "op": "eq", "value": datetime.date(2026, 1, 1)},
            "not a JSON value",
            ("value",),
        ),
    ],
)
def test_malformed_filters_name_the_node(spec, message, path):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")) as exc:
        compile_filter(spec)
    assert exc.value.path == path
