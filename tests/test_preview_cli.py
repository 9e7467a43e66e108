from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.functions import close_functions
from tests.sample_project import HOOK_TOKEN, write_sample_project

ENV = {"HOOK_TOKEN": HOOK_TOKEN, "COLUMNS": "200"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = write_sample_project(tmp_path_factory.mktemp("project"))
    yield root
    close_functions()


def preview(project, event, *args, input_text=None):
    event_file = project / "event.json"
    event_file.write_text(json.dumps(event))
    source = "-" if input_text is not None else str(event_file)
    return CliRunner().invoke(
        app, ["preview", "--project", str(project), *args, source], env=ENV, input=input_text
    )


def preview_json(project, event, sync="orders-to-hook"):
    result = preview(project, event, "--sync", sync, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


ORDER = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "messageId": "order-1",
    "properties": {"order_id": "o1", "total": 9.5, "currency": "EUR", "debug": True},
}


def test_delivered_shows_payload_and_the_exact_request_with_secrets_redacted(project):
    data = preview_json(project, ORDER)
    assert data["message_id"] == "order-1"
    assert data["contract"]["outcome"] == "omitted"
    assert [(v["kind"], v["pointer"]) for v in data["contract"]["violations"]] == [
        ("undeclared_field", "/properties/debug")
    ]
    [sync] = data["syncs"]
    assert (sync["sync"], sync["outcome"], sync["error"]) == ("orders-to-hook", "delivered", None)
    assert sync["function"]["outcome"] == "ok"
    assert sync["function"]["events"][0]["context"] == {"team": "growth"}
    [delivery] = sync["deliveries"]
    payload = {"kind": "purchase", "user_id": "u1", "order_id": "o1", "total": 9.5, "team": "growth",
               "properties": {"currency": "EUR"}}  # fmt: skip
    assert delivery["event_type"] == "custom"
    assert delivery["payload"] == payload
    assert delivery["request"]["method"] == "POST"
    assert delivery["request"]["url"] == "http://127.0.0.1:9/hook"
    assert delivery["request"]["body"] == payload
    assert delivery["request"]["headers"]["Authorization"] == "***"


def test_the_secret_never_appears_in_any_output(project):
    for args in (("--json",), ()):
        result = preview(project, ORDER, "--sync", "orders-to-hook", *args)
        assert result.exit_code == 0
        assert HOOK_TOKEN not in result.stdout + result.stderr


def test_filtered(project):
    data = preview_json(project, {**ORDER, "event": "Product Viewed", "properties": {}})
    [sync] = data["syncs"]
    assert (sync["outcome"], sync["deliveries"]) == ("filtered", [])
    assert data["contract"]["outcome"] == "allowed"  # undeclared events are allowed by default


def test_blocked(project):
    data = preview_json(project, {**ORDER, "properties": {"order_id": "o1", "total": -5}})
    assert data["contract"]["outcome"] == "blocked"
    assert data["contract"]["violations"][0]["pointer"] == "/properties/total"
    [sync] = data["syncs"]
    assert sync["outcome"] == "blocked"
    assert sync["function"]["outcome"] == "skipped"
    assert "-5 is less than the minimum of 0" in sync["error"]


def test_dropped(project):
    data = preview_json(project, {**ORDER, "event": "Internal Ping"})
    [sync] = data["syncs"]
    assert (sync["outcome"], sync["function"]["outcome"], sync["function"]["events"]) == (
        "dropped",
        "dropped",
        [],
    )


def test_mis_mapped(project):
    signup = {
        "type": "track",
        "event": "Signed Up",
        "userId": "u1",
        "properties": {"plan": "pro", "seats": "many"},
    }
    data = preview_json(project, signup)
    [sync] = data["syncs"]
    assert sync["outcome"] == "mapping_error"
    assert "seats" in sync["error"]
    assert sync["deliveries"] == []


def test_function_error_carries_the_traceback(project):
    data = preview_json(project, {**ORDER, "event": "Crash"})
    [sync] = data["syncs"]
    assert sync["outcome"] == "function_error"
    assert "raised RuntimeError: cannot enrich order-1" in sync["error"]
    assert "enrich.py" in sync["decisions"][0]["traceback"]


def test_file_destination_request_is_the_line_it_would_append(project):
    data = preview_json(project, ORDER, sync="everything-to-file")
    [delivery] = data["syncs"][0]["deliveries"]
    assert delivery["request"]["method"] == "APPEND"
    assert delivery["request"]["url"].endswith("out/events.ndjson")
    assert delivery["request"]["body"] == {
        "event": "Order Completed",
        "at": data["event"]["timestamp"],
    }
    assert not (project / "out" / "events.ndjson").exists()  # nothing delivered


def test_every_sync_of_a_source_from_stdin(project):
    result = preview(project, {}, "--source", "web", "--json", input_text=json.dumps(ORDER))
    assert result.exit_code == 0, result.stderr
    assert sorted(s["sync"] for s in json.loads(result.stdout)["syncs"]) == [
        "everything-to-file",
        "orders-to-hook",
    ]


def test_readable_view_names_every_stage(project):
    result = preview(project, ORDER, "--sync", "orders-to-hook")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "contract web: omitted" in out
    assert "undeclared_field /properties/debug" in out
    assert "sync orders-to-hook -> hook: would be sent (nothing is sent by a preview)" in out
    assert "function functions/enrich.py: ok (1 event out)" in out
    assert "request that would be sent: POST http://127.0.0.1:9/hook" in out
    assert "delivered" not in out  # a preview delivers nothing
    assert '"order_id": "o1"' in out


def test_an_event_the_listener_would_refuse_is_an_error(project):
    result = preview(project, {"type": "track", "event": "x"}, "--sync", "orders-to-hook")
    assert result.exit_code == 1
    assert "needs a userId or an anonymousId" in result.stderr
    assert result.stdout == ""


def test_bad_json_and_usage_errors(project):
    bad = CliRunner().invoke(
        app,
        ["preview", "--project", str(project), "--sync", "orders-to-hook", "-"],
        env=ENV,
        input="{nope",
    )
    assert bad.exit_code == 1
    assert "stdin: invalid JSON" in bad.stderr
    unknown = preview(project, ORDER, "--sync", "nope")
    assert unknown.exit_code == 2
    assert "unknown sync 'nope'" in unknown.stderr
    neither = preview(project, ORDER)
    assert neither.exit_code == 2
    assert "name a sync with --sync" in neither.stderr


SPLITTER = {
    "functions/split.py": """
        def transform_events(events, settings):
            return [dict(e, messageId=f"{e['messageId']}-{i}", properties={"n": i}) for e in events for i in range(2)]
    """,
    "syncs/split-to-file.yaml": """
        source: web
        destination: local-file
        function: functions/split.py
        match: all
        event_types:
          - type: custom
            mappings: { required: { n: { field: properties.n } } }
          - type: custom
            mappings: { required: { twice: { field: properties.n } } }
    """,
}


def test_splits_and_match_all_show_every_delivery(tmp_path):
    root = write_sample_project(tmp_path, SPLITTER)
    try:
        data = preview_json(
            root,
            {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "s"},
            sync="split-to-file",
        )
    finally:
        close_functions()
    [sync] = data["syncs"]
    assert sync["function"]["outcome"] == "split"
    assert [e["messageId"] for e in sync["function"]["events"]] == ["s-0", "s-1"]
    assert [(d["message_id"], d["payload"]) for d in sync["deliveries"]] == [
        ("s-0", {"n": 0}),
        ("s-0", {"twice": 0}),
        ("s-1", {"n": 1}),
        ("s-1", {"twice": 1}),
    ]
    assert sync["outcome"] == "delivered"
