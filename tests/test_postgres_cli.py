"""The commands give the same answers on PostgreSQL as on SQLite: the same events
replayed into a project on each store, then `status`, `errors` (list, show, retry),
`explain`, `top`, `alerts list`, `store prune` and `store migrate` compared, times
aside."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from tests.fakes.http import FakeServer, Received, Reply
from tests.services import PASSWORD

ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def refuse_bad(request: Received) -> Reply:
    """The destination refuses (400) events whose messageId says so."""
    if "bad" in request.json()["message_id"]:
        return Reply(400, {"error": "invalid event"})
    return Reply(200, {"ok": True})


def write_project(root: Path, store: str, sink_url: str) -> Path:
    root.mkdir(parents=True)
    project = {
        "version": 1,
        "store": store,
        "sources": {"web": {"type": "http", "write_keys": ["cli-key"]}},
        "destinations": {"sink": {"type": "webhook", "config": {"url": sink_url}}},
    }
    (root / "streamctl.yaml").write_text(json.dumps(project))
    (root / "syncs").mkdir()
    sync = {
        "name": "web-to-sink",
        "source": "web",
        "destination": "sink",
        "event_types": [
            {
                "type": "custom",
                "filter": {"field": "event", "op": "neq", "value": "Ignored"},
                "mappings": {
                    "required": {
                        "message_id": {"field": "messageId"},
                        "total": {"field": "properties.total"},
                    }
                },
            }
        ],
        "delivery": {"backoff": {"initial": "50ms", "max": "100ms"}, "max_attempts": 2},
    }
    (root / "syncs" / "web-to-sink.yaml").write_text(json.dumps(sync))
    return root


def events_file(path: Path) -> Path:
    events = [
        {"type": "track", "event": "Bought", "userId": "u1", "messageId": "ok-1",
         "properties": {"total": 1}},
        {"type": "track", "event": "Bought", "userId": "u2", "messageId": "bad-1",
         "properties": {"total": 2}},
        {"type": "track", "event": "Ignored", "userId": "u3", "messageId": "skip-1"},
        {"type": "track", "event": "Bought", "userId": "u4", "messageId": "nototal-1"},
        {"type": "track", "event": "Bought", "userId": "u1", "messageId": "ok-1",
         "properties": {"total": 1}},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def without_times(value: Any) -> Any:
    """The answer with its clock readings blanked: two stores filled a moment apart."""
    if isinstance(value, dict):
        return {
            k: None if k in ("latency_ms", "seconds") else without_times(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_times(v) for v in value]
    if isinstance(value, str) and ISO_TIME.match(value):
        return "<time>"
    return value


def parse(text: str, lines: bool) -> Any:
    """A JSON document, or JSON lines (`errors --json`) as a list."""
    if lines:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    return result


@pytest.fixture
def projects(tmp_path: Path, postgres_url: str):
    with FakeServer(refuse_bad) as sink:
        roots = {
            "sqlite": write_project(tmp_path / "sqlite", "state.db", sink.url),
            "postgres": write_project(tmp_path / "postgres", postgres_url, sink.url),
        }
        replayed = events_file(tmp_path / "events.ndjson")
        reports = {
            name: cli("replay", str(replayed), "-p", str(root), "--json", "--workers", "0")
            for name, root in roots.items()
        }
        yield roots, reports


def test_every_command_answers_alike_on_both_stores(projects) -> None:
    roots, reports = projects
    sqlite, postgres = roots["sqlite"], roots["postgres"]
    assert reports["sqlite"].exit_code == reports["postgres"].exit_code == 1  # one archived
    assert without_times(json.loads(reports["postgres"].stdout)) == without_times(
        json.loads(reports["sqlite"].stdout)
    )

    def same(*args: str, lines: bool = False) -> Any:
        answers = [cli(*args, "-p", str(root)) for root in (sqlite, postgres)]
        assert answers[0].exit_code == answers[1].exit_code, answers[1].output
        if "--json" in args:
            parsed = [without_times(parse(a.stdout, lines)) for a in answers]
            assert parsed[0] == parsed[1]
            return parsed[1]
        return answers[1].output

    status = same("status", "--json")
    assert status["syncs"][0]["received"] == 4 and status["syncs"][0]["archived"] == 1
    listed = same("errors", "--json", lines=True)
    assert "bad-1" in {row["message_id"] for row in listed}
    for row in listed:
        shown = same("errors", "show", str(row["id"]), "--json")
        assert shown["message_id"] == row["message_id"]
    story = same("explain", "ok-1", "--json")
    assert [receipt["duplicate"] for receipt in story["receipts"]] == [False, True]
    top = same("top", "--once", "--interval", "0.1")
    assert "web-to-sink" in top
    same("alerts", "list", "--json")
    same("errors", "retry", "--queue-only")
    pruned = same("store", "prune", "--older-than", "0s", "--vacuum")
    assert "events" in pruned
    same("store", "migrate")


def test_a_database_that_cannot_be_reached_is_named_and_exits_1(tmp_path: Path) -> None:
    unreachable = f"postgresql://streamctl:{PASSWORD}@127.0.0.1:9/events"
    root = write_project(tmp_path / "down", unreachable, "http://127.0.0.1:9/never")
    for command in (["run", "--port", "0"], ["status"], ["errors"], ["store", "migrate"]):
        result = cli(*command, "-p", str(root))
        assert result.exit_code == 1, result.output
        # (not "database ...": a secret of another test's project may mask part of it)
        assert "'events' on 127.0.0.1:9" in result.output
        assert PASSWORD not in result.output
