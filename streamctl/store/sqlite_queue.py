"""The SQLite `EventQueue` (streamctl.store.queue): the one-machine ingest queue.

    store = SqliteStore.open(project.store_file)
    queue = store.queue                          # SqliteEventQueue, shares the writer
    queue.append("web", [event, ...])            # one transaction, fsynced: durable on return
    batch = queue.claim(1000)                    # [QueuedEvent(id, source, event), ...]
    ...                                          # process, record the outcomes
    queue.ack([q.id for q in batch])             # or store.record_and_ack(..., entries=ids)

One row per append: the events of one `append` (one HTTP request, for the
listener) are serialised once, as one JSON array, and share the row's id, so they
are claimed together and acked together (`ack` of that id). Rows written before
schema 4 hold one event object each; both are read. `append_many` writes several
appends in one transaction, so the listener's group commit (many requests in one
call) pays one fsync for all of them. Appending raises `Overloaded` when `max_depth`
events wait unprocessed: the listener then answers 429 with Retry-After instead of
growing without bound.

`claim` hands out each row once per process (a cursor over the AUTOINCREMENT ids);
rows claimed and never acked (the process died) are handed out again by the next
process, which is why processors dedupe on (source, messageId).
`append` is thread-safe (the store's writer lock); call it from a thread
(`asyncio.to_thread`) in async code, since it blocks for the fsync.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

import orjson

from streamctl.core.events import Event
from streamctl.store.connection import SqliteConnection
from streamctl.store.queue import Overloaded, QueuedEvent
from streamctl.store.shard import Shard

# The queue lives on disk, not in memory: a bound this size (about 0.7 GB of SQLite at
# ~700 bytes an event) absorbs a burst of several minutes at full ingest speed while
# delivery catches up, and still turns a never-ending overload into 429s.
DEFAULT_MAX_DEPTH = 1_000_000
# With `run --workers N` other processes acknowledge: the workers report what they
# acknowledged (streamctl.monitoring.relay -> `dropped`), and the listener counts the
# table at most this often, to correct what a killed worker did not report. Counting
# is costly: the sum reads every queued row whole (100-event rows overflow their
# page): 70 ms for 300,000 queued events, which every 0.2 s took a third of the
# listener's core during a burst.
SHARED_DEPTH_REFRESH = 5.0  # seconds


class SqliteEventQueue:
    """`EventQueue` over the store's `queue` table."""

    def __init__(self, connection: SqliteConnection, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.connection = connection
        self.max_depth = max_depth
        self._claimed_up_to = 0
        self._depth_lock = threading.Lock()
        self._depth = self._count()
        self.shard: Shard | None = None  # claim only this worker's rows (streamctl.store.shard)
        self.acked_elsewhere = False  # `depth` counts the table (`run --workers N`)
        self.on_dropped: Callable[[int], None] | None = None  # a worker tells the listener
        self._counted_at = time.monotonic()

    def _count(self) -> int:
        return int(self.connection.row("SELECT coalesce(sum(events), 0) FROM queue")[0])

    def append(self, source: str, events: Sequence[Event]) -> None:
        self.append_many([(source, events)])

    def append_many(self, groups: Sequence[tuple[str, Sequence[Event]]]) -> None:
        """Several appends in one transaction (one fsync): for group commit. Each group
        becomes one row, acked as a unit."""
        count = sum(len(events) for _, events in groups)
        if count == 0:
            return
        if self._depth + count > self.max_depth:
            raise Overloaded(retry_after=1.0)
        now = time.time()
        dumps = orjson.dumps
        rows = [
            (source, dumps(events).decode(), len(events), now)
            for source, events in groups
            if events
        ]
        with self.connection.durable_transaction() as conn:
            conn.executemany(
                "INSERT INTO queue (source, event, events, appended_at) VALUES (?, ?, ?, ?)", rows
            )
        with self._depth_lock:
            self._depth += count

    def claim(self, limit: int) -> list[QueuedEvent]:
        """Whole rows, oldest first, up to `limit` events (or one row, if it alone holds
        more); every event of a row carries the row's id."""
        rows: list[tuple[int, str, str]] = []
        with self.connection.lock:
            mine = "" if self.shard is None else f" AND {self.shard.queue_rows()}"
            cursor = self.connection.conn.execute(
                f"SELECT id, source, event, events FROM queue WHERE id > ?{mine} ORDER BY id",
                [self._claimed_up_to],
            )
            try:
                taken = 0
                for row_id, source, text, count in cursor:  # reads only the rows it takes
                    if rows and taken + count > limit:
                        break
                    rows.append((row_id, source, text))
                    taken += count
                    if taken >= limit:
                        break
            finally:
                cursor.close()
            if rows:
                self._claimed_up_to = rows[-1][0]
        new = tuple.__new__
        return [
            new(QueuedEvent, (row_id, source, event))
            for row_id, source, text in rows
            for event in _events_of(text)
        ]

    def ack(self, ids: Sequence[int]) -> None:
        """Delete these rows (an id repeated, one per event of its row, counts once)."""
        if ids:
            with self.connection.transaction() as conn:
                events = self.ack_in(conn, ids)
            self.dropped(events)

    def ack_in(self, conn: sqlite3.Connection, ids: Sequence[int]) -> int:
        """`ack` inside a transaction the caller holds (`SqliteStore.record_and_ack`
        records the entries' outcomes in it): the entries go if and only if it commits.
        Returns the events they held, for `dropped` once it has."""
        marks = orjson.dumps(list(dict.fromkeys(ids))).decode()
        (events,) = conn.execute(
            "SELECT coalesce(sum(events), 0) FROM queue WHERE id IN (SELECT value FROM json_each(?))",
            [marks],
        ).fetchone()
        conn.execute("DELETE FROM queue WHERE id IN (SELECT value FROM json_each(?))", [marks])
        return int(events)

    def dropped(self, events: int) -> None:
        """`events` left the queue: the transaction of their `ack_in` committed."""
        with self._depth_lock:
            self._depth = max(0, self._depth - events)
        if self.on_dropped is not None:
            self.on_dropped(events)

    def rewind(self) -> None:
        """Hand out again every event not yet acked (a processor stopped, another starts)."""
        with self.connection.lock:
            self._claimed_up_to = 0

    def depth(self) -> int:
        if self.acked_elsewhere and time.monotonic() - self._counted_at >= SHARED_DEPTH_REFRESH:
            counted = self._count()
            with self._depth_lock:
                self._depth, self._counted_at = counted, time.monotonic()
        return self._depth


def _events_of(text: str) -> list[Event]:
    """A row's events: a JSON array (one append), or one object (rows before schema 4)."""
    value = orjson.loads(text)
    return value if isinstance(value, list) else [value]
