"""The PostgreSQL store: the SQLite store's operations for many processes on many machines.

    store = PostgresStore.open("postgresql://streamctl:...@db:5432/events")  # migrates
    store.queue.append("web", events)            # the shared ingest queue
    recorded = store.record_encoded(encoded, destinations={"to-braze": "braze"})
    page = store.open_deliveries(["to-braze"], after_id=0, limit=1000)   # claimed: leased
    store.record_attempts(outcomes)
    store.close()                                # its open work goes back to the pool

The `streamctl.store.base.Store` protocol, as the SQLite store implements it, with
the same arguments and results, so the runtime, the delivery engine, replay and the
CLI drive either one. What differs is how several writers share the work
(docs/store.md, "Many processes"):

- Dedupe is enforced by the database: recording a batch inserts its messageIds into
  `message_ids` (primary key source, messageId) and keeps as new only those the
  insert got; two nodes recording the same event at once wait on the key, and the
  second finds it taken.
- Leases: each process registers a row in `nodes` and renews its heartbeat every
  lease/4 seconds. The deliveries it records, and the queue rows and deliveries it
  claims (`FOR UPDATE SKIP LOCKED`), carry its node id in `owner`. Another process
  takes a row only when it has no owner or its owner's heartbeat is older than the
  lease: a live process's work is never sent by another; a killed one's is taken
  over once its lease runs out. A clean stop hands its open rows back at once.
- Writes are COPY (events, deliveries, attempts): a batch is one round trip per
  table whatever its size. Ids come in blocks (`streamctl_reserve_ids`) so rows
  are linked before they are written, as in the SQLite store.
- Durability as in SQLite: `synchronous_commit` is off for the recording of
  decisions and attempts (atomic; a server crash may lose the last moments, which
  are then processed or sent again, never half-recorded) and on for the queue's
  appends, which the listener answers 200 for.

Connections come from a pool (psycopg_pool) of `pool_size` per process, each with a
statement timeout; a lost connection is replaced on its next use. While the database
is unreachable every operation raises `StoreUnavailable` (a `StoreError`) naming the
host and database, never the password.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from streamctl.core.errors import StoreError, StoreUnavailable
from streamctl.core.rows import (
    PENDING,
    AttemptRecord,
    DuplicateRow,
    EncodedResults,
    PendingDelivery,
    RecordedResults,
)
from streamctl.store.common import CommonOperations
from streamctl.store.console_queries import ConsoleOperations
from streamctl.store.db import (
    _PENDING_COLUMNS,
    DEDUPE_WINDOW,
    _pending,
    _pending_from_store,
    _same_attempts,
    _same_updates,
)
from streamctl.store.health import WriteHealth
from streamctl.store.postgres.leases import DB_NOW, FREE_FOR_ME, OPEN, Connection
from streamctl.store.postgres.location import PostgresLocation, parse_location
from streamctl.store.postgres.queue import PostgresEventQueue
from streamctl.store.postgres.rollups import PostgresRollups
from streamctl.store.postgres.schema import current_version, migrate
from streamctl.store.schema import message_key

POOL_TIMEOUT = 3.0  # seconds an operation waits for a connection before it fails
FAIL_FAST = 1.0  # seconds operations fail at once after the database was unreachable
CONNECT_TIMEOUT = 5  # seconds to reach the server (libpq's connect_timeout)
HEARTBEAT_EVERY = 0.25  # of the lease


class PostgresStore(CommonOperations, ConsoleOperations):
    """A process's pool of connections to a streamctl PostgreSQL database."""

    dialect = "postgresql"

    def __init__(
        self, location: PostgresLocation, pool: ConnectionPool[Connection], *, readonly: bool
    ) -> None:
        self.location = location
        self.readonly = readonly
        # Unreachable is StoreUnavailable, said by the processor; this stays for the
        # protocol (a full disk is the database server's to report).
        self.health = WriteHealth(location.describe())
        self.pool = pool
        self.lock = threading.RLock()  # the read-side queries' (shared with SQLite) habit
        self.conn = _Reader(self)
        self.node: int | None = None
        self._own_node = False
        self._queue: PostgresEventQueue | None = None
        self._stopping = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._unreachable: tuple[float, StoreUnavailable] | None = None  # (until, error)
        self._name = f"{socket.gethostname()}:{os.getpid()}"  # nodes.name

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls, url: str, *, readonly: bool = False, node: int | None = None, leases: bool = True
    ) -> PostgresStore:
        """Connect, migrate (unless `readonly`) and register this process as a node.
        `node`: join that node instead (replay's workers record for their parent);
        `leases` False: no node at all, for a process that claims no work (the console:
        its retry hands deliveries back unowned, for a running node to claim)."""
        location = parse_location(url)
        if readonly:
            _require_schema(location)
        else:
            migrate_url(url)
        pool: ConnectionPool[Connection] = ConnectionPool(
            location.conninfo,
            min_size=1,
            max_size=location.pool_size,
            kwargs=_connect_options(location),
            configure=_configurer(location),
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT,
            reconnect_timeout=365 * 86400.0,  # keep trying while the database is away
            name="streamctl-store",
            open=False,
        )
        try:
            pool.open(wait=True, timeout=POOL_TIMEOUT + CONNECT_TIMEOUT)
        except PoolTimeout as exc:
            raise _unavailable(location, exc) from None
        store = cls(location, pool, readonly=readonly)
        if not readonly and leases:
            store._join(node)
        return store

    def _join(self, node: int | None) -> None:
        if node is not None:
            self.node = node
            return
        with self._connection() as conn:
            row = conn.execute(
                f"INSERT INTO nodes (name, started_at, heartbeat_at) VALUES (%s, %s, {DB_NOW})"
                " RETURNING id",
                [self._name, time.time()],
            ).fetchone()
        assert row is not None
        self.node = int(row[0])
        self._own_node = True
        self._heartbeat = threading.Thread(
            target=self._beat, name="streamctl-store-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def _beat(self) -> None:
        """Renew this node's lease until closed; a failed renewal (the database is
        away) is tried again at the next beat."""
        every = self.location.lease_seconds * HEARTBEAT_EVERY
        while not self._stopping.wait(every):
            with contextlib.suppress(StoreError):
                self.heartbeat()

    @property
    def lease_seconds(self) -> float:
        return self.location.lease_seconds

    def heartbeat(self) -> None:
        """Renew the lease; a node forgotten while it could not beat (its rows were taken
        over) comes back under its own id, holding only what it still owns."""
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO nodes (id, name, started_at, heartbeat_at)"
                f" VALUES (%s, %s, %s, {DB_NOW})"
                f" ON CONFLICT (id) DO UPDATE SET heartbeat_at = {DB_NOW}",
                [self.node, self._name, time.time()],
            )

    def close(self) -> None:
        """Stop the heartbeat and hand this node's open work back (claimable at once)."""
        self._stopping.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self._own_node:
            with contextlib.suppress(StoreError):
                self.release()
        self.pool.close()

    def release(self) -> None:
        with self.pg_transaction() as conn:
            conn.execute(
                f"UPDATE deliveries SET owner = NULL, requeued = 1 WHERE owner = %s AND {OPEN}",
                [self.node],
            )
            conn.execute("UPDATE queue SET owner = NULL WHERE owner = %s", [self.node])
            conn.execute("DELETE FROM nodes WHERE id = %s", [self.node])

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def rollup_tables(self) -> PostgresRollups:
        return PostgresRollups(self)

    @property
    def queue(self) -> PostgresEventQueue:
        if self._queue is None:
            self._queue = PostgresEventQueue(self)
        return self._queue

    # -- connections and transactions ---------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A pooled connection (autocommit); database errors become StoreErrors.

        For `FAIL_FAST` seconds after the database was found unreachable, operations
        fail at once rather than each waiting for the pool's timeout: the listener
        answers 503 within milliseconds, and one operation a second looks again."""
        if self._unreachable is not None and time.monotonic() < self._unreachable[0]:
            raise self._unreachable[1]
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            if not _unreachable(exc):  # a statement refused, a timeout: the store is there
                text = self.location.redact(str(exc).strip())
                raise StoreError(f"{self.location.describe()}: {text}") from None
            failure = _unavailable(self.location, exc)
            self._unreachable = (time.monotonic() + FAIL_FAST, failure)
            raise failure from None
        self._unreachable = None

    @contextmanager
    def pg_transaction(self, durable: bool = False) -> Iterator[Connection]:
        """A transaction on a pooled connection (psycopg's `%s` placeholders). `durable`:
        its commit is flushed to the server's disk before it returns."""
        with self._connection() as conn, conn.transaction():
            if durable:
                conn.execute("SET LOCAL synchronous_commit = on")
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[_SqliteStyle]:
        """A transaction spoken to with `?` placeholders, as the SQL shared with the
        SQLite store writes them (`SqlReader`)."""
        with self.pg_transaction() as conn:
            yield _SqliteStyle(conn)

    def check_writable(self) -> None:
        """What `/readyz` asks: a connection, and a transaction on it."""
        with self.pg_transaction() as conn:
            conn.execute("SELECT 1")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def has_tables(self) -> bool:
        with self._connection() as conn:
            return current_version(conn) > 0

    # -- dedupe --------------------------------------------------------------------------

    def seen_message_ids(
        self,
        source: str,
        message_ids: Sequence[str],
        now: float | None = None,
        keys: Sequence[int] | None = None,
    ) -> set[str]:
        """The ids among `message_ids` already received on `source` within the last 24 h
        (a hint before the pipeline runs; recording decides, under the unique key)."""
        if not message_ids:
            return set()
        since = (time.time() if now is None else now) - DEDUPE_WINDOW
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT message_id FROM message_ids WHERE source = %s"
                " AND message_id = ANY(%s) AND received_at >= %s",
                [source, list(message_ids), since],
            ).fetchall()
        return {row[0] for row in rows}

    # -- pipeline outcomes ------------------------------------------------------------------

    def record_encoded(
        self,
        encoded: EncodedResults,
        *,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        now: float | None = None,
        dedupe: bool = True,
        build_pending: bool = True,
    ) -> RecordedResults:
        """Record events, decisions, violations and function errors in one transaction.
        Dedupe always happens, under the `message_ids` key (`dedupe` is the protocol's,
        for SQLite): events another writer recorded first are recorded as duplicates
        and their decisions dropped."""
        return self._record(encoded, destinations, duplicates, now, build_pending, ())

    def record_and_ack(
        self,
        encoded: EncodedResults,
        entries: Sequence[int],
        *,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        now: float | None = None,
    ) -> RecordedResults:
        """`record_encoded`, and delete these queue entries, in one transaction."""
        return self._record(encoded, destinations, duplicates, now, True, entries)

    def _record(
        self,
        encoded: EncodedResults,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow],
        now: float | None,
        build_pending: bool,
        entries: Sequence[int],
    ) -> RecordedResults:
        now = time.time() if now is None else now
        acked = 0
        encoded, repeated = encoded.split_duplicates(set())  # the same id twice in this batch
        duplicates = [*duplicates, *repeated]
        with self.pg_transaction() as conn:
            taken = self._claim_message_ids(conn, encoded.source, encoded.message_ids, now)
            if taken:
                encoded, found = encoded.split_duplicates(taken)
                duplicates.extend(found)
            first_event = _reserve(conn, "events_id_seq", len(encoded.events) + len(duplicates))
            first_delivery = _reserve(conn, "deliveries_id_seq", len(encoded.decisions))
            self._copy_events(conn, encoded, duplicates, first_event, now)
            self._copy_deliveries(conn, encoded, destinations, first_delivery, first_event, now)
            self._copy_problems(conn, encoded, first_event, now)
            if entries:
                acked = self.queue.ack_in(conn, entries)
        if acked:
            self.queue.dropped(acked)
        return RecordedResults(
            _pending(encoded, first_delivery, now) if build_pending else [],
            len(encoded.events),
            len(duplicates),
            first_delivery,
            encoded,
        )

    def _claim_message_ids(
        self, conn: Connection, source: str, message_ids: list[str], now: float
    ) -> set[str]:
        """Insert the batch's ids into `message_ids`; the ones another transaction holds
        (within 24 h) come back. Sorted, so two batches lock shared keys in one order."""
        if not message_ids:
            return set()
        fresh = conn.execute(
            "INSERT INTO message_ids (source, message_id, received_at)"
            " SELECT %s, m, %s FROM unnest(%s::text[]) AS m"
            " ON CONFLICT (source, message_id) DO UPDATE SET received_at = excluded.received_at"
            " WHERE message_ids.received_at < %s RETURNING message_id",
            [source, now, sorted(message_ids), now - DEDUPE_WINDOW],
        ).fetchall()
        return set(message_ids) - {row[0] for row in fresh}

    def _copy_events(
        self,
        conn: Connection,
        encoded: EncodedResults,
        duplicates: Sequence[DuplicateRow],
        first_id: int,
        now: float,
    ) -> None:
        if not encoded.events and not duplicates:
            return
        source = encoded.source
        with conn.cursor().copy(
            "COPY events (id, source, message_id, message_key, received_at, payload,"
            " contract_outcome, duplicate) FROM STDIN"
        ) as copy:
            for i, (message_id, payload, outcome) in enumerate(encoded.events):
                copy.write_row(
                    (first_id + i, source, message_id, message_key(message_id), now, payload,
                     outcome, 0)
                )  # fmt: skip
            after = first_id + len(encoded.events)
            for i, (dup_source, message_id, payload) in enumerate(duplicates):
                copy.write_row(
                    (after + i, dup_source, message_id, message_key(message_id), now, payload,
                     None, 1)
                )  # fmt: skip

    def _copy_deliveries(
        self,
        conn: Connection,
        encoded: EncodedResults,
        destinations: Mapping[str, str],
        first_id: int,
        first_event: int,
        now: float,
    ) -> None:
        if not encoded.decisions:
            return
        source, node = encoded.source, self.node
        with conn.cursor().copy(
            "COPY deliveries (id, event_id, message_id, source, sync, destination, event_type,"
            " status, stage, error, user_key, payload, created_at, next_attempt_at, owner)"
            " FROM STDIN"
        ) as copy:
            for i, d in enumerate(encoded.decisions):
                pending = d[4] == PENDING
                copy.write_row(
                    (first_id + i, first_event + d[0], d[1], source, d[2], destinations.get(d[2]),
                     d[3], d[4], d[5], d[6], d[7], d[8], now, now if pending else None,
                     node if pending else None)
                )  # fmt: skip

    def _copy_problems(
        self, conn: Connection, encoded: EncodedResults, first_event: int, now: float
    ) -> None:
        source = encoded.source
        if encoded.violations:
            with conn.cursor().copy(
                "COPY violations (event_id, message_id, source, contract, version, event_name,"
                " kind, pointer, message, outcome, at) FROM STDIN"
            ) as copy:
                for v in encoded.violations:
                    copy.write_row((first_event + v[0], v[1], source, *v[2:], now))
        if encoded.function_errors:
            with conn.cursor().copy(
                "COPY function_errors (event_id, message_id, sync, error, traceback, at) FROM STDIN"
            ) as copy:
                for f in encoded.function_errors:
                    copy.write_row((first_event + f[0], *f[1:], now))

    # -- delivery ------------------------------------------------------------------------

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Each attempt, and its delivery's new state, in one transaction. A delivery
        another node took over meanwhile (this one's lease ran out) keeps that node's state."""
        if not records:
            return
        attempts = _same_attempts(records)
        updates = _same_updates(records)
        with self.pg_transaction() as conn:
            with conn.cursor().copy(
                "COPY attempts (delivery_id, sync, destination, at, status, status_code,"
                " latency_ms, error, response, retry_after) FROM STDIN"
            ) as copy:
                for values, ids in attempts.items():
                    for delivery_id in ids:
                        copy.write_row((delivery_id, *values))
            conn.cursor().executemany(
                "UPDATE deliveries SET status = %s, attempts = %s, status_code = %s,"
                " response = %s, error = %s, latency_ms = %s, first_attempt_at = %s,"
                " last_attempt_at = %s, next_attempt_at = %s, finished_at = %s"
                " WHERE id = ANY(%s) AND (owner = %s OR owner IS NULL)",
                [(*values, ids, self.node) for values, ids in updates.items()],
            )

    def archive(self, deliveries: Sequence[PendingDelivery], reason: str, now: float) -> None:
        """Archive deliveries without an attempt (max_age passed before one could be made)."""
        if not deliveries:
            return
        with self.pg_transaction() as conn:
            conn.execute(
                "UPDATE deliveries SET status = 'archived', error = %s, finished_at = %s,"
                " next_attempt_at = NULL WHERE id = ANY(%s)",
                [reason, now, [d.id for d in deliveries]],
            )

    def open_deliveries(
        self, syncs: Sequence[str], after_id: int, limit: int
    ) -> list[PendingDelivery]:
        """Claim pending and retrying deliveries of `syncs` with id > after_id, oldest
        first: this node's own, unowned ones and those of nodes whose lease ran out.
        Rows another transaction holds are skipped, never waited for."""
        if not syncs:
            return []
        return self._claim(
            f"sync = ANY(%(syncs)s) AND {OPEN} AND id > %(after)s AND {FREE_FOR_ME}"
            " ORDER BY id LIMIT %(limit)s",
            {"syncs": list(syncs), "after": after_id, "limit": limit},
        )

    def take_requeued(self, syncs: Sequence[str]) -> list[PendingDelivery]:
        """Deliveries to add to this node's lanes (asked every second): those `streamctl
        errors retry` put back and those a stopped node handed back (both marked
        `requeued`: a partial index finds them), then those of nodes whose lease ran
        out, looked for only while such a node exists. A silent node whose rows are
        all taken over is forgotten."""
        if not syncs:
            return []
        params = {"syncs": list(syncs), "limit": TAKEOVER_PAGE}
        taken = self._claim(
            f"sync = ANY(%(syncs)s) AND {OPEN} AND requeued = 1 ORDER BY id LIMIT %(limit)s",
            params,
        )
        silent = self._silent_nodes()
        if silent and len(taken) < TAKEOVER_PAGE:
            orphans = self._claim(
                f"sync = ANY(%(syncs)s) AND {OPEN} AND owner = ANY(%(silent)s)"
                " ORDER BY id LIMIT %(limit)s",
                {**params, "silent": silent, "limit": TAKEOVER_PAGE - len(taken)},
            )
            if len(orphans) < TAKEOVER_PAGE - len(taken):
                self._forget_nodes(silent)
            taken = sorted([*taken, *orphans], key=lambda d: d.id)
        return taken

    def _silent_nodes(self) -> list[int]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT id FROM nodes WHERE heartbeat_at < {DB_NOW} - %s",
                [self.location.lease_seconds],
            ).fetchall()
        return [int(r[0]) for r in rows]

    def _forget_nodes(self, silent: list[int]) -> None:
        """Delete the rows of silent nodes that hold nothing open any more (another
        node's syncs may still have rows of theirs to take over)."""
        with self._connection() as conn:
            conn.execute(
                "DELETE FROM nodes n WHERE id = ANY(%s)"
                f" AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.owner = n.id AND d.{OPEN})"
                " AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.owner = n.id)",
                [silent],
            )

    def _claim(self, where: str, params: dict[str, Any]) -> list[PendingDelivery]:
        params = {**params, "me": self.node, "lease": self.location.lease_seconds}
        with self.pg_transaction() as conn:
            rows = conn.execute(
                f"UPDATE deliveries SET owner = %(me)s, requeued = 0 WHERE id IN"
                f" (SELECT id FROM deliveries WHERE {where} FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_PENDING_COLUMNS}",
                params,
            ).fetchall()
        rows.sort(key=lambda r: r[0])
        return _pending_from_store(rows)

    def clear_requeued(self, syncs: Sequence[str]) -> None:
        """A starting engine reads its open deliveries anyway: drop the requeue marks of
        the unowned ones it will claim."""
        if not syncs:
            return
        with self._connection() as conn:
            conn.execute(
                "UPDATE deliveries SET requeued = 0 WHERE requeued = 1 AND sync = ANY(%s)"
                " AND owner IS NULL",
                [list(syncs)],
            )

    def requeue(self, ids: Sequence[int], now: float | None = None) -> int:
        """Put archived deliveries back to pending, unowned: a running node claims them."""
        now = time.time() if now is None else now
        with self.pg_transaction() as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET status = 'pending', stage = 'delivery', attempts = 0,"
                " next_attempt_at = %s, created_at = %s, finished_at = NULL, requeued = 1,"
                " owner = NULL WHERE id = ANY(%s) AND status = 'archived' AND payload IS NOT NULL",
                [now, now, list(ids)],
            )
            return cursor.rowcount

    def syncs_of(self, ids: Sequence[int]) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT sync FROM deliveries WHERE id = ANY(%s) ORDER BY sync", [list(ids)]
            ).fetchall()
        return [r[0] for r in rows]

    def statuses_of(self, ids: Sequence[int]) -> dict[str, int]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM deliveries WHERE id = ANY(%s) GROUP BY status",
                [list(ids)],
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def next_delivery_id(self) -> int:
        """The id the next recorded delivery gets, unless another process takes it first."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
                " FROM deliveries_id_seq"
            ).fetchone()
        return int(row[0]) if row else 1

    # -- retention ------------------------------------------------------------------------

    def prune(self, older_than: float, now: float | None = None) -> dict[str, int]:
        """Delete events received more than `older_than` seconds ago and everything about
        them, except events with a delivery still open; and dedupe keys past 24 h.
        Batches of `PRUNE_BATCH` events, each its own transaction: locks stay short and
        autovacuum reclaims the dead rows as it goes (no long transaction holds them)."""
        cutoff = (time.time() if now is None else now) - older_than
        deleted = dict.fromkeys(
            ("attempts", "deliveries", "violations", "function_errors", "events"), 0
        )
        while True:
            with self.pg_transaction() as conn:
                doomed = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM events e WHERE received_at < %s AND NOT EXISTS"
                        f" (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.{OPEN})"
                        " ORDER BY id LIMIT %s",
                        [cutoff, PRUNE_BATCH],
                    ).fetchall()
                ]
                if not doomed:
                    break
                deleted["attempts"] += conn.execute(
                    "DELETE FROM attempts WHERE delivery_id IN"
                    " (SELECT id FROM deliveries WHERE event_id = ANY(%s))",
                    [doomed],
                ).rowcount
                for table in ("deliveries", "violations", "function_errors"):
                    deleted[table] += conn.execute(
                        f"DELETE FROM {table} WHERE event_id = ANY(%s)", [doomed]
                    ).rowcount
                deleted["events"] += conn.execute(
                    "DELETE FROM events WHERE id = ANY(%s)", [doomed]
                ).rowcount
        with self._connection() as conn:
            conn.execute(
                "DELETE FROM message_ids WHERE received_at < %s",
                [min(cutoff, (time.time() if now is None else now) - DEDUPE_WINDOW)],
            )
            conn.execute(f"DELETE FROM nodes WHERE heartbeat_at < {DB_NOW} - 86400")
        deleted["rejected_input"] = self.forget_rejected(cutoff)
        return deleted

    def vacuum(self) -> None:
        """VACUUM (ANALYZE) the store's tables: the space of pruned rows is reused, and
        the planner's statistics are fresh. Not VACUUM FULL: that locks every table."""
        with self._connection() as conn:
            for table in ("events", "deliveries", "attempts", "violations", "function_errors",
                          "message_ids", "queue"):  # fmt: skip
                conn.execute(f"VACUUM (ANALYZE) {table}")

    # -- read-side helpers shared with SQLite's queries ----------------------------------------

    def minute_of(self, column: str) -> str:
        """SQL: the start of the minute of a Unix-seconds column (monitoring's buckets)."""
        return f"floor({column} / 60) * 60"


TAKEOVER_PAGE = 5_000  # deliveries taken over per look (every second): memory stays bounded
PRUNE_BATCH = 5_000


def _reserve(conn: Connection, sequence: str, count: int) -> int:
    """The first of `count` consecutive ids of `sequence` (0 when count is 0)."""
    if count == 0:
        return 0
    row = conn.execute("SELECT streamctl_reserve_ids(%s, %s)", [sequence, count]).fetchone()
    assert row is not None
    return int(row[0])


class _Reader:
    """`store.conn.execute(sql, params)` for the SQL both stores share (streamctl.store
    queries, metrics, alert state), each statement on its own pooled connection, in
    autocommit: their `?` placeholders become psycopg's."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _Rows:
        with self._store._connection() as conn:
            cursor = conn.execute(_placeholders(sql), list(params) or None)
            rows = cursor.fetchall() if cursor.description is not None else []
            return _Rows(rows, cursor.rowcount)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]], /) -> None:
        with self._store._connection() as conn:
            conn.cursor().executemany(_placeholders(sql), params)


class _SqliteStyle:
    """A connection in a transaction, spoken to as sqlite3 is (`?` placeholders)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[tuple[Any, ...]]:
        return self._conn.execute(_placeholders(sql), list(params) or None)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> None:
        self._conn.cursor().executemany(_placeholders(sql), rows)


class AlertDatabase:
    """The store as the alert state speaks to it (`SqlReader`), each transaction first
    taking an advisory lock: when evaluators on several nodes run at once they take
    turns, and the second reads the state the first wrote (a transition is announced
    by one node, not once per node)."""

    dialect = "postgresql"

    def __init__(self, store: PostgresStore, *, owns_store: bool = True) -> None:
        self.store = store
        self.owns_store = owns_store  # False: borrowed (the console's), left open by close()
        self.lock = store.lock
        self.conn = store.conn

    @contextmanager
    def transaction(self) -> Iterator[_SqliteStyle]:
        with self.store.pg_transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [ALERTS_LOCK])
            yield _SqliteStyle(conn)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.store.rows(sql, params)

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.store.row(sql, params)

    def minute_of(self, column: str) -> str:
        return self.store.minute_of(column)

    def has_tables(self) -> bool:
        return self.store.has_tables()

    def close(self) -> None:
        if self.owns_store:
            self.store.close()


ALERTS_LOCK = 0x5354_4D32  # pg_advisory_xact_lock key of alert evaluations ("STM2")


def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


def _connect_options(location: PostgresLocation) -> dict[str, Any]:
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in location.conninfo:
        options["connect_timeout"] = CONNECT_TIMEOUT
    if "application_name" not in location.conninfo:
        options["application_name"] = "streamctl"
    return options


def _configurer(location: PostgresLocation) -> Any:
    milliseconds = int(location.statement_timeout * 1000)

    def configure(conn: Connection) -> None:
        # A stuck statement or lock wait fails instead of hanging a writer thread; a
        # transaction left open by a dead client cannot hold locks (and vacuum) back.
        conn.execute(f"SET statement_timeout = {milliseconds}")
        conn.execute(f"SET idle_in_transaction_session_timeout = {max(milliseconds, 60_000)}")
        conn.execute("SET synchronous_commit = off")

    return configure


def _require_schema(location: PostgresLocation) -> None:
    conn = _connect(location)
    try:
        if current_version(conn) == 0:
            msg = f"no store yet in {location.describe()} (nothing has been received or replayed)"
            raise StoreError(msg)
    except psycopg.Error as exc:
        raise _unavailable(location, exc) from None
    finally:
        conn.close()


def migrate_url(url: str) -> tuple[int, int]:
    """`streamctl store migrate` on PostgreSQL: (schema version before, version now)."""
    location = parse_location(url)
    conn = _connect(location)
    try:
        return migrate(conn, location.describe())
    except psycopg.Error as exc:
        raise _unavailable(location, exc) from None
    finally:
        conn.close()


def _connect(location: PostgresLocation) -> Connection:
    try:
        conn = psycopg.connect(location.conninfo, **_connect_options(location))
    except psycopg.Error as exc:
        raise _unavailable(location, exc) from None
    _configurer(location)(conn)
    return conn


# SQLSTATEs of a server that is going away or not there yet (class 08: connection).
_GONE = ("57P01", "57P02", "57P03")


def _unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached (not that it refused something)."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _GONE


def _unavailable(location: PostgresLocation, exc: BaseException) -> StoreUnavailable:
    reason = " ".join(location.redact(str(exc)).split()) or type(exc).__name__
    return StoreUnavailable(f"cannot reach the PostgreSQL store ({location.describe()}): {reason}")
