"""The SQLite store: every received event, decision, delivery and attempt (docs/store.md).

    store = Store.open(project.store_path)       # creates and migrates the file
    store.queue.append("web", events)            # the ingest queue (EventQueue)
    recorded = store.record_results(results, destinations={"to-braze": "braze"})
    store.record_attempts(outcomes)              # delivery results and the new states
    store.close()

One writer connection per process, guarded by a lock so the listener's threads and
the delivery engine's writer thread can share it; readers (the CLI) open their own
connections (`Store.open(path, readonly=True)`). WAL lets them read while the
writer writes.

Durability: WAL with `synchronous=NORMAL`, and `FULL` for the transactions that
promise durability to someone else: `durable_transaction()`, which the ingest
queue's `append` uses, fsyncs the log before it returns, so an event the listener
answered 200 for survives a power cut, not only a killed process. Everything else
(recorded decisions, attempts) is atomic and survives kill -9; a power cut may
lose the last moments of it, which at worst sends those deliveries again (the
queue ack is in the same transaction as the records, so nothing is lost). Skipping
an fsync per commit matters: the delivery engine commits its attempts every few
tens of milliseconds. `synchronous="FULL"` makes every commit durable.
"""

from __future__ import annotations

import sqlite3
import threading

try:
    import fcntl
except ImportError:  # Windows: SQLite's own busy handler alone
    fcntl = None  # type: ignore[assignment]
import functools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson
import sqlite_utils

from streamctl.core.errors import StoreError
from streamctl.core.model import Project
from streamctl.core.outcomes import EventResult, Status
from streamctl.core.rows import (
    PENDING,
    DuplicateRow,
    EncodedResults,
    PendingRow,
    encode_results,
)
from streamctl.store.schema import message_key, migrate

if TYPE_CHECKING:
    from streamctl.store.sqlite_queue import SqliteEventQueue

Synchronous = Literal["FULL", "NORMAL"]
DEDUPE_WINDOW = 24 * 3600.0  # SPEC §4: duplicate messageIds within 24 h are not delivered twice
# Parameters one statement may bind: SQLite's limit before 3.32, and the floor of builds
# that lower it (a multi-row INSERT binds every row's values at once).
MAX_PARAMETERS = 999
# Pages of a new store (SQLite's default is 4 KiB; an existing file keeps its own). Replay
# appends rows by the hundred thousand: a quarter of the pages to split, link, write to the
# WAL and copy back at checkpoints (replay of 100,000 events: median 6-10% faster over
# three runs of 9-11 alternating rounds; 32 KiB was no better).
PAGE_SIZE = 16 * 1024
CHECKPOINT_EVERY = 0.5  # seconds, at most, between checkpoints of a writer
WAL_RESTART_BYTES = 64 * 1024 * 1024  # a WAL this large is checkpointed to its end
LOCK_PATIENCE = 10.0  # seconds a writer waits for the file lock before relying on SQLite's


@dataclass(slots=True)
class PendingDelivery:
    """A delivery the engine still has to send (status pending or retrying).

    Mutable on purpose: the engine updates `attempts` and `next_attempt_at` as it
    goes, and creates hundreds of thousands of these per second in replay.
    """

    id: int
    sync: str
    event_type: str
    message_id: str
    user_key: str
    # The payload object, or its JSON text as read back from the store or sent by a
    # replay worker: text is parsed only for a destination that reads payloads
    # (`Destination.embeds_payloads`), so replay does not decode and re-encode each one.
    payload: dict[str, Any] | str
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    first_attempt_at: float | None = None


@dataclass(slots=True)
class AttemptRecord:
    """One attempt made for deliveries of one sync, and the state it leaves each in.

    The items of a batch that got the same answer and are left in the same state share
    one record (a whole batch, usually): the engine and the store then handle a batch's
    hundred deliveries as one object, not a hundred."""

    delivery_ids: list[int]
    sync: str
    destination: str
    at: float  # when the request was sent
    outcome: str  # delivered | retry | failed (streamctl.destinations.base.ItemStatus)
    status_code: int | None
    latency_ms: float
    error: str | None
    response: str | None
    retry_after: float | None
    new_status: Status  # DELIVERED, RETRYING or ARCHIVED
    attempts: int  # each delivery's attempt count including this one
    next_attempt_at: float | None  # when RETRYING
    first_attempt_at: float


@dataclass(frozen=True)
class RecordedResults:
    """What `record_results` wrote: the deliveries to hand to the engine, by sync."""

    pending: list[PendingDelivery]
    events: int
    duplicates: int
    first_delivery_id: int  # the deliveries written have ids first..first+len(decisions)-1
    encoded: EncodedResults  # what was recorded, duplicates left out


class Store:
    """The one writer connection of this process to a streamctl SQLite file."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool = False) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self.db = sqlite_utils.Database(conn)
        self.lock = threading.RLock()
        self._queue: SqliteEventQueue | None = None
        self.checkpoints = False
        self._last_checkpoint = time.monotonic()
        self._lock_file: IO[bytes] | None = None
        if not readonly and fcntl is not None:
            self._lock_file = open(f"{path}-writer", "ab")  # noqa: SIM115 (held open)
        self.synchronous: Synchronous = "NORMAL"

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        readonly: bool = False,
        synchronous: Synchronous = "NORMAL",
        checkpoints: bool = True,
        cache_mib: int = 64,
    ) -> Store:
        """Open (creating and migrating unless `readonly`) the store at `path`.

        Checkpoints (copying the WAL into the database file) never run inside a write
        transaction here: SQLite's automatic ones would run while this process holds
        the write lock, stalling every other writer. Instead a connection with
        `checkpoints=True` runs a PASSIVE checkpoint, which writers do not wait for,
        after its commits at most every `CHECKPOINT_EVERY` seconds; replay's worker
        processes open with `checkpoints=False` and leave them to the parent.
        `cache_mib`: SQLite's page cache, which it empties whenever another connection
        has written, so a small one serves connections that take turns writing."""
        path = Path(path)
        try:
            if readonly:
                if not path.exists():
                    msg = f"{path}: no store yet (nothing has been received or replayed)"
                    raise StoreError(msg)
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            if not readonly:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before the file is written
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {synchronous}")
                conn.execute("PRAGMA temp_store = MEMORY")
                conn.execute(f"PRAGMA cache_size = {-1024 * cache_mib}")  # in KiB
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                conn.execute("PRAGMA journal_size_limit = 67108864")  # WAL back to 64 MiB
        except sqlite3.Error as exc:
            msg = f"{path}: cannot open the store: {exc}"
            raise StoreError(msg) from exc
        store = cls(conn, path, readonly=readonly)
        store.synchronous = synchronous
        store.checkpoints = checkpoints and not readonly
        if not readonly:
            migrate(store.db, str(path))
        return store

    @classmethod
    def for_project(cls, project: Project, *, readonly: bool = False) -> Store:
        """The store of `project` (`store:` in streamctl.yaml, relative to the project root)."""
        return cls.open(store_path(project), readonly=readonly)

    def close(self) -> None:
        with self.lock:
            if self.checkpoints:
                self.checkpoint()
            self.conn.close()
            if self._lock_file is not None:
                self._lock_file.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def queue(self) -> SqliteEventQueue:
        """The ingest queue (`SqliteEventQueue`) sharing this connection."""
        if self._queue is None:
            from streamctl.store.sqlite_queue import SqliteEventQueue

            self._queue = SqliteEventQueue(self)
        return self._queue

    @contextmanager
    def durable_transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction whose commit is fsynced (synchronous=FULL) before it returns."""
        with self.lock:
            if self.synchronous == "FULL":
                with self.transaction() as conn:
                    yield conn
                return
            self.conn.execute("PRAGMA synchronous = FULL")
            try:
                with self.transaction() as conn:
                    yield conn
            finally:
                self.conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the writer lock; rolled back on any error."""
        with self.lock:
            with self._write():
                yield self.conn
            if self.checkpoints and time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY:
                self.checkpoint()

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, as far as readers allow.

        A PASSIVE checkpoint never waits, but while other processes keep writing (replay's
        workers) it never catches up either, and SQLite starts the WAL over only once it
        has: the WAL grew to 4 GB in a replay of 1,000,000 events, and every read and the
        memory of every process with it. Past `WAL_RESTART_BYTES` the checkpoint then
        holds the writers' file lock and RESTARTs: it copies the rest, and the next write
        begins the WAL again (trimmed to 64 MiB by journal_size_limit). The PASSIVE one
        goes first, so the writers wait only while the frames added since are copied,
        not the whole WAL (up to 0.1 s, three times in a replay of 100,000 events)."""
        with self.lock:
            self._last_checkpoint = time.monotonic()
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if _size(self.wal_path) < WAL_RESTART_BYTES:
                return
            with self._between_processes():
                self.conn.execute("PRAGMA wal_checkpoint(RESTART)")

    @property
    def wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._between_processes():
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                msg = f"{self.path}: cannot write to the store: {exc}"
                raise StoreError(msg) from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                msg = f"{self.path}: cannot commit to the store: {exc}"
                raise StoreError(msg) from exc

    @contextmanager
    def _between_processes(self) -> Iterator[None]:
        """Writers of several processes (replay's workers, the parent) queue on a file
        lock polled every few milliseconds at most, where SQLite's busy handler sleeps
        up to 100 ms between tries. After `LOCK_PATIENCE` seconds the transaction goes
        on without it (SQLite's own locking still keeps writes safe), so two stores of
        one file in one thread can never deadlock here."""
        handle = self._lock_file
        locked = handle is not None and _try_lock(handle)
        try:
            yield
        finally:
            if locked and handle is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)

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

    def record_results(
        self,
        results: Sequence[EventResult],
        *,
        destinations: dict[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        ack: Sequence[int] = (),
        now: float | None = None,
    ) -> RecordedResults:
        """Record events, every decision, violation and function error, and ack the queue,
        in one transaction. Returns the PENDING deliveries with their ids.

        `destinations` maps sync name -> destination name; `duplicates` are
        (source, message_id, event JSON) received again within 24 h: recorded, not processed.
        """
        source = results[0].source if results else ""
        return self.record_encoded(
            encode_results(source, results),
            destinations=destinations,
            duplicates=duplicates,
            ack=ack,
            now=now,
        )

    def record_encoded(
        self,
        encoded: EncodedResults,
        *,
        destinations: dict[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        ack: Sequence[int] = (),
        now: float | None = None,
        dedupe: bool = False,
        build_pending: bool = True,
    ) -> RecordedResults:
        """`record_results` for results already flattened by `encode_results`.

        `dedupe`: look for duplicates (24 h, and within the batch) inside the write
        transaction, so concurrent writers (replay's worker processes) cannot both
        record the same messageId as new. `build_pending=False`: leave
        `RecordedResults.pending` empty (the caller sends `encoded.pending_rows` on)."""
        now = time.time() if now is None else now
        source = encoded.source
        # The rows are built before the write lock (replay's workers queue on it):
        # ids are added by SQLite as offsets from the first free id, known only inside.
        rows = _RecordRows(encoded, destinations, now)
        with self.transaction() as conn:
            if dedupe:
                seen = self.seen_message_ids(source, encoded.message_ids, now, rows.message_keys)
                kept, found = encoded.split_duplicates(seen)
                if found:
                    encoded, duplicates = kept, [*duplicates, *found]
                    rows = _RecordRows(encoded, destinations, now)
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
                        (after + i, row[0], row[1], message_key(row[1]), now, row[2])
                        for i, row in enumerate(duplicates)
                    ],
                )
            for sql, params in rows.delivery_inserts(first_delivery, first_event):
                conn.executemany(sql, params)
            if encoded.violations:
                conn.executemany(
                    "INSERT INTO violations (event_id, message_id, source, contract, version,"
                    " event_name, kind, pointer, message, outcome, at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(first_event + v[0], v[1], source, *v[2:], now) for v in encoded.violations],
                )
            if encoded.function_errors:
                conn.executemany(
                    "INSERT INTO function_errors (event_id, message_id, sync, error, traceback, at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(first_event + f[0], *f[1:], now) for f in encoded.function_errors],
                )
            if ack:
                _delete_ids(conn, "queue", ack)
        return RecordedResults(
            _pending(encoded, first_delivery, now) if build_pending else [],
            len(encoded.events),
            len(duplicates),
            first_delivery,
            encoded,
        )

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
            " ORDER BY id LIMIT ?"
        )
        with self.lock:
            rows = self.conn.execute(sql, [*syncs, after_id, limit]).fetchall()
        return _pending_from_store(rows)

    def take_requeued(self, syncs: Sequence[str]) -> list[PendingDelivery]:
        """Deliveries `streamctl errors retry` put back while this process runs; clears the mark."""
        if not syncs:
            return []
        marks = ", ".join("?" for _ in syncs)
        with self.lock:
            if (
                self.conn.execute("SELECT 1 FROM deliveries WHERE requeued = 1 LIMIT 1").fetchone()
                is None
            ):
                return []
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_PENDING_COLUMNS} FROM deliveries WHERE requeued = 1"
                f" AND sync IN ({marks}) AND status IN ('pending', 'retrying') ORDER BY id",
                list(syncs),
            ).fetchall()
            conn.execute(
                f"UPDATE deliveries SET requeued = 0 WHERE requeued = 1 AND sync IN ({marks})",
                list(syncs),
            )
        return _pending_from_store(rows)

    def clear_requeued(self, syncs: Sequence[str]) -> None:
        """A starting engine reads every open delivery anyway: drop the requeue marks."""
        if not syncs:
            return
        marks = ", ".join("?" for _ in syncs)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE deliveries SET requeued = 0 WHERE requeued = 1 AND sync IN ({marks})",
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
        return deleted

    def has_tables(self) -> bool:
        """Whether the file holds the store's tables (not only alert state)."""
        with self.lock:
            row = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'attempts'"
            ).fetchone()
        return row is not None

    def minute_of(self, column: str) -> str:
        """SQL: the start of the minute of a Unix-seconds column (monitoring's buckets)."""
        return f"CAST({column} / 60 AS INTEGER) * 60"

    def delivery_syncs(self, ids: Sequence[int]) -> list[str]:
        """The syncs of these deliveries, sorted (`errors retry`)."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT DISTINCT sync FROM deliveries WHERE id IN (SELECT value FROM json_each(?))"
                " ORDER BY sync",
                [orjson.dumps(list(ids)).decode()],
            ).fetchall()
        return [r[0] for r in rows]

    def delivery_outcomes(self, ids: Sequence[int]) -> dict[str, int]:
        """How many of these deliveries are in each status (`errors retry`)."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT status, count(*) FROM deliveries WHERE id IN (SELECT value FROM json_each(?))"
                " GROUP BY status",
                [orjson.dumps(list(ids)).decode()],
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def next_delivery_id(self) -> int:
        """The id the next recorded delivery gets (replay's workers write them)."""
        with self.lock:
            row = self.conn.execute("SELECT max(id) FROM deliveries").fetchone()
        return int(row[0] or 0) + 1

    def vacuum(self) -> None:
        """Give the space freed by `prune` back to the file system."""
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.execute("VACUUM")


def _try_lock(handle: IO[bytes]) -> bool:
    wait = 0.0002
    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(wait)
            wait = min(wait * 2, 0.005)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def store_path(project: Project) -> Path:
    path = Path(project.store_path)
    return path if path.is_absolute() else Path(project.root) / path


def _pending(encoded: EncodedResults, first_id: int, now: float) -> list[PendingDelivery]:
    """The PENDING decisions as deliveries for the engine (payload objects when at hand)."""
    pending = pending_from_rows(encoded.pending_rows(first_id), now)
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

    def __init__(self, encoded: EncodedResults, destinations: dict[str, str], now: float) -> None:
        self.source = encoded.source
        self.destinations = destinations
        self.now = now
        self.events: dict[bool, list[tuple[Any, ...]]] = {}  # by "has a contract outcome"
        self.message_keys = [message_key(row[0]) for row in encoded.events]
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
            error, payload = d[6], d[8]
            varying: tuple[Any, ...] = (i, d[0], d[1], d[7])
            if error is not None:
                varying += (error,)
            if payload is not None:
                varying += (payload,)
            key = (d[2], d[3], d[4], d[5], error is not None, payload is not None)
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


# The columns `_pending_from_store` reads, in its order.
_PENDING_COLUMNS = (
    "id, sync, event_type, message_id, user_key, payload, created_at, attempts,"
    " next_attempt_at, first_attempt_at"
)


def _pending_from_store(rows: Sequence[Sequence[Any]]) -> list[PendingDelivery]:
    """Open deliveries read back from the store (`_PENDING_COLUMNS`); payloads stay JSON."""
    return [
        PendingDelivery(
            r[0], r[1], r[2] or "", r[3], r[4] or "", r[5] or "{}",
            r[6], r[7] or 0, r[8] or 0.0, r[9],
        )
        for r in rows
    ]  # fmt: skip


def pending_from_rows(rows: Sequence[PendingRow], created_at: float) -> list[PendingDelivery]:
    """PendingDelivery objects from `EncodedResults.pending_rows` recorded at `created_at`."""
    return [
        PendingDelivery(i, sync, event_type, message_id, user_key, payload,
                        created_at, 0, created_at)
        for i, sync, event_type, message_id, user_key, payload in rows
    ]  # fmt: skip


def _next_id(conn: sqlite3.Connection, table: str) -> int:
    # Ids are assigned here (inside the write transaction) so rows can be linked
    # without a round trip per row; the writer lock makes this race-free.
    row = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
    return int(row[0] or 0) + 1


def _delete_ids(conn: sqlite3.Connection, table: str, ids: Sequence[int]) -> None:
    conn.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
        [orjson.dumps(list(ids)).decode()],
    )
