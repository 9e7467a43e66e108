"""Parsing project files: node positions, duplicate keys, `${ENV}` interpolation."""

from __future__ import annotations

import pytest

from streamctl.config.documents import parse_document
from streamctl.config.interpolate import interpolate
from streamctl.core.units import parse_duration, parse_rate

TEXT = """\
name: purchases
event_types:
  - type: custom
    filter: { field: event, op: eq, value: Order Completed }
"""


def test_values_and_keys_keep_their_line_and_column():
    doc = parse_document(TEXT, "syncs/a.yaml", env={})
    assert doc.data["event_types"][0]["filter"]["value"] == "Order Completed"
    assert doc.position(("event_types", 0, "filter", "value")) == (4, 44)
    assert doc.position(("event_types", 0, "filter"), key=True) == (4, 5)
    assert doc.position(("name",)) == (1, 7)


def test_a_missing_node_is_located_at_its_nearest_ancestor():
    doc = parse_document(TEXT, "syncs/a.yaml", env={})
    assert doc.position(("event_types", 0, "mappings", "required")) == (3, 5)


def test_problem_is_formatted_as_path_line_col():
    doc = parse_document(TEXT, "syncs/a.yaml", env={})
    problem = doc.problem(("event_types", 0, "type"), "unknown event type")
    assert str(problem) == "syncs/a.yaml:3:11: unknown event type"


def test_duplicate_keys_are_reported_at_the_second_one():
    doc = parse_document("a: 1\nb: 2\na: 3\n", "x.yaml", env={})
    assert [str(p) for p in doc.problems] == [
        "x.yaml:3:1: duplicate key 'a' (first defined on line 1)"
    ]
    assert doc.data == {"a": 1, "b": 2}


def test_syntax_errors_become_problems_with_a_position():
    doc = parse_document("a: [1, 2\nb: 3\n", "x.yaml", env={})
    assert doc.data is None
    assert len(doc.problems) == 1
    assert doc.problems[0].message.startswith("invalid YAML: ")
    assert doc.problems[0].line == 2


def test_keys_stay_strings_and_dates_stay_text():
    doc = parse_document("on: 1\n2: x\nwhen: 2026-11-26\n", "x.yaml", env={})
    assert doc.data == {"on": 1, "2": "x", "when": "2026-11-26"}


def test_merge_keys_are_supported():
    doc = parse_document("base: &b { a: 1 }\nother: { <<: *b, c: 2 }\n", "x.yaml", env={})
    assert doc.data["other"] == {"a": 1, "c": 2}


def test_environment_values_are_interpolated_and_collected_as_secrets():
    env = {"TOKEN": "tok-123456", "HOST": "example.com"}
    doc = parse_document('auth: "Bearer ${TOKEN}"\nurl: https://${HOST}/x\n', "x.yaml", env=env)
    assert doc.data == {"auth": "Bearer tok-123456", "url": "https://example.com/x"}
    assert doc.secrets == {"tok-123456", "example.com"}


def test_defaults_apply_when_the_variable_is_unset_and_are_not_secrets():
    doc = parse_document("key: ${KEY:-dev-key}\n", "x.yaml", env={})
    assert doc.data == {"key": "dev-key"}
    assert doc.secrets == set()
    assert doc.problems == []


def test_a_set_but_empty_variable_wins_over_the_default():
    assert interpolate("${A:-x}", {"A": ""}).text == ""


def test_a_missing_variable_without_default_names_file_line_and_variable():
    doc = parse_document("a: 1\nurl: https://${API_HOST}/v1\n", "streamctl.yaml", env={})
    assert [str(p) for p in doc.problems] == [
        "streamctl.yaml:2:6: environment variable API_HOST is not set and has no default"
    ]


def test_a_whole_plain_reference_takes_the_type_it_would_have_if_written_there():
    doc = parse_document(
        'port: ${PORT:-8080}\nratio: ${R}\nflag: ${F}\nquoted: "${PORT:-8080}"\n',
        "x.yaml",
        env={"R": "0.5", "F": "true"},
    )
    assert doc.data == {"port": 8080, "ratio": 0.5, "flag": True, "quoted": "8080"}


def test_double_dollar_escapes_a_reference():
    assert interpolate("cost: $${PRICE}", {"PRICE": "3"}).text == "cost: ${PRICE}"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("4h", 14400.0), ("1d", 86400.0), (12, 12.0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "per_second"), [("100/s", 100.0), ("6000/m", 100.0), ("3600/h", 1.0)]
)
def test_rates(text, per_second):
    assert parse_rate(text) == per_second


def test_bad_units_raise():
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("4 hours")
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("100 per second")
