"""The PostgreSQL `EventQueue`: one ingest queue shared by every node of a store.

    queue = store.queue                        # PostgresEventQueue
    queue.append_many([("web", events), ...])  # one transaction, flushed to disk: durable
    batch = queue.claim(5000)                  # rows leased to this node
    store.record_and_ack(encoded, [q.id for q in batch], ...)  # outcome and ack: one transaction

As in SQLite, one row per append (an HTTP request's events as one JSON array). Any
node's processor may claim any row: a claim sets the row's `owner` to the node, in
an UPDATE over `FOR UPDATE SKIP LOCKED`, so two processors never take the same row
and neither waits for the other. A row stays claimed until it is acknowledged (its
outcome recorded, in the same transaction) or its owner's lease runs out (the node
died): then any node claims it again, and dedupe on messageId makes that harmless.

`depth()` counts the whole store's waiting events (every node's listener answers 429
past `max_depth`), read from the database at most every `DEPTH_REFRESH` seconds and
kept up to date in between with this process's own appends and acks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import orjson

from streamctl.core.errors import StoreUnavailable
from streamctl.core.events import Event
from streamctl.store.postgres.leases import FREE_FOR_ME, Connection
from streamctl.store.queue import Overloaded, QueuedEvent
from streamctl.store.sqlite_queue import DEFAULT_MAX_DEPTH, _events_of


class QueueHost(Protocol):
    """What the queue asks of its store (`PostgresStore`)."""

    @property
    def node(self) -> int | None: ...

    @property
    def lease_seconds(self) -> float: ...

    def pg_transaction(self, durable: bool = False) -> AbstractContextManager[Connection]: ...


DEPTH_REFRESH = 0.2  # seconds
CLAIM_ROWS = 1_000  # rows looked at per claim (a row is one request: up to 500 KB of events)


class PostgresEventQueue:
    """`EventQueue` over the store's `queue` table, shared by every node."""

    def __init__(self, store: QueueHost, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.store = store
        self.max_depth = max_depth
        self._lock = threading.Lock()
        self._depth = 0
        self._read_at = 0.0
        self._events_per_row = 1.0  # of the rows claimed last
        self.depth()

    def append(self, source: str, events: Sequence[Event]) -> None:
        self.append_many([(source, events)])

    def append_many(self, groups: Sequence[tuple[str, Sequence[Event]]]) -> None:
        """Several appends in one durable transaction (group commit): one row per group."""
        count = sum(len(events) for _, events in groups)
        if count == 0:
            return
        if self.depth() + count > self.max_depth:
            raise Overloaded(retry_after=1.0)
        now = time.time()
        dumps = orjson.dumps
        with (
            self.store.pg_transaction(durable=True) as conn,
            conn.cursor().copy(
                "COPY queue (source, event, events, appended_at) FROM STDIN"
            ) as copy,
        ):
            for source, events in groups:
                if events:
                    copy.write_row((source, dumps(events).decode(), len(events), now))
        with self._lock:
            self._depth += count

    def claim(self, limit: int) -> list[QueuedEvent]:
        """Whole rows, oldest first, up to `limit` events (or one row, if it alone holds
        more), leased to this node. The rows looked at are locked (`SKIP LOCKED`: a
        concurrent claimer takes the next ones), as many as `limit` events likely
        need at the rows' recent size, so a claim holds back few it does not take."""
        store = self.store
        rows_wanted = max(1, min(CLAIM_ROWS, int(limit / self._events_per_row * 1.5) + 1))
        params = {"me": store.node, "lease": store.lease_seconds, "rows": rows_wanted}
        with store.pg_transaction() as conn:
            candidates = conn.execute(
                f"SELECT id, events FROM queue WHERE {FREE_FOR_ME}"
                " AND owner IS DISTINCT FROM %(me)s ORDER BY id LIMIT %(rows)s"
                " FOR UPDATE SKIP LOCKED",
                params,
            ).fetchall()
            chosen: list[int] = []
            taken = 0
            for row_id, count in candidates:
                if chosen and taken + count > limit:
                    break
                chosen.append(row_id)
                taken += count
            if not chosen:
                return []
            self._events_per_row = max(1.0, taken / len(chosen))
            rows = conn.execute(
                "UPDATE queue SET owner = %(me)s WHERE id = ANY(%(ids)s)"
                " RETURNING id, source, event",
                {**params, "ids": chosen},
            ).fetchall()
        rows.sort(key=lambda r: r[0])
        new = tuple.__new__
        return [
            new(QueuedEvent, (row_id, source, event))
            for row_id, source, text in rows
            for event in _events_of(text)
        ]

    def ack(self, ids: Sequence[int]) -> None:
        """Delete these rows (an id repeated, one per event of its row, counts once)."""
        if not ids:
            return
        with self.store.pg_transaction() as conn:
            acked = self.ack_in(conn, ids)
        self.dropped(acked)

    def ack_in(self, conn: Connection, ids: Sequence[int]) -> int:
        """`ack` inside the caller's transaction (`record_and_ack`); the events acked."""
        row = conn.execute(
            "WITH gone AS (DELETE FROM queue WHERE id = ANY(%s) RETURNING events)"
            " SELECT coalesce(sum(events), 0) FROM gone",
            [list(dict.fromkeys(ids))],
        ).fetchone()
        return int(row[0]) if row else 0

    def dropped(self, count: int) -> None:
        """`count` events left the queue (acked in a transaction of the store's)."""
        with self._lock:
            self._depth = max(0, self._depth - count)

    def rewind(self) -> None:
        """Hand this node's claimed, unacknowledged rows back (a processor stopped)."""
        with self.store.pg_transaction() as conn:
            conn.execute("UPDATE queue SET owner = NULL WHERE owner = %s", [self.store.node])

    def depth(self) -> int:
        """Events waiting in the store's queue, every node's; while the database is
        unreachable, the last count read (`/metrics` still answers)."""
        if time.monotonic() - self._read_at < DEPTH_REFRESH:
            return self._depth
        try:
            with self.store.pg_transaction() as conn:
                row = conn.execute("SELECT coalesce(sum(events), 0) FROM queue").fetchone()
        except StoreUnavailable:
            return self._depth
        with self._lock:
            self._depth = int(row[0]) if row else 0
            self._read_at = time.monotonic()
        return self._depth
