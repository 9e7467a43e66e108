"""Many processes on one PostgreSQL store: `streamctl run` twice and `replay` at once,
a process killed with SIGKILL mid-delivery, and the database restarted under `run`.

Every process is a real `python -m streamctl` on 127.0.0.1; the destination is a
fake webhook that counts what it receives; the store is the suite's PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
from typer.testing import CliRunner

from streamctl.cli.main import app
from tests.fakes.sink import write_sink_project
from tests.listener_harness import ListenerProcess
from tests.services import PostgresService

WRITE_KEY = "pg-nodes-write-key"


def write_project(root: Path, store_url: str, sink_url: str) -> Path:
    return write_sink_project(root, store_url + "?lease=2s", sink_url, WRITE_KEY)


def event(message_id: str) -> dict[str, object]:
    """A track call; its user is the messageId's prefix (b3-e7: user b3)."""
    user = message_id.split("-")[0]
    return {"type": "track", "event": "Clicked", "userId": user, "messageId": message_id}


def post_batch(url: str, message_ids: list[str]) -> int:
    response = httpx.post(
        f"{url}/v1/batch",
        json={"batch": [event(m) for m in message_ids]},
        auth=(WRITE_KEY, ""),
        timeout=30,
    )
    return response.status_code


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def store_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_two_runs_and_a_replay_deliver_and_record_each_event_once(tmp_path, postgres_url, sink):
    root = write_project(tmp_path / "project", postgres_url, sink.url)
    http_ids = [f"h{i}" for i in range(300)]
    replay_ids = [f"r{i}" for i in range(1500)] + http_ids[:100]  # 100 also came over HTTP
    events_file = tmp_path / "events.ndjson"
    events_file.write_text("".join(json.dumps(event(m)) + "\n" for m in replay_ids))
    with ListenerProcess(root) as first, ListenerProcess(root) as second:
        replay = subprocess.Popen(
            [sys.executable, "-m", "streamctl", "replay", str(events_file), "--project",
             str(root), "--workers", "2", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for start in range(0, len(http_ids), 50):
            chunk = http_ids[start : start + 50]
            assert post_batch(first.url, chunk) == 200
            assert post_batch(second.url, chunk[::-1]) == 200  # every event reaches both
        out, err = replay.communicate(timeout=120)
        assert replay.returncode == 0, err
        unique = set(http_ids) | set(replay_ids)
        wait_for(lambda: sink.count() == len(unique), what="every event at the sink")
        wait_for(
            lambda: (
                store_rows(
                    postgres_url, "SELECT count(*) FROM deliveries WHERE status != 'delivered'"
                )
                == [(0,)]
            ),
            what="every delivery recorded delivered",
        )
    assert set(sink.received) == unique
    assert {n for n in sink.received.values()} == {1}  # nobody sent an event twice
    recorded = store_rows(
        postgres_url,
        "SELECT message_id, count(*) FROM events WHERE duplicate = 0 GROUP BY message_id",
    )
    assert len(recorded) == len(unique) and {n for _, n in recorded} == {1}
    deliveries = store_rows(postgres_url, "SELECT message_id FROM deliveries")
    assert sorted(m for (m,) in deliveries) == sorted(unique)
    duplicates = store_rows(postgres_url, "SELECT count(*) FROM events WHERE duplicate = 1")
    assert duplicates == [(300 + 100,)]  # each HTTP event twice; 100 replayed ones again
    report = json.loads(out)
    assert report[0]["events"] + report[0]["duplicates"] == len(replay_ids)


def test_a_killed_nodes_deliveries_are_finished_by_the_other_after_its_lease(
    tmp_path, postgres_url, sink
):
    root = write_project(tmp_path / "project", postgres_url, sink.url)
    ids = [f"k{i}" for i in range(200)]
    # One process a node (--workers 0): its sends stop with the SIGKILL, so the requests
    # that reached the sink by then are all it sent. (With worker processes, requests
    # already on the wire may arrive just after the snapshot below.)
    with ListenerProcess(root, "--workers", "0") as doomed:
        sink.hold()  # the doomed node's first sends hang at the destination
        assert post_batch(doomed.url, ids) == 200
        wait_for(
            lambda: store_rows(postgres_url, "SELECT count(*) FROM deliveries") == [(200,)],
            what="the events recorded",
        )
        owners = store_rows(postgres_url, "SELECT DISTINCT owner FROM deliveries")
        assert len(owners) == 1 and owners[0][0] is not None  # all leased to the doomed node
        with ListenerProcess(root, "--workers", "0") as survivor:
            wait_for(lambda: len(sink.arrived) >= 1, what="the doomed node's first sends")
            doomed.kill()
            with sink.lock:
                in_flight = set(sink.arrived)
            sink.release()
            wait_for(lambda: sink.count() == 200, what="the survivor to deliver everything")
            wait_for(
                lambda: (
                    store_rows(
                        postgres_url, "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
                    )
                    == [(200,)]
                ),
                what="every delivery recorded delivered",
            )
            assert survivor.proc is not None and survivor.proc.poll() is None
    # Sent once by the survivor alone: every event the killed node had not sent yet.
    assert len(in_flight) < 200
    assert {sink.received[m] for m in ids if m not in in_flight} == {1}
    taken_over = store_rows(postgres_url, "SELECT DISTINCT owner FROM deliveries")
    assert taken_over != owners  # the survivor's node now holds them


def test_run_answers_503_while_the_database_is_away_and_resumes_losing_nothing(
    tmp_path, postgres: PostgresService, postgres_url, sink
):
    root = write_project(tmp_path / "project", postgres_url, sink.url)
    with ListenerProcess(root) as node:
        assert post_batch(node.url, ["before"]) == 200
        wait_for(lambda: sink.count() == 1, what="the first event delivered")
        postgres.stop()
        try:
            assert post_batch(node.url, ["during"]) == 503  # never 200 for what is not stored
            ready = httpx.get(f"{node.url}/readyz", timeout=30)
            assert ready.status_code == 503
            assert httpx.get(f"{node.url}/metrics", timeout=30).status_code == 200
        finally:
            postgres.start()
        wait_for(lambda: httpx.get(f"{node.url}/readyz", timeout=30).status_code == 200,
                 what="/readyz to recover")  # fmt: skip
        accepted = []
        for i in range(20):
            if post_batch(node.url, [f"after{i}"]) == 200:
                accepted.append(f"after{i}")
        assert accepted == [f"after{i}" for i in range(20)]
        wait_for(lambda: sink.count() == 1 + len(accepted), what="events after the restart")
        assert node.proc is not None and node.proc.poll() is None
        assert "during" not in sink.received


def test_errors_retry_is_sent_once_by_one_of_the_running_nodes(tmp_path, postgres_url, sink):
    root = write_project(tmp_path / "project", postgres_url, sink.url)
    sink.refused.add("refused-1")
    with ListenerProcess(root) as first, ListenerProcess(root) as second:
        assert post_batch(first.url, ["fine-1", "refused-1"]) == 200
        wait_for(
            lambda: (
                store_rows(postgres_url, "SELECT status FROM deliveries ORDER BY message_id")
                == [("delivered",), ("archived",)]
            ),
            what="one delivered, one archived",
        )
        sink.refused.clear()
        retried = CliRunner().invoke(app, ["errors", "retry", "--queue-only", "-p", str(root)])
        assert retried.exit_code == 0, retried.output
        wait_for(
            lambda: (
                store_rows(
                    postgres_url, "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
                )
                == [(2,)]
            ),
            what="the retried delivery delivered",
        )
        assert second.proc is not None and second.proc.poll() is None
    assert sink.received == Counter({"fine-1": 1, "refused-1": 2})  # refused once, sent once
