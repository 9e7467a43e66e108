from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.core.outcomes import Status
from streamctl.functions import close_functions
from streamctl.sync_tests import json_equal, json_includes
from streamctl.testing import load, run_sync
from tests.sample_project import HOOK_TOKEN, write_sample_project

ENV = {"HOOK_TOKEN": HOOK_TOKEN, "COLUMNS": "200"}

PASSING = """
    sync: orders-to-hook
    tests:
      - name: an order becomes a purchase
        given:
          type: track
          event: Order Completed
          userId: u1
          properties: { order_id: o1, total: 9.5, currency: EUR }
        expect:
          event_type: custom
          payload:
            kind: purchase
            user_id: u1
            order_id: o1
            total: 9.5
            team: growth
            properties: { currency: EUR }
      - name: a subset is enough
        given: { type: track, event: Order Completed, userId: u1, properties: { order_id: o1, total: 3 } }
        expect: { payload_includes: { total: 3.0, team: growth } }
      - name: pings are dropped
        given: { type: track, event: Internal Ping, userId: u1 }
        expect: { outcome: dropped }
      - name: negative totals are blocked
        given: { type: track, event: Order Completed, userId: u1, properties: { order_id: o1, total: -1 } }
        expect: { outcome: blocked, error: minimum }
      - name: seats must be a number
        given: { type: track, event: Signed Up, userId: u1, properties: { plan: pro, seats: many } }
        expect: { outcome: mapping_error, error: seats }
      - name: one expectation per event of a batch
        given:
          - { type: track, event: Internal Ping, userId: u1 }
          - { type: track, event: Viewed, userId: u1 }
        expect: [{ outcome: dropped }, { outcome: filtered }]
      - name: timestamps are reproducible
        sync: everything-to-file
        received_at: "2025-06-01T10:00:00Z"
        given: { type: track, event: Viewed, anonymousId: a1 }
        expect: { payload: { event: Viewed, at: "2025-06-01T10:00:00.000Z" } }
"""

FAILING = """
    sync: orders-to-hook
    tests:
      - name: still passes
        given: { type: track, event: Internal Ping, userId: u1 }
        expect: { outcome: dropped }
      - name: wrong total
        given: { type: track, event: Order Completed, userId: u1, properties: { order_id: o1, total: 9.5 } }
        expect:
          payload_includes: { total: 10, user_id: u1 }
      - name: wrong outcome
        given: { type: track, event: Viewed, userId: u1 }
        expect: { outcome: delivered }
"""


@pytest.fixture
def project(tmp_path):
    yield tmp_path
    close_functions()


def run(project, fixtures, *args):
    write_sample_project(project, {f"tests/{name}": text for name, text in fixtures.items()})
    return CliRunner().invoke(app, ["test", "--project", str(project), *args], env=ENV)


def test_passing_fixtures(project):
    result = run(project, {"orders.yaml": PASSING})
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "test an order becomes a purchase ... passed"
    assert len([line for line in lines if line.endswith("... passed")]) == 7
    assert "7 passed" in result.stderr


def test_failures_name_file_line_and_show_a_diff(project):
    result = run(project, {"orders.yaml": FAILING})
    assert result.exit_code == 1
    out = result.stdout
    assert "test still passes ... passed" in out
    assert "test wrong total ... failed" in out
    assert "tests/orders.yaml:6: the payload does not include the expected fields" in out
    assert '-  "total": 10,' in out
    assert '+  "total": 9.5,' in out
    assert "tests/orders.yaml:10: expected delivered, got filtered: no event type matched" in out
    assert "1 passed, 2 failed" in result.stderr


def test_sync_option_selects_tests(project):
    result = run(project, {"orders.yaml": PASSING}, "--sync", "everything-to-file")
    assert result.exit_code == 0
    assert result.stdout.strip() == "test timestamps are reproducible ... passed"


def test_invalid_fixture_files_are_reported_with_their_lines(project):
    broken = """
        tests:
          - name: no sync anywhere
            given: { type: track, userId: u }
            expect: { outcome: dropped }
          - name: bad outcome
            sync: orders-to-hook
            given: { type: track, userId: u }
            expect: { outcome: vanished }
          - name: unknown sync
            sync: orders-to-hok
            given: { type: track, userId: u }
            expect: {}
    """
    result = run(project, {"broken.yaml": broken})
    assert result.exit_code == 1
    assert "tests/broken.yaml:2:5: test 'no sync anywhere' names no sync" in result.stderr
    assert (
        "tests/broken.yaml:8:24: tests[1].expect.outcome: 'vanished' is not one of" in result.stderr
    )
    assert (
        "tests/broken.yaml:10:11: unknown sync 'orders-to-hok' (did you mean 'orders-to-hook'?)"
        in result.stderr
    )


def test_a_refused_event_fails_its_test(project):
    fixture = """
        sync: orders-to-hook
        tests:
          - name: no identity
            given: { type: track, event: Viewed }
            expect: { outcome: filtered }
    """
    result = run(project, {"refused.yaml": fixture})
    assert result.exit_code == 1
    assert (
        "the given event is refused at ingest: event 0 messageId 'test-1': needs a userId"
        in result.stdout
    )


def test_no_tests(project):
    result = run(project, {})
    assert result.exit_code == 0
    assert "no tests found" in result.stderr


def test_streamctl_testing_run_sync(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", HOOK_TOKEN)
    loaded = load(write_sample_project(tmp_path))
    try:
        decisions = run_sync(
            loaded,
            "orders-to-hook",
            [
                {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": "u1",
                    "properties": {"order_id": "o", "total": 1},
                },
                {"type": "track", "event": "Internal Ping", "userId": "u1"},
            ],
        )
    finally:
        close_functions()
    assert [(d.status, d.message_id) for d in decisions] == [
        (Status.PENDING, "test-1"),
        (Status.DROPPED, "test-2"),
    ]
    assert decisions[0].payload["team"] == "growth"


@pytest.mark.parametrize(
    ("actual", "expected", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        ("1", 1, False),
        (None, None, True),
        ({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2.0}]}, True),
    ],
)
def test_json_equal(actual, expected, equal):
    assert json_equal(actual, expected) is equal


def test_json_includes():
    assert json_includes({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1}})
    assert not json_includes({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}})
    assert not json_includes({"a": [1, 2]}, {"a": [1]})
    assert json_includes({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]})


def test_the_repository_default_project_fixtures_pass():
    root = Path(__file__).resolve().parents[1]
    try:
        result = CliRunner().invoke(app, ["test", "--project", str(root)], env={"COLUMNS": "200"})
    finally:
        close_functions()
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout
    assert result.stdout.count("... passed") >= 10


def test_secrets_never_appear_in_failures(project):
    fixture = """
        sync: orders-to-hook
        tests:
          - name: leaks nothing
            given: { type: track, event: Order Completed, userId: u1, properties: { order_id: o1, total: 1 } }
            expect: { payload: { token: "Bearer tok-5ecret-value" } }
    """
    result = run(project, {"leak.yaml": fixture})
    assert result.exit_code == 1
    assert "the payload differs" in result.stdout
    assert HOOK_TOKEN not in result.stdout + result.stderr
    assert '"token": "***"' in result.stdout
