"""The SQLite state store: every received event, decision, delivery and attempt (docs/store.md).

    store = SqliteStore.open(project.store_file)  # creates and migrates the file
    store.queue.append("web", events)            # the ingest queue (SqliteEventQueue)
    recorded = store.record_results(results, destinations={"to-braze": "braze"})
    store.record_attempts(outcomes)              # delivery results and the new states
    store.close()

One implementation of `streamctl.store.base.Store` (its docstring has the
contract); the connection, its transactions and durability are
`streamctl.store.connection.SqliteConnection`'s, which this class extends.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import orjson

from streamctl.core.errors import StoreError
from streamctl.core.model import Project
from streamctl.core.outcomes import Status
from streamctl.core.rows import (
    PENDING,
    AttemptRecord,
    DuplicateRow,
    EncodedResults,
    PendingDelivery,
    RecordedResults,
    pending_deliveries,
)
from streamctl.store import queries
from streamctl.store.common import CommonOperations
from streamctl.store.connection import SqliteConnection
from streamctl.store.console_queries import ConsoleOperations
from streamctl.store.rollups import SqliteRollups
from streamctl.store.schema import message_key
from streamctl.store.shard import Shard
from streamctl.store.sqlite_queue import SqliteEventQueue

# Bytes `check_writable` writes beside the store while its writes fail: room for a few commits.
PROBE_BYTES = 1 << 20
DEDUPE_WINDOW = 24 * 3600.0  # SPEC §4: duplicate messageIds within 24 h are not delivered twice
# Parameters one statement may bind: SQLite's limit before 3.32, and the floor of builds
# that lower it (a multi-row INSERT binds every row's values at once).
MAX_PARAMETERS = 999


class SqliteStore(SqliteConnection, CommonOperations, ConsoleOperations):
    """The state store (`streamctl.store.base.Store`, and the console's `ConsoleReads`)
    in one SQLite file."""

    _queue: SqliteEventQueue | None = None
    node: int | None = None  # one process writes a SQLite file's deliveries: no leases
    shard: Shard | None = None  # `run --workers N`: this process's share of the work

    def for_shard(self, shard: Shard | None) -> SqliteStore:
        """This store as worker `shard.index` of `shard.count` sees it (streamctl.store.shard):
        its queue claims, the deliveries it records, resumes and takes; None: all of them."""
        self.shard = shard
        self.queue.shard = shard
        return self

    def _open_deliveries_of_mine(self) -> str:
        return "" if self.shard is None else f" AND {self.shard.deliveries()}"

    @classmethod
    def for_project(cls, project: Project, *, readonly: bool = False) -> SqliteStore:
        """The store of `project` (`store:` in streamctl.yaml, relative to the project root)."""
        return cls.open(project.store_file, readonly=readonly)

    @property
    def rollup_tables(self) -> SqliteRollups:
        return SqliteRollups(self)

    @property
    def queue(self) -> SqliteEventQueue:
        """The ingest queue sharing this connection (and so its transactions)."""
        if self._queue is None:
            self._queue = SqliteEventQueue(self)
        return self._queue

    def check_writable(self) -> None:
        """Take the write lock and commit. While writes are failing, first write
        `PROBE_BYTES` beside the store file (and remove them): an empty transaction, or a
        page rewritten in the WAL's old space, succeeds on a full disk, so neither proves
        there is room again."""
        if self.health.failure is not None:
            probe = self.path.with_name(self.path.name + "-probe")
            try:
                with open(probe, "wb") as handle:
                    handle.write(bytes(PROBE_BYTES))
                    os.fsync(handle.fileno())
            except OSError as exc:
                msg = f"{self.path}: cannot write beside the store: {self.health.failed(exc)}"
                raise StoreError(msg) from exc
            finally:
                probe.unlink(missing_ok=True)
        with self.transaction():
            pass  # BEGIN IMMEDIATE takes the write lock: proves the file is writable

    # -- reading: CommonOperations, and the two that are SQLite's own ------------------

    def syncs_of(self, ids: Sequence[int]) -> list[str]:
        return queries.syncs_of(self, ids)

    def statuses_of(self, ids: Sequence[int]) -> dict[str, int]:
        return queries.statuses_of(self, ids)

    # -- dedupe --------------------------------------------------------------------

    def seen_message_ids(
        self,
        source: str,
        message_ids: Sequence[str],
        now: float | None = None,
        keys: Sequence[int] | None = None,
    ) -> set[str]:
        """The ids among `message_ids` already received on `source` within the last 24 h.
        `keys`: their `message_key`s, when the caller has them."""
        if not message_ids:
            return set()
        since = (time.time() if now is None else now) - DEDUPE_WINDOW
        keys_json = orjson.dumps(keys or [message_key(m) for m in message_ids]).decode()
        with self.lock:
            rows = self.conn.execute(
                "SELECT DISTINCT message_id FROM events WHERE message_key IN "
                "(SELECT value FROM json_each(?)) AND source = ? AND received_at >= ?",
                [keys_json, source, since],
            ).fetchall()
        wanted = set(message_ids)  # keys collide: the texts decide
        return {row[0] for row in rows if row[0] in wanted}

    # -- pipeline outcomes -----------------------------------------------------------

    def record_encoded(
        self,
        encoded: EncodedResults,
        *,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        now: float | None = None,
        dedupe: bool = False,
        build_pending: bool = True,
    ) -> RecordedResults:
        """Record events, every decision, violation and function error in one transaction.
        Returns the PENDING deliveries with their ids.

        `destinations` maps sync name -> destination name; `duplicates` are events
        received again within 24 h: recorded as such, not processed.
        `dedupe`: look for duplicates (24 h, and within the batch) inside the write
        transaction, so concurrent writers (replay's worker processes) cannot both
        record the same messageId as new. `build_pending=False`: leave
        `RecordedResults.pending` empty (the caller sends `encoded.pending_rows` on)."""
        return self._record(encoded, destinations, duplicates, now, dedupe, build_pending, ())

    def record_and_ack(
        self,
        encoded: EncodedResults,
        entries: Sequence[int],
        *,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        now: float | None = None,
    ) -> RecordedResults:
        """`record_encoded`, and acknowledge these entries of `self.queue` in the same
        transaction: the outcomes are recorded and the entries leave the queue, or
        neither happens (a crash between the two would lose events or process them
        twice)."""
        return self._record(encoded, destinations, duplicates, now, False, True, entries)

    def _record(
        self,
        encoded: EncodedResults,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow],
        now: float | None,
        dedupe: bool,
        build_pending: bool,
        entries: Sequence[int],
    ) -> RecordedResults:
        now = time.time() if now is None else now
        source = encoded.source
        # The rows are built before the write lock (replay's workers queue on it):
        # ids are added by SQLite as offsets from the first free id, known only inside.
        owner = None if self.shard is None else self.shard.index
        rows = _RecordRows(encoded, destinations, now, owner)
        acked = 0
        with self.transaction() as conn:
            if dedupe:
                seen = self.seen_message_ids(source, encoded.message_ids, now, rows.message_keys)
                kept, found = encoded.split_duplicates(seen)
                if found:
                    encoded, duplicates = kept, [*duplicates, *found]
                    rows = _RecordRows(encoded, destinations, now, owner)
            first_event = _next_id(conn, "events")
            first_delivery = _next_id(conn, "deliveries")
            for sql, params in rows.event_inserts(first_event):
                conn.executemany(sql, params)
            if duplicates:
                after = first_event + len(encoded.events)
                conn.executemany(
                    "INSERT INTO events (id, source, message_id, message_key, received_at,"
                    " payload, contract_outcome, duplicate) VALUES (?, ?, ?, ?, ?, ?, NULL, 1)",
                    [
                        (
                            after + i,
                            d.source,
                            d.message_id,
                            message_key(d.message_id),
                            now,
                            d.event_json,
                        )
                        for i, d in enumerate(duplicates)
                    ],
                )
            for sql, params in rows.delivery_inserts(first_delivery, first_event):
                conn.executemany(sql, params)
            if encoded.violations:
                conn.executemany(
                    "INSERT INTO violations (event_id, message_id, source, contract, version,"
                    " event_name, kind, pointer, message, outcome, at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (first_event + v.event_index, v.message_id, source, *v[2:], now)
                        for v in encoded.violations
                    ],
                )
            if encoded.function_errors:
                conn.executemany(
                    "INSERT INTO function_errors (event_id, message_id, sync, error, traceback, at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(first_event + f.event_index, *f[1:], now) for f in encoded.function_errors],
                )
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

    def next_delivery_id(self) -> int:
        """The id the next recorded delivery will get (replay's workers write them)."""
        return int(self.row("SELECT max(id) FROM deliveries")[0] or 0) + 1

    # -- delivery ------------------------------------------------------------------

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Each attempt, and its delivery's new status, in one transaction."""
        if not records:
            return
        attempts = _same_attempts(records)
        updates = _same_updates(records)
        with self.transaction() as conn:
            # One statement per group of identical attempts (a batch's items share one
            # response), its values bound once: binding each row's ten cost more than
            # SQLite's work of storing it.
            conn.executemany(
                "INSERT INTO attempts (delivery_id, sync, destination, at, status, status_code,"
                " latency_ms, error, response, retry_after) SELECT value, ?, ?, ?, ?, ?, ?, ?, ?, ?"
                " FROM json_each(?) ORDER BY key",
                [(*values, orjson.dumps(ids).decode()) for values, ids in attempts.items()],
            )
            conn.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?, status_code = ?, response = ?,"
                " error = ?, latency_ms = ?, first_attempt_at = ?, last_attempt_at = ?,"
                " next_attempt_at = ?, finished_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                [(*values, orjson.dumps(ids).decode()) for values, ids in updates.items()],
            )

    def archive(self, deliveries: Sequence[PendingDelivery], reason: str, now: float) -> None:
        """Archive deliveries without an attempt (max_age passed before one could be made)."""
        if not deliveries:
            return
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE deliveries SET status = 'archived', error = ?, finished_at = ?,"
                " next_attempt_at = NULL WHERE id = ?",
                [(reason, now, d.id) for d in deliveries],
            )

    def open_deliveries(
        self, syncs: Sequence[str], after_id: int, limit: int
    ) -> list[PendingDelivery]:
        """Pending and retrying deliveries of `syncs` with id > after_id, oldest first."""
        if not syncs:
            return []
        marks = ", ".join("?" for _ in syncs)
        sql = (
            f"SELECT {_PENDING_COLUMNS} FROM deliveries"
            f" WHERE sync IN ({marks}) AND status IN ('pending', 'retrying') AND id > ?"
            f"{self._open_deliveries_of_mine()} ORDER BY id LIMIT ?"
        )
        with self.lock:
            rows = self.conn.execute(sql, [*syncs, after_id, limit]).fetchall()
        return _pending_from_store(rows)

    def take_requeued(self, syncs: Sequence[str]) -> list[PendingDelivery]:
        """Deliveries `streamctl errors retry` put back while this process runs; clears the mark."""
        if not syncs:
            return []
        marks = ", ".join("?" for _ in syncs)
        mine = self._open_deliveries_of_mine()
        with self.lock:
            if (
                self.conn.execute("SELECT 1 FROM deliveries WHERE requeued = 1 LIMIT 1").fetchone()
                is None
            ):
                return []
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_PENDING_COLUMNS} FROM deliveries WHERE requeued = 1"
                f" AND sync IN ({marks}) AND status IN ('pending', 'retrying'){mine} ORDER BY id",
                list(syncs),
            ).fetchall()
            conn.execute(
                f"UPDATE deliveries SET requeued = 0 WHERE requeued = 1 AND sync IN ({marks}){mine}",
                list(syncs),
            )
        return _pending_from_store(rows)

    def clear_requeued(self, syncs: Sequence[str]) -> None:
        """A starting engine reads every open delivery anyway: drop the requeue marks."""
        if not syncs:
            return
        marks = ", ".join("?" for _ in syncs)
        mine = self._open_deliveries_of_mine()
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE deliveries SET requeued = 0 WHERE requeued = 1 AND sync IN ({marks}){mine}",
                list(syncs),
            )

    def requeue(self, ids: Sequence[int], now: float | None = None) -> int:
        """Put archived deliveries back to pending (attempt history kept, the count restarts,
        max_age counted from now). Returns how many were requeued."""
        now = time.time() if now is None else now
        with self.transaction() as conn:
            cursor = conn.executemany(
                "UPDATE deliveries SET status = 'pending', stage = 'delivery', attempts = 0,"
                " next_attempt_at = ?, created_at = ?, finished_at = NULL, requeued = 1"
                " WHERE id = ? AND status = 'archived' AND payload IS NOT NULL",
                [(now, now, i) for i in ids],
            )
            return cursor.rowcount

    # -- retention -------------------------------------------------------------------

    def prune(self, older_than: float, now: float | None = None) -> dict[str, int]:
        """Delete events received more than `older_than` seconds ago and everything recorded
        about them, except deliveries still pending or retrying. Returns rows deleted per table."""
        cutoff = (time.time() if now is None else now) - older_than
        deleted: dict[str, int] = {}
        with self.transaction() as conn:
            keep = "SELECT event_id FROM deliveries WHERE status IN ('pending', 'retrying')"
            doomed = f"SELECT id FROM events WHERE received_at < ? AND id NOT IN ({keep})"
            conn.execute(f"CREATE TEMP TABLE doomed AS {doomed}", [cutoff])
            deleted["attempts"] = conn.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
                " WHERE event_id IN (SELECT id FROM temp.doomed))"
            ).rowcount
            for table in ("deliveries", "violations", "function_errors"):
                deleted[table] = conn.execute(
                    f"DELETE FROM {table} WHERE event_id IN (SELECT id FROM temp.doomed)"
                ).rowcount
            deleted["events"] = conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM temp.doomed)"
            ).rowcount
            conn.execute("DROP TABLE temp.doomed")
        deleted["rejected_input"] = self.forget_rejected(cutoff)
        return deleted

    def vacuum(self) -> None:
        """Give the space freed by `prune` back to the file system."""
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.execute("VACUUM")


def _pending(encoded: EncodedResults, first_id: int, now: float) -> list[PendingDelivery]:
    """The PENDING decisions as deliveries for the engine (payload objects when at hand)."""
    pending = pending_deliveries(encoded.pending_rows(first_id), now)
    if encoded.pending_payloads is not None:
        for delivery, payload in zip(pending, encoded.pending_payloads, strict=True):
            delivery.payload = payload
    return pending


class _RecordRows:
    """The `events` and `deliveries` rows of encoded results (ids relative: 0, 1, ...), as
    INSERT statements with their parameters (see `_multi_row`).

    Rows are grouped by the values they share (source, sync, status, time, NULLs),
    which each statement binds once: binding a parameter costs about 0.3 us, and
    binding 14 per delivery row took longer than SQLite's own work of storing it
    (100,000 rows: 0.6 s with every value bound per row, 0.2 s binding only the 4
    that differ).
    """

    def __init__(
        self,
        encoded: EncodedResults,
        destinations: Mapping[str, str],
        now: float,
        owner: int | None = None,
    ) -> None:
        self.source = encoded.source
        self.owner = owner
        self.destinations = destinations
        self.now = now
        self.events: dict[bool, list[tuple[Any, ...]]] = {}  # by "has a contract outcome"
        self.message_keys = [message_key(row.message_id) for row in encoded.events]
        for i, (message_id, event_json, outcome) in enumerate(encoded.events):
            hashed = self.message_keys[i]
            row = (
                (i, message_id, hashed, event_json)
                if outcome is None
                else (i, message_id, hashed, event_json, outcome)
            )
            self.events.setdefault(outcome is not None, []).append(row)
        # (sync, event_type, status, stage, has error, has payload) -> rows
        self.deliveries: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for i, d in enumerate(encoded.decisions):
            error, payload = d.error, d.payload_json
            varying: tuple[Any, ...] = (i, d.event_index, d.message_id, d.user_key)
            if error is not None:
                varying += (error,)
            if payload is not None:
                varying += (payload,)
            key = (d.sync, d.event_type, d.status, d.stage, error is not None, payload is not None)
            self.deliveries.setdefault(key, []).append(varying)

    def event_inserts(self, first_id: int) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        shared = {"source": self.source, "received_at": self.now, "duplicate": 0}
        for has_outcome, rows in self.events.items():
            columns = (
                "id", "message_id", "message_key", "payload",
                *(("contract_outcome",) * has_outcome),
            )  # fmt: skip
            yield from _multi_row("events", columns, (first_id,), shared, rows)

    def delivery_inserts(
        self, first_id: int, first_event: int
    ) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        for key, rows in self.deliveries.items():
            sync, event_type, status, stage, has_error, has_payload = key
            shared = {
                "source": self.source,
                "sync": sync,
                "destination": self.destinations.get(sync),
                "event_type": event_type,
                "status": status,
                "stage": stage,
                "created_at": self.now,
                "next_attempt_at": self.now if status == PENDING else None,
            }
            if self.owner is not None:
                shared["owner"] = self.owner
            columns = (
                "id",
                "event_id",
                "message_id",
                "user_key",
                *(("error",) * has_error),
                *(("payload",) * has_payload),
            )
            bases = (first_id, first_event)
            yield from _multi_row("deliveries", columns, bases, shared, rows)


def _multi_row(
    table: str,
    columns: tuple[str, ...],
    bases: tuple[int, ...],
    shared: dict[str, Any],
    rows: list[tuple[Any, ...]],
) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """(statement, parameters of each execution) for `executemany`, storing `rows`:
    the values of `columns`, of which the first len(bases) are ids relative to those
    bases, plus `shared`, the same in every row.

    Many rows go in one statement, VALUES (...), (...), ..., which SQLite runs once
    rather than once per row: that halved the cost of storing a filtered delivery.
    The bases and `shared` are bound once per statement, so the statements' text
    depends only on their shape, and each is prepared once per connection."""
    head = (*bases, *shared.values())
    per_row = len(columns)
    per_statement = max(1, (MAX_PARAMETERS - len(head)) // per_row)
    names = (*columns, *shared)
    whole = len(rows) - len(rows) % per_statement
    if whole:
        statement = _insert_sql(table, names, len(bases), len(shared), per_statement)
        yield (
            statement,
            [
                (*head, *chain.from_iterable(rows[i : i + per_statement]))
                for i in range(0, whole, per_statement)
            ],
        )
    if whole < len(rows):  # a row a statement: a text for every length would fill the cache
        statement = _insert_sql(table, names, len(bases), len(shared), 1)
        yield statement, [(*head, *row) for row in rows[whole:]]


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, names: tuple[str, ...], bases: int, shared: int, rows: int) -> str:
    """INSERT of `rows` rows into `names` (the row's own columns, then the shared ones).
    Parameters: ?1... the id bases, then the shared values, then each row's own values,
    its first `bases` ones added to the bases."""
    per_row = len(names) - shared
    shared_marks = [f"?{bases + k + 1}" for k in range(shared)]
    tuples = []
    for r in range(rows):
        first = bases + shared + r * per_row + 1
        own = [f"?{first + j}" for j in range(per_row)]
        ids = [f"?{b + 1} + {own[b]}" for b in range(bases)]
        tuples.append(f"({', '.join([*ids, *own[bases:], *shared_marks])})")
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join(tuples)}"


def _same_attempts(records: Sequence[AttemptRecord]) -> dict[tuple[Any, ...], list[int]]:
    """Delivery ids grouped by identical attempt rows, in the order they were made."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for r in records:
        values = (
            r.sync, r.destination, r.at, r.outcome, r.status_code, r.latency_ms, r.error,
            r.response, r.retry_after,
        )  # fmt: skip
        groups.setdefault(values, []).extend(r.delivery_ids)
    return groups


def _same_updates(records: Sequence[AttemptRecord]) -> dict[tuple[Any, ...], list[int]]:
    """Delivery ids grouped by the identical new state their attempts leave them in.
    Each update sets the whole state, so only a delivery's last record counts."""
    finished = (Status.DELIVERED, Status.ARCHIVED)
    last: dict[int, int] = {}  # delivery id -> index of its last record
    for index, r in enumerate(records):
        last.update(dict.fromkeys(r.delivery_ids, index))
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, r in enumerate(records):
        ids = [i for i in r.delivery_ids if last[i] == index]
        if not ids:
            continue
        values = (
            r.new_status.value, r.attempts, r.status_code, r.response, r.error, r.latency_ms,
            r.first_attempt_at, r.at, r.next_attempt_at, r.at if r.new_status in finished else None,
        )  # fmt: skip
        groups.setdefault(values, []).extend(ids)
    return groups


# An open delivery's columns in `PendingDelivery`'s field order, NULLs as its defaults.
_PENDING_COLUMNS = (
    "id, sync, coalesce(event_type, ''), message_id, coalesce(user_key, ''),"
    " coalesce(payload, '{}'), created_at, coalesce(attempts, 0),"
    " coalesce(next_attempt_at, 0.0), first_attempt_at"
)


def _pending_from_store(rows: Sequence[Sequence[Any]]) -> list[PendingDelivery]:
    """Open deliveries read back from the store (`_PENDING_COLUMNS`); payloads stay JSON."""
    return [PendingDelivery(*row) for row in rows]


def _next_id(conn: sqlite3.Connection, table: str) -> int:
    # Ids are assigned here (inside the write transaction) so rows can be linked
    # without a round trip per row; the writer lock makes this race-free.
    row = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
    return int(row[0] or 0) + 1
