"""The SQLite `EventQueue` (streamctl.store.queue): the one-machine ingest queue.

    store = Store.open(project.store_path)
    queue = store.queue                          # SqliteEventQueue, shares the writer
    queue.append("web", [event, ...])            # one transaction, fsynced: durable on return
    batch = queue.claim(1000)                    # [QueuedEvent(id, source, event), ...]
    ...                                          # process, record the outcomes
    queue.ack([q.id for q in batch])             # or Store.record_results(..., ack=ids)

`append` writes all its events in one transaction, so the listener's HTTP group
commit (many requests' events in one `append`) pays one fsync for all of them.
It raises `Overloaded` when `max_depth` events wait unprocessed: the listener then
answers 429 with Retry-After instead of growing without bound.

`claim` hands out each event once per process (a cursor over the AUTOINCREMENT
ids); events claimed and never acked (the process died) are handed out again by the
next process, which is why processors dedupe on (source, messageId).
`append` is thread-safe (the store's writer lock); call it from a thread
(`asyncio.to_thread`) in async code, since it blocks for the fsync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from streamctl.events import Event
from streamctl.store.queue import Overloaded, QueuedEvent

if TYPE_CHECKING:
    from streamctl.store.db import Store

DEFAULT_MAX_DEPTH = 200_000


class SqliteEventQueue:
    """`EventQueue` over the store's `queue` table."""

    def __init__(self, store: Store, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.store = store
        self.max_depth = max_depth
        self._claimed_up_to = 0
        self._depth_lock = threading.Lock()
        with store.lock:
            self._depth = int(store.conn.execute("SELECT count(*) FROM queue").fetchone()[0])

    def append(self, source: str, events: Sequence[Event]) -> None:
        self.append_many([(source, events)])

    def append_many(self, groups: Sequence[tuple[str, Sequence[Event]]]) -> None:
        """Several sources' events in one transaction (one fsync): for group commit."""
        count = sum(len(events) for _, events in groups)
        if count == 0:
            return
        if self._depth + count > self.max_depth:
            raise Overloaded(retry_after=1.0)
        now = time.time()
        dumps = orjson.dumps
        rows = [(source, dumps(e).decode(), now) for source, events in groups for e in events]
        with self.store.durable_transaction() as conn:
            conn.executemany(
                "INSERT INTO queue (source, event, appended_at) VALUES (?, ?, ?)", rows
            )
        with self._depth_lock:
            self._depth += count

    def claim(self, limit: int) -> list[QueuedEvent]:
        with self.store.lock:
            rows = self.store.conn.execute(
                "SELECT id, source, event FROM queue WHERE id > ? ORDER BY id LIMIT ?",
                [self._claimed_up_to, limit],
            ).fetchall()
            if rows:
                self._claimed_up_to = rows[-1][0]
        loads = orjson.loads
        return [QueuedEvent(row[0], row[1], loads(row[2])) for row in rows]

    def ack(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self.store.transaction() as conn:
            conn.execute(
                "DELETE FROM queue WHERE id IN (SELECT value FROM json_each(?))",
                [orjson.dumps(list(ids)).decode()],
            )
        self.forget(len(ids))

    def forget(self, count: int) -> None:
        """`count` events were acked by `Store.record_results(..., ack=ids)`."""
        with self._depth_lock:
            self._depth = max(0, self._depth - count)

    def rewind(self) -> None:
        """Hand out again every event not yet acked (a processor stopped, another starts)."""
        with self.store.lock:
            self._claimed_up_to = 0

    def depth(self) -> int:
        return self._depth
