"""`streamctl run --workers N`: the pipeline and delivery in worker processes on SQLite.

Real processes throughout: `python -m streamctl run` with its workers, a fake
webhook on 127.0.0.1 counting every messageId it is sent, the project's SQLite file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path

from tests.fakes.sink import write_sink_project
from tests.listener_harness import ListenerProcess
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


def rows(store: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(store) as conn:
        return conn.execute(sql).fetchall()


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
