"""`streamctl replay`, `errors`, `status`, `explain` and `store prune` through the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.config.loader import load_project
from streamctl.delivery.replay import replay_file
from streamctl.store import SqliteStore
from tests.delivery_helpers import deliver, make_events, received_ns, rows, statuses, write_project
from tests.fakes.http import FakeServer, Received, Reply

ERROR_KEYS = {
    "id", "message_id", "sync", "event_type", "stage", "status", "attempts", "status_code",
    "error", "first_attempt_at", "last_attempt_at", "next_attempt_at",
}  # fmt: skip
STATUS_KEYS = {
    "sync", "received", "blocked", "dropped", "filtered", "mapping_errors", "delivered",
    "retrying", "archived", "error_rate", "latency_ms",
}  # fmt: skip


def runner() -> CliRunner:
    return CliRunner()


def write_ndjson(path: Path, events: list[dict], extra_lines: dict[int, str] | None = None) -> Path:
    lines = [orjson.dumps(e).decode() for e in events]
    for index, text in sorted((extra_lines or {}).items()):
        lines.insert(index, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def raw_events(count: int, start: int = 0) -> list[dict]:
    return [
        {"type": "track", "event": "Order Completed", "userId": f"u{i}", "messageId": f"m-{i}",
         "properties": {"n": i}}
        for i in range(start, start + count)
    ]  # fmt: skip


def test_replay_delivers_reports_bad_lines_and_prints_a_summary(tmp_path):
    with FakeServer() as server:
        root = write_project(
            tmp_path / "p", {"orders": {"destination": "api"}}, {"api": server.url}
        )
        events_file = write_ndjson(
            tmp_path / "events.ndjson", raw_events(5), {2: "{not json", 4: '{"type": "track"}'}
        )
        result = runner().invoke(app, ["replay", str(events_file), "--project", str(root)])
        assert result.exit_code == 0, result.stderr
        assert sorted(received_ns(server.bodies())) == [0, 1, 2, 3, 4]
    # The file's line and the column within it, once (not the parser's "line 1 column 2").
    assert "events.ndjson:3:2: not valid JSON: " in result.stderr
    assert "column" not in result.stderr and "(char" not in result.stderr
    assert "events.ndjson:5:" in result.stderr and "userId or an anonymousId" in result.stderr
    assert "orders" in result.stderr and "2 bad lines" in result.stderr
    assert result.stdout == ""
    assert statuses(root, "orders") == {"delivered": 5}


def test_replay_json_summary_and_exit_1_when_something_is_archived(tmp_path):
    def answer(req: Received) -> Reply:
        return Reply(400, "no") if req.json()["n"] == 1 else Reply(200, {"ok": True})

    with FakeServer(answer) as server:
        root = write_project(
            tmp_path / "p", {"orders": {"destination": "api"}}, {"api": server.url}
        )
        events_file = write_ndjson(tmp_path / "events.ndjson", raw_events(3))
        result = runner().invoke(app, ["replay", str(events_file), "-p", str(root), "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary[0]["syncs"] == [{"sync": "orders", "delivered": 2, "archived": 1}]
    assert summary[0]["events"] == 3


def test_replay_dry_run_stores_and_sends_nothing(tmp_path):
    with FakeServer() as server:
        root = write_project(
            tmp_path / "p", {"orders": {"destination": "api"}}, {"api": server.url}
        )
        events_file = write_ndjson(tmp_path / "events.ndjson", raw_events(4))
        result = runner().invoke(
            app, ["replay", str(events_file), "-p", str(root), "--dry-run", "--json"]
        )
        assert result.exit_code == 0, result.stderr
        assert server.requests == []
    assert json.loads(result.stdout)[0]["syncs"] == [{"sync": "orders", "would_deliver": 4}]
    assert not (root / "state.db").exists()


def test_replay_with_sync_selects_only_that_sync_and_refuses_unknown_ones(tmp_path):
    with FakeServer() as a, FakeServer() as b:
        root = write_project(
            tmp_path / "p",
            {"to-a": {"destination": "a"}, "to-b": {"destination": "b"}},
            {"a": a.url, "b": b.url},
        )
        events_file = write_ndjson(tmp_path / "events.ndjson", raw_events(2))
        result = runner().invoke(
            app, ["replay", str(events_file), "-p", str(root), "--sync", "to-b"]
        )
        assert result.exit_code == 0, result.stderr
        assert a.requests == [] and len(b.requests) == 2
        unknown = runner().invoke(
            app, ["replay", str(events_file), "-p", str(root), "--sync", "nope"]
        )
    assert unknown.exit_code == 2
    assert "unknown sync 'nope'" in unknown.stderr


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_replay_killed_mid_way_and_restarted_loses_nothing(tmp_path, workers):
    def answer(req: Received) -> Reply:
        time.sleep(0.005)
        return Reply(200, {"ok": True})

    # With workers: a file of several chunks, killed while they may still run.
    count, batch = (3000, 20) if workers == "0" else (12000, 100)
    with FakeServer(answer) as server:
        root = write_project(
            tmp_path / "p",
            {"orders": {"destination": "api", "delivery": {"batch_size": batch, "concurrency": 2}}},
            {"api": server.url},
        )
        events_file = write_ndjson(tmp_path / "events.ndjson", raw_events(count))
        command = [sys.executable, "-m", "streamctl", "replay", str(events_file), "-p", str(root)]
        command += ["--workers", workers]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        enough = 30 if workers == "0" else 5
        while (
            len(server.requests) < enough and process.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        children: set[int] = set()
        for _ in range(5):  # workers start on demand: look a few times
            children.update(descendants(process.pid))
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        settled = -1
        while settled != len(server.requests):  # the server reads what was sent before the kill
            settled = len(server.requests)
            time.sleep(0.3)
        sent_before = len(server.requests)
        before_kill = set(received_ns(server.bodies()))
        assert sent_before < count // batch  # it was killed mid-way
        assert len(children) >= (2 if workers == "2" else 0)  # tracker, fork server, workers?
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in children if alive(pid)]  # no orphan left behind

        result = runner().invoke(app, ["replay", str(events_file), "-p", str(root), "--json"])
        assert result.exit_code == 0, result.stderr
        received = received_ns(server.bodies())
    assert set(received) == set(range(count))
    assert statuses(root, "orders") == {"delivered": count}
    # Only sends whose record the kill prevented can have gone out twice.
    twice = {n for n, seen in Counter(received).items() if seen > 1}
    assert twice <= before_kill


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.append(int(child))
            found.extend(descendants(int(child)))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_errors_json_show_and_retry_hits_only_the_failed_sync(tmp_path):
    with FakeServer() as a, FakeServer(lambda req: Reply(400, {"error": "bad key"})) as b:
        root = write_project(
            tmp_path / "p",
            {"to-a": {"destination": "a"}, "to-b": {"destination": "b"}},
            {"a": a.url, "b": b.url},
        )
        deliver(root, make_events(3))
        assert statuses(root, "to-b") == {"archived": 3}

        listed = runner().invoke(app, ["errors", "-p", str(root), "--json"])
        assert listed.exit_code == 0, listed.stderr
        errors = [json.loads(line) for line in listed.stdout.splitlines()]
        assert len(errors) == 3
        assert all(set(e) >= ERROR_KEYS for e in errors)
        assert {(e["sync"], e["status"], e["stage"], e["status_code"]) for e in errors} == {
            ("to-b", "archived", "delivery", 400)
        }

        shown = runner().invoke(app, ["errors", "show", str(errors[0]["id"]), "-p", str(root)])
        assert shown.exit_code == 0, shown.stderr
        assert "attempt 1" in shown.stdout and "HTTP 400" in shown.stdout
        assert "bad key" in shown.stdout  # the response
        assert '"messageId"' in shown.stdout  # the event

        a_before = len(a.requests)
        b.answer = lambda req: Reply(200, {"ok": True})
        retried = runner().invoke(app, ["errors", "retry", "-p", str(root)])
        assert retried.exit_code == 0, retried.stderr
        assert "3 delivered" in retried.stderr
        assert len(a.requests) == a_before  # the sync that succeeded is never sent again
        assert sorted(received_ns([r.json() for r in b.requests[-3:]])) == [0, 1, 2]
    assert statuses(root, "to-b") == {"delivered": 3}
    assert statuses(root, "to-a") == {"delivered": 3}
    empty = runner().invoke(app, ["errors", "-p", str(root), "--json"])
    assert empty.stdout == ""


def test_errors_filters_by_sync_status_and_since(tmp_path):
    with FakeServer(lambda req: Reply(400, "no")) as bad, FakeServer() as good:
        root = write_project(
            tmp_path / "p",
            {"to-bad": {"destination": "bad"}, "to-good": {"destination": "good"}},
            {"bad": bad.url, "good": good.url},
        )
        deliver(root, make_events(2))

    def listed(*args: str) -> list[dict]:
        result = runner().invoke(app, ["errors", "-p", str(root), "--json", *args])
        assert result.exit_code == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert len(listed("--sync", "to-bad")) == 2
    assert listed("--sync", "to-good") == []
    assert listed("--status", "retrying") == []
    assert len(listed("--status", "failed")) == 2
    assert len(listed("--since", "1h")) == 2
    assert listed("--since", "2099-01-01T00:00:00Z") == []
    bad_since = runner().invoke(app, ["errors", "-p", str(root), "--since", "yesterday-ish"])
    assert bad_since.exit_code == 2


def test_status_json_and_table(tmp_path):
    answers = iter([Reply(503, "busy")])
    with FakeServer(lambda req: next(answers, Reply(200, {"ok": True}))) as server:
        root = write_project(
            tmp_path / "p",
            {
                "orders": {
                    "destination": "api",
                    "filter": {"field": "properties.n", "op": "lt", "value": 3},
                }
            },
            {"api": server.url},
        )
        deliver(root, make_events(5))
    result = runner().invoke(app, ["status", "-p", str(root), "--json"])
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)["syncs"]
    assert set(row) >= STATUS_KEYS
    assert (row["received"], row["delivered"], row["filtered"], row["archived"]) == (5, 3, 2, 0)
    assert row["error_rate"] == 0.25  # 1 failed attempt out of 4
    assert set(row["latency_ms"]) == {"p50", "p95", "p99"} and row["latency_ms"]["p50"] is not None
    table = runner().invoke(app, ["status", "-p", str(root)])
    assert table.exit_code == 0 and "streamctl status" in table.stdout


def test_explain_tells_the_story_of_one_event(tmp_path):
    answers = iter([Reply(500, "oops")])
    with FakeServer(lambda req: next(answers, Reply(200, {"ok": True}))) as server:
        root = write_project(
            tmp_path / "p",
            {
                "orders": {"destination": "api"},
                "none": {
                    "destination": "api",
                    "filter": {"field": "event", "op": "eq", "value": "x"},
                },
            },
            {"api": server.url},
        )
        deliver(root, make_events(1))
    result = runner().invoke(app, ["explain", "m-0", "-p", str(root)])
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "received on source web" in text
    assert "sync orders: delivered" in text
    assert "attempt 1" in text and "HTTP 500" in text and "oops" in text
    assert "attempt 2" in text and "HTTP 200" in text
    assert "sync none: filtered" in text
    as_json = runner().invoke(app, ["explain", "m-0", "-p", str(root), "--json"])
    story = json.loads(as_json.stdout)
    assert {d["status"] for d in story["receipts"][0]["deliveries"]} == {"delivered", "filtered"}
    missing = runner().invoke(app, ["explain", "nope", "-p", str(root)])
    assert missing.exit_code == 1 and "no event with messageId 'nope'" in missing.stderr


def test_outputs_redact_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", "s3cr3t-token-value")
    with FakeServer(
        lambda req: Reply(401, {"error": f"bad token {req.headers.get('x-token')}"})
    ) as server:
        root = write_project(
            tmp_path / "p", {"orders": {"destination": "api"}}, {"api": server.url}
        )
        config = json.loads((root / "streamctl.yaml").read_text())
        config["destinations"]["api"]["config"]["headers"] = {"X-Token": "${HOOK_TOKEN}"}
        (root / "streamctl.yaml").write_text(json.dumps(config))
        deliver(root, make_events(1))
    assert "s3cr3t-token-value" in rows(root, "SELECT response FROM deliveries")[0][0]
    for args in (
        ["errors", "--json"],
        ["errors", "show", "1"],
        ["explain", "m-0"],
        ["explain", "m-0", "--json"],
    ):
        result = runner().invoke(app, [*args, "-p", str(root)])
        assert result.exit_code == 0, result.stderr
        assert "s3cr3t-token-value" not in result.stdout
        assert "***" in result.stdout or args == ["errors", "--json"]  # the list has no response


def test_store_prune_removes_old_records(tmp_path):
    with FakeServer() as server:
        root = write_project(
            tmp_path / "p", {"orders": {"destination": "api"}}, {"api": server.url}
        )
        deliver(root, make_events(2))
    kept = runner().invoke(app, ["store", "prune", "-p", str(root)])
    assert kept.exit_code == 0 and rows(root, "SELECT count(*) FROM events")[0][0] == 2
    time.sleep(0.01)
    pruned = runner().invoke(app, ["store", "prune", "-p", str(root), "--older-than", "1ms"])
    assert pruned.exit_code == 0, pruned.stderr
    assert "2 events" in pruned.stderr
    assert rows(root, "SELECT count(*) FROM events")[0][0] == 0
    assert rows(root, "SELECT count(*) FROM attempts")[0][0] == 0


def test_replay_with_worker_processes_records_and_delivers_everything_once(tmp_path):
    with FakeServer() as server:
        root = write_project(
            tmp_path / "p",
            {"orders": {"destination": "api", "delivery": {"batch_size": 7}}},
            {"api": server.url},
        )
        events = raw_events(300)
        events_file = write_ndjson(
            tmp_path / "events.ndjson", [*events, *events[:10]], {50: "nope"}
        )
        result = runner().invoke(
            app, ["replay", str(events_file), "-p", str(root), "--workers", "2", "--json"]
        )
        assert result.exit_code == 0, result.stderr
        assert sorted(received_ns(server.bodies())) == list(range(300))
    summary = json.loads(result.stdout)[0]
    assert (summary["events"], summary["duplicates"], summary["bad_lines"]) == (300, 10, 1)
    assert summary["bad"][0]["line"] == 51
    assert statuses(root, "orders") == {"delivered": 300}
    assert rows(root, "SELECT count(*) FROM events WHERE duplicate = 1")[0][0] == 10


def test_replay_file_starts_its_own_workers_from_a_fork_server(tmp_path):
    # The CLI forks its workers before opening the store; a library caller (threads
    # running, store open) gets them from a fork server instead.
    with FakeServer() as server:
        root = write_project(
            tmp_path / "p",
            {"orders": {"destination": "api", "delivery": {"batch_size": 7}}},
            {"api": server.url},
        )
        # Bad lines in the first, a middle and the last of the workers' ranges.
        bad = {20: "{", 160: "[1]", 300: "null"}
        events_file = write_ndjson(tmp_path / "events.ndjson", raw_events(300), bad)
        project = load_project(root)
        with SqliteStore.for_project(project) as store:
            report = asyncio.run(
                replay_file(
                    project, events_file, source="web", store=store, workers=2, chunk_size=50
                )
            )
        assert sorted(received_ns(server.bodies())) == list(range(300))
    assert (report.events, report.bad_lines) == (300, 3)
    assert [line.line for line in report.bad] == [21, 161, 301]
    assert report.by_sync["orders"]["delivered"] == 300
    assert statuses(root, "orders") == {"delivered": 300}


def test_contract_violations_are_listed_shown_and_explained(tmp_path):
    with FakeServer() as server:
        root = write_project(
            tmp_path / "p", {"orders": {"destination": "api"}}, {"api": server.url}
        )
        config = json.loads((root / "streamctl.yaml").read_text())
        config["sources"]["web"]["contract"] = "web"
        (root / "streamctl.yaml").write_text(json.dumps(config))
        (root / "contracts").mkdir()
        (root / "contracts" / "web.yaml").write_text(
            json.dumps(
                {
                    "name": "web",
                    "on_undeclared_event": "allow",
                    "events": [
                        {
                            "name": "Order Completed",
                            "on_violation": "block",
                            "properties": {
                                "type": "object",
                                "properties": {"n": {"type": "integer", "maximum": 1}},
                            },
                        }
                    ],
                }
            )
        )
        deliver(root, make_events(3))  # n = 0, 1 pass; n = 2 breaks `maximum`
        assert sorted(received_ns(server.bodies())) == [0, 1]
    result = runner().invoke(app, ["errors", "-p", str(root), "--stage", "contract", "--json"])
    assert result.exit_code == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(e["status"], e["stage"], e["message_id"]) for e in listed} == {
        ("blocked", "contract", "m-2")
    }
    violation = next(e for e in listed if str(e["id"]).startswith("v"))
    assert "/properties/n" in violation["error"]
    shown = runner().invoke(app, ["errors", "show", violation["id"], "-p", str(root)])
    assert shown.exit_code == 0 and "schema at /properties/n" in shown.stdout
    explained = runner().invoke(app, ["explain", "m-2", "-p", str(root)])
    assert "contract: blocked" in explained.stdout
    assert "sync orders: blocked by the contract" in explained.stdout
