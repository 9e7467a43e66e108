"""Field references: dots, array indexes, escapes, missing vs null (SPEC §2)."""

from __future__ import annotations

import pytest

from streamctl.core.errors import SpecError
from streamctl.mappings.paths import ABSENT, compile_path, format_path, parse_path

EVENT = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "properties": {
        "total": 30.5,
        "coupon": None,
        "products": [{"product_id": "p1", "price": 10}, {"product_id": "p2", "price": 20.5}],
        "page.url": "https://example.com/a",
        "a\\b": "backslash",
        "first name": "Ada",
        "0": "key zero",
        "nested": {"deep": {"deeper": {"deepest": 4}}},
        "empty": "",
        "zero": 0,
        "false": False,
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("type", "track"),
        ("properties.total", 30.5),
        ("properties.products.0.product_id", "p1"),
        ("properties.products.1.price", 20.5),
        ("properties.nested.deep.deeper.deepest", 4),
        ("properties.nested.deep.deeper", {"deepest": 4}),
        (r"properties.page\.url", "https://example.com/a"),
        (r"properties.a\\b", "backslash"),
        ("properties.first name", "Ada"),
        ("properties.0", "key zero"),  # a numeric segment on an object is a key
        ("properties.empty", ""),
        ("properties.zero", 0),
        ("properties.false", False),
    ],
)
def test_paths_read_values(path, expected):
    assert compile_path(path)(EVENT) == expected


def test_the_whole_properties_object_is_the_same_object():
    assert compile_path("properties")(EVENT) is EVENT["properties"]


def test_null_stays_null_and_is_not_absent():
    assert compile_path("properties.coupon")(EVENT) is None


@pytest.mark.parametrize(
    "path",
    [
        "missing",
        "properties.missing",
        "properties.products.2.price",  # index past the end
        "properties.products.x",  # a word on an array
        "properties.products.0.price.cents",  # into a number
        "properties.coupon.code",  # through null
        "properties.total.0",  # an index into a number
        "event.0",  # an index into a string: strings are not arrays
        "properties.page.url",  # unescaped: reads key "page" which does not exist
        "properties.nested.deep.missing.deepest",
        "properties.products.-1.price",  # negative indexes are not a thing
    ],
)
def test_missing_paths_resolve_to_absent(path):
    assert compile_path(path)(EVENT) is ABSENT


def test_absent_is_falsy_singleton():
    assert not ABSENT
    assert repr(ABSENT) == "ABSENT"
    assert type(ABSENT)() is ABSENT


def test_getter_on_a_non_object_event():
    assert compile_path("a")([1, 2]) is ABSENT
    assert compile_path("a.b.c")("text") is ABSENT


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("a.b.c", ("a", "b", "c")),
        (r"a\.b.c", ("a.b", "c")),
        (r"a\\.b", ("a\\", "b")),
        (r"a\\\.b", ("a\\.b",)),
        ("with space.x", ("with space", "x")),
    ],
)
def test_parse_path_escapes(path, keys):
    assert parse_path(path) == keys
    assert parse_path(format_path(keys)) == keys


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "cannot be empty"),
        ("a..b", "empty segment"),
        (".a", "empty segment"),
        ("a.", "empty segment"),
        ("a\\", "lone backslash"),
        (r"a\nb", r"unknown escape \n"),
        (3, "must be a string"),
    ],
)
def test_bad_paths_are_spec_errors(path, message):
    with pytest.raises(SpecError, match=message.replace("\\", "\\\\")):
        compile_path(path)
