"""`streamctl run --workers N`: the pipeline and delivery in worker processes on SQLite.

Real processes throughout: `python -m streamctl run` with its workers, a fake
webhook on 127.0.0.1 counting every messageId it is sent, the project's SQLite file.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

from tests.fakes.sink import write_sink_project
from tests.listener_harness import ListenerProcess
from tests.store_rows import store_rows as rows
from tests.test_postgres_nodes import WRITE_KEY, post_batch, wait_for


def write_project(root: Path, sink_url: str) -> Path:
    return write_sink_project(root, ".streamctl/state.db", sink_url, WRITE_KEY)


def post_concurrently(url: str, batches: list[list[str]]) -> list[str]:
    """Post the batches from 4 threads; the messageIds answered 200."""
    accepted: list[str] = []
    lock = threading.Lock()

    def post(chunk: list[list[str]]) -> None:
        for ids in chunk:
            if post_batch(url, ids) == 200:
                with lock:
                    accepted.extend(ids)

    threads = [threading.Thread(target=post, args=(batches[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted


def worker_pids(listener_pid: int) -> list[int]:
    """The workers: children of the fork server, the listener's child."""

    def children(pid: int) -> list[int]:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]

    return [worker for server in children(listener_pid) for worker in children(server)]


def test_two_workers_share_the_queue_and_deliver_each_event_once(tmp_path, sink):
    root = write_project(tmp_path / "project", sink.url)
    batches = [[f"b{b}-e{e}" for e in range(25)] for b in range(40)]
    with ListenerProcess(root, "--workers", "2") as run:
        accepted = post_concurrently(run.url, batches)
        assert len(accepted) == 1000
        wait_for(lambda: sink.count() == 1000, what="every event at the sink")
        assert run.terminate() == 0
    assert set(sink.received) == set(accepted)
    assert set(sink.received.values()) == {1}
    store = root / ".streamctl" / "state.db"
    assert rows(store, "SELECT count(*) FROM queue") == [(0,)]
    owners = dict(rows(store, "SELECT owner, count(*) FROM deliveries GROUP BY owner"))
    assert set(owners) == {1, 2}, owners  # both workers processed and delivered
    assert sum(owners.values()) == 1000


def test_a_worker_killed_mid_delivery_is_restarted_and_loses_nothing(tmp_path, sink):
    root = write_project(tmp_path / "project", sink.url)
    sink.hold()  # deliveries stay in flight: the killed worker has open ones
    with ListenerProcess(root, "--workers", "2") as run:
        assert run.proc is not None
        first = post_concurrently(run.url, [[f"a{b}-e{e}" for e in range(20)] for b in range(10)])
        wait_for(lambda: len(sink.arrived) > 0, what="deliveries under way")
        workers = worker_pids(run.proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        second = post_concurrently(run.url, [[f"z{b}-e{e}" for e in range(20)] for b in range(10)])
        sink.release()
        wait_for(lambda: "exited" in run.stderr, what="the listener to see the worker exit")
        accepted = set(first) | set(second)
        assert len(accepted) == 400
        wait_for(lambda: accepted <= set(sink.received), what="every event answered 200 delivered")
        wait_for(lambda: len(worker_pids(run.proc.pid)) == 2, what="the worker restarted")
        assert workers[0] not in worker_pids(run.proc.pid)
        assert run.terminate() == 0
    store = root / ".streamctl" / "state.db"
    assert rows(store, "SELECT count(*) FROM queue") == [(0,)]
    assert rows(store, "SELECT count(*) FROM deliveries WHERE status != 'delivered'") == [(0,)]


# -- what workers decide and send, seen by the listener ------------------------------------------


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the listener's /metrics (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return next(
        (float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0
    )


def sync_events(url: str, status: str) -> float:
    return metric(url, "streamctl_sync_events_total", status=status, sync="web-to-sink")


def deliver_tracks_only(root: Path) -> None:
    """web-to-sink's event type takes track calls only: identify calls are filtered."""
    path = root / "syncs" / "web-to-sink.yaml"
    sync = json.loads(path.read_text())
    sync["event_types"][0]["filter"] = {"field": "type", "op": "eq", "value": "track"}
    path.write_text(json.dumps(sync))


def post_identifies(url: str, message_ids: list[str]) -> int:
    """Identify calls (filtered by `deliver_tracks_only`)."""
    batch = [{"type": "identify", "userId": m, "messageId": m} for m in message_ids]
    return httpx.post(f"{url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, "")).status_code


def test_metrics_count_every_outcome_of_the_workers_once(tmp_path, sink):
    root = write_project(tmp_path / "project", sink.url)
    deliver_tracks_only(root)
    sink.refused = {f"b{b}-e0" for b in range(10)}  # answered 400: failed and archived
    with ListenerProcess(root, "--workers", "2") as run:
        accepted = post_concurrently(
            run.url, [[f"b{b}-e{e}" for e in range(20)] for b in range(10)]
        )
        assert len(accepted) == 200
        assert post_identifies(run.url, [f"who-{n}" for n in range(30)]) == 200

        def counted() -> bool:
            return (
                sync_events(run.url, "delivered") == 190
                and sync_events(run.url, "archived") == 10
                and sync_events(run.url, "filtered") == 30
            )

        wait_for(counted, what="every outcome in /metrics")
        assert sync_events(run.url, "pending") == 200
        attempts = "streamctl_delivery_attempts_total"
        assert metric(run.url, attempts, outcome="success", sync="web-to-sink") == 190
        assert metric(run.url, attempts, outcome="failure", sync="web-to-sink") == 10
        latency = "streamctl_delivery_latency_seconds_count"
        assert metric(run.url, latency, sync="web-to-sink") == 190
        requests = "streamctl_delivery_request_seconds_count"
        assert metric(run.url, requests, sync="web-to-sink") == 200  # one event a request
        assert run.terminate() == 0
    store = root / ".streamctl" / "state.db"
    recorded = dict(rows(store, "SELECT status, count(*) FROM deliveries GROUP BY status"))
    assert recorded == {"delivered": 190, "archived": 10, "filtered": 30}


def test_counts_stay_right_when_a_worker_is_killed_and_restarted(tmp_path, sink):
    root = write_project(tmp_path / "project", sink.url)
    with ListenerProcess(root, "--workers", "2") as run:
        assert run.proc is not None
        first = post_concurrently(run.url, [[f"a{b}-e{e}" for e in range(20)] for b in range(10)])
        wait_for(lambda: sync_events(run.url, "delivered") == 200, what="the first 200 counted")
        killed = worker_pids(run.proc.pid)[0]
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: "exited" in run.stderr, what="the listener to see the worker exit")
        wait_for(lambda: len(worker_pids(run.proc.pid)) == 2, what="the worker restarted")
        assert killed not in worker_pids(run.proc.pid)
        assert sync_events(run.url, "delivered") == 200  # what the dead worker reported stays
        second = post_concurrently(run.url, [[f"z{b}-e{e}" for e in range(20)] for b in range(10)])
        assert len(first) + len(second) == 400
        wait_for(lambda: sink.count() == 400, what="every event at the sink")
        wait_for(lambda: sync_events(run.url, "delivered") == 400, what="400 counted")
        assert sync_events(run.url, "pending") == 400  # each decision once
        assert run.terminate() == 0


def test_tail_and_the_console_debugger_see_the_workers_decisions(tmp_path, sink):
    root = write_project(tmp_path / "project", sink.url)
    with ListenerProcess(root, "--workers", "2") as run:
        lines: list[dict[str, object]] = []
        frames: list[dict[str, object]] = []
        threading.Thread(target=lambda: lines.extend(follow_tail(run.url)), daemon=True).start()
        threading.Thread(
            target=lambda: frames.extend(follow_debugger(run.url)), daemon=True
        ).start()
        wait_for(lambda: bool(lines) and bool(frames), what="both followers connected")
        warm_up(run.url, [lines, frames])
        ids = [f"t{b}-e{e}" for b in range(4) for e in range(5)]
        assert post_batch(run.url, ids) == 200

        for followed in (lines, frames):
            delivered = functools.partial(outcomes, followed, "delivered")
            wait_for(lambda: set(ids) <= delivered(), what="every delivery followed")  # noqa: B023
            assert set(ids) <= outcomes(followed, "pending")
        assert run.terminate() == 0


def outcomes(records: list[dict[str, object]], status: str) -> set[object]:
    return {
        r["message_id"] for r in records if r.get("kind") == "outcome" and r["status"] == status
    }


def warm_up(url: str, followers: list[list[dict[str, object]]]) -> None:
    """Until every follower saw a warm-up event delivered by a worker: the workers know
    the feed is followed (a new warm-up event each second)."""
    deadline = time.monotonic() + 60
    for n in itertools.count():
        assert post_batch(url, [f"warm{n}-e0"]) == 200
        seen_by = time.monotonic() + 1.0
        while time.monotonic() < min(seen_by, deadline):
            if all(f"warm{n}-e0" in outcomes(records, "delivered") for records in followers):
                return
            time.sleep(0.05)
        assert time.monotonic() < deadline, "the followers never saw a worker's outcome"


def follow_tail(url: str) -> Iterator[dict[str, object]]:
    """`streamctl tail`'s feed; first a marker once subscribed."""
    with httpx.stream("GET", f"{url}/debug/tail", timeout=httpx.Timeout(10, read=None)) as reply:
        for line in reply.iter_lines():
            if line:
                record = orjson.loads(line)
                yield {"kind": "subscribed"} if record.get("kind") == "hello" else record


def follow_debugger(url: str) -> Iterator[dict[str, object]]:
    """The console Debugger's server-sent events; first a marker once connected."""
    timeout = httpx.Timeout(10, read=None)
    with httpx.stream("GET", f"{url}/console/debugger/stream", timeout=timeout) as reply:
        yield {"kind": "subscribed"}
        for line in reply.iter_lines():
            if line.startswith("data: "):
                yield orjson.loads(line[len("data: ") :])
