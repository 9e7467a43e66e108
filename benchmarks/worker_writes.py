"""CPU per event of each SQLite statement on the path of `run --workers N` (one process).

    python3 benchmarks/worker_writes.py [--events 50000]

What the listener and a worker ask of the SQLite store for every 1,000 events of
benchmarks/scale.py's load (ten 100-event appends), in order: `queue.append_many`
(the listener's group commit), `queue.claim`, `record_and_ack` (the events, their
deliveries, the queue rows deleted) and `record_attempts` (each delivered at its first
attempt, a batch of 100 per attempt), and a checkpoint every 10,000 events (every
0.5 s at 20,000 events/s, as the listener runs them). The pipeline, HTTP and the
processes around them are left out: this is the store's share alone, measured as the
CPU time (user + system) spent in each statement, per event, over a fresh store that
grows to `--events` events. Used to weigh the store-side changes of the scale-out
sizing (docs/scale-out.md): a statement not made saves the figure printed beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from ingest import sample_event

from streamctl.core.heap import tune_garbage_collector
from streamctl.core.outcomes import Status
from streamctl.core.rows import AttemptRecord, DecisionRow, EncodedResults, EventRow
from streamctl.store.connection import SqliteConnection
from streamctl.store.db import SqliteStore

SYNC = "web-to-sink"
# Events between two checkpoints: the listener's every 0.5 s at 20,000 events/s.
CHECKPOINT_EVENTS = 10_000
spent: Counter[str] = Counter()  # CPU seconds per statement (its first 50 characters)


class TimedConnection:
    """A sqlite3 connection that adds the CPU time of each statement to `spent`."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed(self._conn.execute, sql, args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed(self._conn.executemany, sql, args)

    def _timed(self, method: Any, sql: str, args: tuple[Any, ...]) -> Any:
        started = time.process_time()
        try:
            return method(sql, *args)
        finally:
            spent[sql[:50]] += time.process_time() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def batch() -> list[dict[str, Any]]:
    """100 events as the listener stores them (normalised: messageId, receivedAt...)."""
    events = []
    for i in range(100):
        event = sample_event(i)
        stamp = event["timestamp"]
        event |= {"messageId": str(uuid.uuid4()), "receivedAt": stamp, "sentAt": stamp}
        events.append(event)
    return events


def encoded(claimed: list[Any]) -> EncodedResults:
    """The pipeline's outcome for the bench sync: one PENDING delivery per event."""
    results = EncodedResults("web", pending_payloads=None)
    for index, item in enumerate(claimed):
        event = item.event
        message_id = event["messageId"]
        results.events.append(EventRow(message_id, orjson.dumps(event).decode(), None))
        payload = {"message_id": message_id, "event": event["event"], "user_id": event["userId"]}
        results.decisions.append(
            DecisionRow(
                index, message_id, SYNC, "custom", "pending", "delivery", None,
                event["userId"], orjson.dumps(payload).decode(),
            )
        )  # fmt: skip
    return results


def delivered(ids: list[int]) -> list[AttemptRecord]:
    now = time.time()
    return [
        AttemptRecord(
            ids[i : i + 100], SYNC, "sink", now, "delivered", 200, 3.0, None, None, None,
            Status.DELIVERED, 1, None, now,
        )
        for i in range(0, len(ids), 100)
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    tune_garbage_collector()
    opened = SqliteConnection.__init__

    def timed(self: SqliteConnection, conn: Any, *rest: Any, **options: Any) -> None:
        opened(self, TimedConnection(conn), *rest, **options)

    SqliteConnection.__init__ = timed  # type: ignore[method-assign]
    steps: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="streamctl-worker-writes-") as tmp:
        store = SqliteStore.open(Path(tmp) / "state.db")
        spent.clear()  # not the migrations
        done = 0
        while done < args.events:
            groups = [("web", batch()) for _ in range(10)]
            started = time.process_time()
            store.queue.append_many(groups)
            claimed = store.queue.claim(1000)
            steps["append + claim"] += time.process_time() - started
            started = time.process_time()
            results = encoded(claimed)
            steps["(building the rows: the pipeline's part)"] += time.process_time() - started
            started = time.process_time()
            entries = sorted({item.id for item in claimed})
            recorded = store.record_and_ack(results, entries, destinations={SYNC: "sink"})
            store.record_attempts(delivered([d.id for d in recorded.pending]))
            done += len(claimed)
            if done % CHECKPOINT_EVENTS == 0:
                store.checkpoint()
            steps["record_and_ack + record_attempts + checkpoint"] += time.process_time() - started
        store.close()
    print(f"{done:,} events, CPU microseconds an event:")
    for step, seconds in steps.items():
        print(f"  {seconds * 1e6 / done:6.2f}  {step}")
    print("by statement:")
    for statement, seconds in spent.most_common():
        if seconds * 1e6 / done >= 0.01:
            print(f"  {seconds * 1e6 / done:6.2f}  {statement}")


if __name__ == "__main__":
    main()
