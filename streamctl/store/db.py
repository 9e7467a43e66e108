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

Durability: `synchronous=FULL` by default. In WAL mode that fsyncs the log on
every commit, so a committed transaction survives a power cut, not only a killed
process: the listener answers 200 only for events that are durably stored (SPEC
§4). The cost is one fsync per transaction, which the callers amortise by writing
in groups (HTTP group commit, chunks of thousands of events in replay).
`synchronous="NORMAL"` skips those fsyncs (still safe against kill -9, not against
a power cut) for throwaway stores such as benchmarks.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlite_utils

from streamctl.config.model import Project
from streamctl.errors import StoreError
from streamctl.pipeline.outcomes import EventResult, Status
from streamctl.store.schema import migrate

Synchronous = Literal["FULL", "NORMAL"]
DEDUPE_WINDOW = 24 * 3600.0  # SPEC §4: duplicate messageIds within 24 h are not delivered twice
OPEN_STATUSES = (Status.PENDING.value, Status.RETRYING.value)


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
    payload: dict[str, Any]
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    first_attempt_at: float | None = None


@dataclass(slots=True)
class AttemptRecord:
    """One attempt of one delivery and the state it leaves the delivery in."""

    delivery_id: int
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
    attempts: int  # the delivery's attempt count including this one
    next_attempt_at: float | None  # when RETRYING
    first_attempt_at: float


@dataclass(frozen=True)
class RecordedResults:
    """What `record_results` wrote: the deliveries to hand to the engine, by sync."""

    pending: list[PendingDelivery]
    events: int
    duplicates: int


class Store:
    """The one writer connection of this process to a streamctl SQLite file."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool = False) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self.db = sqlite_utils.Database(conn)
        self.lock = threading.RLock()
        self._queue: Any = None

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | Path, *, readonly: bool = False, synchronous: Synchronous = "FULL"
    ) -> Store:
        """Open (creating and migrating unless `readonly`) the store at `path`."""
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
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {synchronous}")
                conn.execute("PRAGMA temp_store = MEMORY")
                conn.execute("PRAGMA cache_size = -65536")  # 64 MiB
        except sqlite3.Error as exc:
            msg = f"{path}: cannot open the store: {exc}"
            raise StoreError(msg) from exc
        store = cls(conn, path, readonly=readonly)
        if not readonly:
            migrate(store.db, str(path))
        return store

    @classmethod
    def for_project(cls, project: Project, *, readonly: bool = False) -> Store:
        """The store of `project` (`store:` in streamctl.yaml, relative to the project root)."""
        return cls.open(store_path(project), readonly=readonly)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def queue(self) -> Any:
        """The ingest queue (`SqliteEventQueue`) sharing this connection."""
        if self._queue is None:
            from streamctl.store.sqlite_queue import SqliteEventQueue

            self._queue = SqliteEventQueue(self)
        return self._queue

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the writer lock; rolled back on any error."""
        with self.lock:
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

    # -- dedupe --------------------------------------------------------------------

    def seen_message_ids(
        self, source: str, message_ids: Sequence[str], now: float | None = None
    ) -> set[str]:
        """The ids among `message_ids` already received on `source` within the last 24 h."""
        if not message_ids:
            return set()
        since = (time.time() if now is None else now) - DEDUPE_WINDOW
        with self.lock:
            rows = self.conn.execute(
                "SELECT DISTINCT message_id FROM events WHERE message_id IN "
                "(SELECT value FROM json_each(?)) AND source = ? AND received_at >= ?",
                [orjson.dumps(list(message_ids)).decode(), source, since],
            ).fetchall()
        return {row[0] for row in rows}

    # -- pipeline outcomes -----------------------------------------------------------

    def record_results(
        self,
        results: Sequence[EventResult],
        *,
        destinations: dict[str, str],
        duplicates: Sequence[tuple[str, str, dict[str, Any]]] = (),
        ack: Sequence[int] = (),
        now: float | None = None,
    ) -> RecordedResults:
        """Record events, every decision, violation and function error, and ack the queue,
        in one transaction. Returns the PENDING deliveries with their ids.

        `destinations` maps sync name -> destination name; `duplicates` are
        (source, message_id, event) received again within 24 h: recorded, not processed.
        """
        now = time.time() if now is None else now
        dumps = orjson.dumps
        with self.transaction() as conn:
            first_id = _next_id(conn, "events")
            event_rows = [
                (first_id + i, r.source, r.message_id, now, dumps(r.event).decode(), _outcome(r), 0)
                for i, r in enumerate(results)
            ]
            event_rows += [
                (
                    first_id + len(results) + i,
                    source,
                    message_id,
                    now,
                    dumps(event).decode(),
                    None,
                    1,
                )
                for i, (source, message_id, event) in enumerate(duplicates)
            ]
            conn.executemany(
                "INSERT INTO events (id, source, message_id, received_at, payload,"
                " contract_outcome, duplicate) VALUES (?, ?, ?, ?, ?, ?, ?)",
                event_rows,
            )
            pending, delivery_rows, violation_rows, function_rows = self._decision_rows(
                conn, results, first_id, destinations, now
            )
            conn.executemany(
                "INSERT INTO deliveries (id, event_id, message_id, source, sync, destination,"
                " event_type, status, stage, error, user_key, payload, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                delivery_rows,
            )
            if violation_rows:
                conn.executemany(
                    "INSERT INTO violations (event_id, message_id, source, contract, version,"
                    " event_name, kind, pointer, message, outcome, at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    violation_rows,
                )
            if function_rows:
                conn.executemany(
                    "INSERT INTO function_errors (event_id, message_id, sync, error, traceback, at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    function_rows,
                )
            if ack:
                _delete_ids(conn, "queue", ack)
        return RecordedResults(pending, len(results), len(duplicates))

    @staticmethod
    def _decision_rows(
        conn: sqlite3.Connection,
        results: Sequence[EventResult],
        first_event_id: int,
        destinations: dict[str, str],
        now: float,
    ) -> tuple[
        list[PendingDelivery], list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]
    ]:
        dumps = orjson.dumps
        next_id = _next_id(conn, "deliveries")
        pending: list[PendingDelivery] = []
        deliveries: list[tuple[Any, ...]] = []
        violations: list[tuple[Any, ...]] = []
        function_errors: list[tuple[Any, ...]] = []
        pending_status = Status.PENDING
        for offset, result in enumerate(results):
            event_id = first_event_id + offset
            if result.contract is not None:
                for v in result.contract.violations:
                    violations.append(
                        (event_id, result.message_id, result.source, v.contract, v.version,
                         v.event_name, v.kind, v.pointer, v.message, result.contract.outcome, now)
                    )  # fmt: skip
            for d in result.decisions:
                status = d.status
                payload = None
                if d.payload is not None:
                    payload = dumps(d.payload).decode()
                if status is pending_status:
                    pending.append(
                        PendingDelivery(
                            next_id, d.sync, d.event_type or "", d.message_id, d.user_key,
                            d.payload or {}, now, 0, now,
                        )
                    )  # fmt: skip
                elif status is Status.FUNCTION_ERROR:
                    function_errors.append(
                        (event_id, d.message_id, d.sync, d.error, d.traceback, now)
                    )
                deliveries.append(
                    (next_id, event_id, d.message_id, result.source, d.sync,
                     destinations.get(d.sync), d.event_type, status.value, d.stage.value,
                     d.error, d.user_key, payload, now,
                     now if status is pending_status else None)
                )  # fmt: skip
                next_id += 1
        return pending, deliveries, violations, function_errors

    # -- delivery ------------------------------------------------------------------

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Each attempt, and its delivery's new status, in one transaction."""
        if not records:
            return
        attempt_rows = [
            (r.delivery_id, r.sync, r.destination, r.at, r.outcome, r.status_code,
             r.latency_ms, r.error, r.response, r.retry_after)
            for r in records
        ]  # fmt: skip
        finished = (Status.DELIVERED, Status.ARCHIVED)
        delivery_rows = [
            (r.new_status.value, r.attempts, r.status_code, r.response, r.error, r.latency_ms,
             r.first_attempt_at, r.at, r.next_attempt_at,
             r.at if r.new_status in finished else None, r.delivery_id)
            for r in records
        ]  # fmt: skip
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO attempts (delivery_id, sync, destination, at, status, status_code,"
                " latency_ms, error, response, retry_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                attempt_rows,
            )
            conn.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?, status_code = ?, response = ?,"
                " error = ?, latency_ms = ?, first_attempt_at = ?, last_attempt_at = ?,"
                " next_attempt_at = ?, finished_at = ? WHERE id = ?",
                delivery_rows,
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
            "SELECT id, sync, event_type, message_id, user_key, payload, created_at, attempts,"
            " next_attempt_at, first_attempt_at FROM deliveries"
            f" WHERE sync IN ({marks}) AND status IN ('pending', 'retrying') AND id > ?"
            " ORDER BY id LIMIT ?"
        )
        with self.lock:
            rows = self.conn.execute(sql, [*syncs, after_id, limit]).fetchall()
        loads = orjson.loads
        return [
            PendingDelivery(
                r[0], r[1], r[2] or "", r[3], r[4] or "", loads(r[5]) if r[5] else {},
                r[6], r[7] or 0, r[8] or 0.0, r[9],
            )
            for r in rows
        ]  # fmt: skip

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
                "SELECT id, sync, event_type, message_id, user_key, payload, created_at, attempts,"
                f" next_attempt_at, first_attempt_at FROM deliveries WHERE requeued = 1"
                f" AND sync IN ({marks}) AND status IN ('pending', 'retrying') ORDER BY id",
                list(syncs),
            ).fetchall()
            conn.execute(
                f"UPDATE deliveries SET requeued = 0 WHERE requeued = 1 AND sync IN ({marks})",
                list(syncs),
            )
        return [
            PendingDelivery(
                r[0], r[1], r[2] or "", r[3], r[4] or "", orjson.loads(r[5]) if r[5] else {},
                r[6], r[7] or 0, r[8] or 0.0, r[9],
            )
            for r in rows
        ]  # fmt: skip

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

    def vacuum(self) -> None:
        """Give the space freed by `prune` back to the file system."""
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.execute("VACUUM")


def store_path(project: Project) -> Path:
    path = Path(project.store_path)
    return path if path.is_absolute() else Path(project.root) / path


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


def _outcome(result: EventResult) -> str | None:
    return result.contract.outcome if result.contract is not None else None
