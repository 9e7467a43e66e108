"""The store's schema, as ordered migrations (see docs/store.md for every column).

`schema_version` holds one row: the number of migrations applied. Opening a store
applies the missing ones in order, each in its own transaction, so a file written
by an older streamctl upgrades in place and a newer file is refused rather than
misread. Add a migration by appending a function to `MIGRATIONS`; never edit one
that has shipped.

Times are Unix seconds (REAL, UTC) so windows are plain comparisons; JSON
documents (events, payloads) are stored as text.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from streamctl.core.errors import StoreError
from streamctl.store.health import failure_cause

Migration = Callable[[sqlite_utils.Database], None]


def _create(db: sqlite_utils.Database, name: str, columns: dict[str, type], **options: Any) -> None:
    # The SQL only: sqlite-utils' Table.create would commit midway through the migration.
    db.execute(db.create_table_sql(name, columns, **options))


def _initial_schema(db: sqlite_utils.Database) -> None:
    # The ingest queue between the listener and the processor. AUTOINCREMENT: acked
    # rows are deleted, and an id must never come back once handed out.
    db.execute(
        "CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,"
        " event TEXT NOT NULL, appended_at REAL NOT NULL)"
    )
    _create(
        db,
        "events",
        {
            "id": int,
            "source": str,
            "message_id": str,
            "received_at": float,
            "payload": str,
            "contract_outcome": str,
            "duplicate": int,
        },
        pk="id",
        not_null={"source", "message_id", "received_at", "payload"},
        defaults={"duplicate": 0},
    )
    _create(
        db,
        "deliveries",
        {
            "id": int,
            "event_id": int,
            "message_id": str,
            "source": str,
            "sync": str,
            "destination": str,
            "event_type": str,
            "status": str,
            "stage": str,
            "error": str,
            "user_key": str,
            "payload": str,
            "attempts": int,
            "status_code": int,
            "response": str,
            "latency_ms": float,
            "created_at": float,
            "first_attempt_at": float,
            "last_attempt_at": float,
            "next_attempt_at": float,
            "finished_at": float,
            "requeued": int,
        },
        pk="id",
        not_null={"event_id", "message_id", "source", "sync", "status", "stage", "created_at"},
        defaults={"attempts": 0, "requeued": 0},
        foreign_keys=[("event_id", "events", "id")],
    )
    _create(
        db,
        "attempts",
        {
            "id": int,
            "delivery_id": int,
            "sync": str,
            "destination": str,
            "at": float,
            "status": str,
            "status_code": int,
            "latency_ms": float,
            "error": str,
            "response": str,
            "retry_after": float,
        },
        pk="id",
        not_null={"delivery_id", "sync", "at", "status"},
        foreign_keys=[("delivery_id", "deliveries", "id")],
    )
    _create(
        db,
        "violations",
        {
            "id": int,
            "event_id": int,
            "message_id": str,
            "source": str,
            "contract": str,
            "version": str,
            "event_name": str,
            "kind": str,
            "pointer": str,
            "message": str,
            "outcome": str,
            "at": float,
        },
        pk="id",
        not_null={"event_id", "message_id", "source", "contract", "kind", "at"},
        foreign_keys=[("event_id", "events", "id")],
    )
    _create(
        db,
        "function_errors",
        {
            "id": int,
            "event_id": int,
            "message_id": str,
            "sync": str,
            "error": str,
            "traceback": str,
            "at": float,
        },
        pk="id",
        not_null={"event_id", "message_id", "sync", "at"},
        foreign_keys=[("event_id", "events", "id")],
    )
    statements = [
        # dedupe (message_id, then source and the 24 h window) and `explain`
        "CREATE INDEX events_message ON events(message_id)",
        "CREATE INDEX events_received ON events(received_at)",
        "CREATE INDEX deliveries_event ON deliveries(event_id)",
        # status: the funnel of one sync over a window
        "CREATE INDEX deliveries_sync_created ON deliveries(sync, created_at)",
        # the delivery engine's work list, tiny because finished rows leave it
        "CREATE INDEX deliveries_open ON deliveries(sync, id)"
        " WHERE status IN ('pending', 'retrying')",
        "CREATE INDEX deliveries_requeued ON deliveries(sync) WHERE requeued = 1",
        # errors: everything that did not end delivered, filtered or dropped
        "CREATE INDEX deliveries_problems ON deliveries(sync, created_at)"
        " WHERE status NOT IN ('delivered', 'filtered', 'dropped', 'pending')",
        # windowed attempts, failures and latency per sync (status, alerts, top)
        "CREATE INDEX attempts_sync_at ON attempts(sync, at)",
        "CREATE INDEX attempts_delivery ON attempts(delivery_id)",
        "CREATE INDEX violations_message ON violations(message_id)",
        "CREATE INDEX violations_at ON violations(at)",
        "CREATE INDEX function_errors_message ON function_errors(message_id)",
        "CREATE INDEX function_errors_sync_at ON function_errors(sync, at)",
    ]
    for statement in statements:
        db.execute(statement)


def _problems_index_by_id(db: sqlite_utils.Database) -> None:
    # SQLite uses a partial index only when the query repeats its WHERE term: the
    # problem statuses as one IN list, which `streamctl errors` always includes.
    db.execute("DROP INDEX IF EXISTS deliveries_problems")
    db.execute(
        "CREATE INDEX deliveries_problems ON deliveries(id)"
        f" WHERE status IN ({PROBLEM_STATUSES_SQL})"
    )


def _problems_index_without_in_list(db: sqlite_utils.Database) -> None:
    # SQLite evaluates `status IN (<3 or more constants>)` by building a temporary
    # table once per statement execution, and executemany executes once per row:
    # the IN-list index added ~4 us to every insert and update of a delivery, the
    # largest single cost of replay. An OR chain is plain comparisons; queries
    # repeat it (PROBLEM_STATUSES_WHERE) so the planner still picks the index.
    db.execute("DROP INDEX IF EXISTS deliveries_problems")
    db.execute(f"CREATE INDEX deliveries_problems ON deliveries(id) WHERE {PROBLEM_STATUSES_WHERE}")


def _queue_rows_per_append(db: sqlite_utils.Database) -> None:
    # One queue row per append (an HTTP request's events as one JSON array): `events`
    # counts them, so the depth in events is known without parsing rows. Rows already
    # queued hold one event object each.
    db.execute("ALTER TABLE queue ADD COLUMN events INTEGER NOT NULL DEFAULT 1")


def _message_keys(db: sqlite_utils.Database) -> None:
    # Dedupe and `explain` find events by a 32-bit hash of the messageId (`message_key`)
    # rather than by the text. MessageIds are random, so each write transaction adds keys
    # all over the index and rewrites nearly every page of it into the WAL: an index of
    # 4-byte keys has a quarter of the pages of one of ~36-byte texts (replay of 100,000
    # events: 12% faster, 0.35 s less CPU). Lookups compare the text too: keys collide.
    db.conn.create_function("streamctl_message_key", 1, message_key, deterministic=True)
    db.execute("ALTER TABLE events ADD COLUMN message_key INTEGER")
    db.execute("UPDATE events SET message_key = streamctl_message_key(message_id)")
    db.execute("DROP INDEX IF EXISTS events_message")
    db.execute("CREATE INDEX events_message_key ON events(message_key)")


def _alert_state(db: sqlite_utils.Database) -> None:
    # Alert rules' state and notification log (streamctl.store.alert_state). Before this
    # migration the alert evaluator created them itself, IF NOT EXISTS: so does this.
    for statement in ALERT_TABLES.split(";"):
        if statement.strip():
            db.execute(statement)  # not executescript: that would COMMIT the migration


def _delivery_owner(db: sqlite_utils.Database) -> None:
    # `run --workers N`: the worker that recorded a delivery sends it (streamctl.store.shard);
    # NULL for deliveries recorded by one process.
    db.execute("ALTER TABLE deliveries ADD COLUMN owner INTEGER")


ALERT_TABLES = """
CREATE TABLE IF NOT EXISTS alert_state (
    rule TEXT NOT NULL,
    sync TEXT NOT NULL,
    firing INTEGER NOT NULL,
    since REAL,               -- firing since (epoch s), NULL while not firing
    value REAL,               -- last value seen, NULL when the window had no data
    evaluated_at REAL NOT NULL,
    changed_at REAL NOT NULL, -- last transition (or first evaluation)
    notified_at REAL,         -- last notification that reached every channel
    PRIMARY KEY (rule, sync)
);
CREATE TABLE IF NOT EXISTS alert_notifications (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    sync TEXT NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,      -- firing | resolved
    at REAL NOT NULL,
    ok INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT                -- redacted, NULL when ok
);
CREATE INDEX IF NOT EXISTS alert_notifications_rule ON alert_notifications (rule, sync, at);
"""


def message_key(message_id: str) -> int:
    """`events.message_key`: CRC-32 of the messageId, signed so SQLite stores 4 bytes."""
    return zlib.crc32(message_id.encode("utf-8", "surrogatepass")) - 0x8000_0000


def _console_rollups(db: sqlite_utils.Database) -> None:
    # The console's charts read per-minute counts (streamctl.store.rollups): a week of a
    # million deliveries grouped by minute took seconds, its rollup rows take milliseconds.
    db.execute(
        "CREATE TABLE rollups (width INTEGER NOT NULL, start INTEGER NOT NULL,"
        " sync TEXT NOT NULL, metric TEXT NOT NULL, n INTEGER NOT NULL,"
        " PRIMARY KEY (width, start, sync, metric)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE rollup_state (id INTEGER PRIMARY KEY CHECK (id = 1), through REAL NOT NULL)"
    )
    # Archived deliveries by the time they were given up on: a plain comparison in the
    # partial index's term, so inserts and updates of other deliveries pay nothing.
    db.execute(
        "CREATE INDEX deliveries_archived_at ON deliveries(finished_at) WHERE status = 'archived'"
    )
    # The Errors page filtered by one status (retrying among many archived): newest first
    # from that status's rows alone, where the problems index walked every problem row
    # (80 ms for none in 35,000). Only problem rows are in it: other writes pay nothing.
    db.execute(
        "CREATE INDEX deliveries_problems_status ON deliveries(status, id)"
        f" WHERE {PROBLEM_STATUSES_WHERE}"
    )


PROBLEM_STATUSES = ("retrying", "archived", "blocked", "mapping_error", "function_error")
PROBLEM_STATUSES_SQL = ", ".join(f"'{status}'" for status in PROBLEM_STATUSES)  # migration 2
# The partial index's term (migration 3): a query must contain it verbatim to use the index.
PROBLEM_STATUSES_WHERE = "(" + " OR ".join(f"status = '{s}'" for s in PROBLEM_STATUSES) + ")"

SOURCE_RECORDS = (
    # Input a source could not take as an event (a Kafka message that is not JSON, not a
    # valid event, too large), with where it was read: `errors` lists it.
    "CREATE TABLE rejected_input (id INTEGER PRIMARY KEY, source TEXT NOT NULL,"
    " origin TEXT NOT NULL, reason TEXT NOT NULL, excerpt TEXT, at REAL NOT NULL)",
    "CREATE INDEX rejected_input_at ON rejected_input(at)",
    # Each Kafka source's consumer lag per partition, as its process last measured it:
    # `status` and `top` run in other processes and read it here.
    "CREATE TABLE source_lag (source TEXT NOT NULL, topic TEXT NOT NULL,"
    " partition_id INTEGER NOT NULL, end_offset INTEGER NOT NULL, committed INTEGER NOT NULL,"
    " updated_at REAL NOT NULL, PRIMARY KEY (source, topic, partition_id))",
)


def _source_records(db: sqlite_utils.Database) -> None:
    for statement in SOURCE_RECORDS:
        db.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (
    _initial_schema,
    _problems_index_by_id,
    _problems_index_without_in_list,
    _queue_rows_per_append,
    _message_keys,
    _console_rollups,
    _alert_state,
    _delivery_owner,
    _source_records,
)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(db: sqlite_utils.Database) -> int:
    if not db["schema_version"].exists():
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(
    db: sqlite_utils.Database, path: str, migrations: tuple[Migration, ...] = MIGRATIONS
) -> int:
    """Apply the migrations `db` lacks, each atomically; returns the version reached."""
    conn = db.conn
    with immediate(conn, path):
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        if db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
            db.execute("INSERT INTO schema_version (version) VALUES (0)")
    version = current_version(db)
    if version > len(migrations):
        msg = (
            f"{path}: store schema version {version} is newer than this streamctl "
            f"understands ({len(migrations)}); upgrade streamctl"
        )
        raise StoreError(msg)
    for number, migration in enumerate(migrations[version:], start=version + 1):
        try:
            with immediate(conn, path):
                migration(db)
                db.execute("UPDATE schema_version SET version = ?", [number])
        except sqlite3.Error as exc:
            msg = f"{path}: store migration {number} ({migration.__name__}) failed: {exc}"
            raise StoreError(msg) from exc
    return len(migrations)


@contextmanager
def immediate(conn: sqlite3.Connection, where: str) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on a connection in autocommit mode, rolled back on any
    error; SQLite's errors become StoreErrors naming `where` (the file). The one such
    wrapper: the store's transactions, the queue's and the migrations use it."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        msg = f"{where}: cannot write to the store: {failure_cause(exc)}"
        raise StoreError(msg) from exc
    try:
        yield conn
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        msg = f"{where}: cannot commit to the store: {failure_cause(exc)}"
        raise StoreError(msg) from exc


def _rollback(conn: sqlite3.Connection) -> None:
    """SQLite rolls back by itself on some errors (SQLITE_FULL among them): a second
    ROLLBACK would fail ("no transaction is active") and hide the real cause."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
