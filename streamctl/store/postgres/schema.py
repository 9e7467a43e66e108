"""The PostgreSQL store's schema, as ordered migrations (docs/store.md).

The tables and columns are SQLite's (streamctl/store/schema.py), so the read-side
queries (`errors`, `status`, `explain`, monitoring) are the same text on both, plus
what many processes sharing one database need:

- `message_ids`: the dedupe key. Its primary key (source, message_id) is what makes
  two nodes receiving the same event record it once: each recording transaction
  inserts its events' ids, and the conflict tells it which were taken (within the
  24 h window) by another transaction, committed or about to be.
- `nodes`: one row per running process, its heartbeat in the database's own clock.
  `deliveries.owner` and `queue.owner` name the node that holds the row: a row whose
  owner's heartbeat is older than the lease is free for another node to claim.
- `streamctl_reserve_ids(sequence, n)`: n consecutive ids in one call, so a batch's
  events and deliveries are linked before they are written (COPY, no round trip per
  row), and a writer's deliveries have ascending ids, which the delivery lanes need.

`migrate` holds a session advisory lock while it looks and applies, so two processes
starting at once apply each migration once: the second waits, then finds nothing to
do. Each migration runs in its own transaction (PostgreSQL's DDL is transactional).
Add one by appending to `MIGRATIONS`; never edit one that has shipped.
"""

from __future__ import annotations

import psycopg

from streamctl.core.errors import StoreError
from streamctl.store.schema import PROBLEM_STATUSES_WHERE, SOURCE_RECORDS

MIGRATION_LOCK = 0x5354_4D31  # pg_advisory_lock key of the migrations ("STM1")

_INITIAL = (
    """CREATE TABLE queue (
        id bigserial PRIMARY KEY,
        source text NOT NULL,
        event text NOT NULL,
        events integer NOT NULL DEFAULT 1,
        appended_at double precision NOT NULL,
        owner bigint
    )""",
    # The queue is a hot, short-lived table: vacuum it often rather than by fraction.
    "ALTER TABLE queue SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000)",
    """CREATE TABLE nodes (
        id bigserial PRIMARY KEY,
        name text NOT NULL,
        started_at double precision NOT NULL,
        heartbeat_at double precision NOT NULL
    )""",
    "CREATE SEQUENCE events_id_seq",
    """CREATE TABLE events (
        id bigint PRIMARY KEY,
        source text NOT NULL,
        message_id text NOT NULL,
        message_key integer,
        received_at double precision NOT NULL,
        payload text NOT NULL,
        contract_outcome text,
        duplicate integer NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE message_ids (
        source text NOT NULL,
        message_id text NOT NULL,
        received_at double precision NOT NULL,
        PRIMARY KEY (source, message_id)
    )""",
    "CREATE SEQUENCE deliveries_id_seq",
    """CREATE TABLE deliveries (
        id bigint PRIMARY KEY,
        event_id bigint NOT NULL,
        message_id text NOT NULL,
        source text NOT NULL,
        sync text NOT NULL,
        destination text,
        event_type text,
        status text NOT NULL,
        stage text NOT NULL,
        error text,
        user_key text,
        payload text,
        attempts integer NOT NULL DEFAULT 0,
        status_code integer,
        response text,
        latency_ms double precision,
        created_at double precision NOT NULL,
        first_attempt_at double precision,
        last_attempt_at double precision,
        next_attempt_at double precision,
        finished_at double precision,
        requeued integer NOT NULL DEFAULT 0,
        owner bigint
    )""",
    """CREATE TABLE attempts (
        id bigserial PRIMARY KEY,
        delivery_id bigint NOT NULL,
        sync text NOT NULL,
        destination text,
        at double precision NOT NULL,
        status text NOT NULL,
        status_code integer,
        latency_ms double precision,
        error text,
        response text,
        retry_after double precision
    )""",
    """CREATE TABLE violations (
        id bigserial PRIMARY KEY,
        event_id bigint NOT NULL,
        message_id text NOT NULL,
        source text NOT NULL,
        contract text NOT NULL,
        version text,
        event_name text,
        kind text NOT NULL,
        pointer text,
        message text,
        outcome text,
        at double precision NOT NULL
    )""",
    """CREATE TABLE function_errors (
        id bigserial PRIMARY KEY,
        event_id bigint NOT NULL,
        message_id text NOT NULL,
        sync text NOT NULL,
        error text,
        traceback text,
        at double precision NOT NULL
    )""",
    """CREATE TABLE alert_state (
        rule text NOT NULL,
        sync text NOT NULL,
        firing integer NOT NULL,
        since double precision,
        value double precision,
        evaluated_at double precision NOT NULL,
        changed_at double precision NOT NULL,
        notified_at double precision,
        PRIMARY KEY (rule, sync)
    )""",
    """CREATE TABLE alert_notifications (
        id bigserial PRIMARY KEY,
        rule text NOT NULL,
        sync text NOT NULL,
        channel text NOT NULL,
        state text NOT NULL,
        at double precision NOT NULL,
        ok integer NOT NULL,
        attempts integer NOT NULL,
        error text
    )""",
    "CREATE INDEX events_message_key ON events (message_key)",
    "CREATE INDEX events_received ON events (received_at)",
    "CREATE INDEX message_ids_received ON message_ids (received_at)",
    "CREATE INDEX deliveries_event ON deliveries (event_id)",
    "CREATE INDEX deliveries_sync_created ON deliveries (sync, created_at)",
    "CREATE INDEX deliveries_open ON deliveries (sync, id) WHERE status IN ('pending', 'retrying')",
    "CREATE INDEX deliveries_requeued ON deliveries (sync) WHERE requeued = 1",
    f"CREATE INDEX deliveries_problems ON deliveries (id) WHERE {PROBLEM_STATUSES_WHERE}",
    "CREATE INDEX attempts_sync_at ON attempts (sync, at)",
    "CREATE INDEX attempts_delivery ON attempts (delivery_id)",
    "CREATE INDEX violations_message ON violations (message_id)",
    "CREATE INDEX violations_at ON violations (at)",
    "CREATE INDEX violations_event ON violations (event_id)",
    "CREATE INDEX function_errors_message ON function_errors (message_id)",
    "CREATE INDEX function_errors_sync_at ON function_errors (sync, at)",
    "CREATE INDEX function_errors_event ON function_errors (event_id)",
    "CREATE INDEX alert_notifications_rule ON alert_notifications (rule, sync, at)",
    # A session lock around nextval and setval: a concurrent caller cannot take an id
    # inside the block. Held for two statements, not for the caller's transaction.
    """CREATE FUNCTION streamctl_reserve_ids(sequence regclass, n bigint) RETURNS bigint
    LANGUAGE plpgsql AS $$
    DECLARE
        first bigint;
    BEGIN
        PERFORM pg_advisory_lock(hashtext(sequence::text));
        first := nextval(sequence);
        IF n > 1 THEN
            PERFORM setval(sequence, first + n - 1);
        END IF;
        PERFORM pg_advisory_unlock(hashtext(sequence::text));
        RETURN first;
    END $$""",
)

# As SQLite's migration 6: archived deliveries by when they were given up on (alerts'
# `archived`, the console), and the problem rows by status, newest first (`errors
# --status X`), each partial, so writes of other deliveries pay nothing.
_BY_STATUS = (
    "CREATE INDEX deliveries_archived_at ON deliveries (finished_at) WHERE status = 'archived'",
    f"CREATE INDEX deliveries_problems_status ON deliveries (status, id) WHERE {PROBLEM_STATUSES_WHERE}",
)

# As SQLite's migration 6: the console's per-minute counts (streamctl.store.rollups; the
# PostgreSQL side in streamctl.store.postgres.rollups).
_CONSOLE_ROLLUPS = (
    """CREATE TABLE rollups (
        width integer NOT NULL,
        start bigint NOT NULL,
        sync text NOT NULL,
        metric text NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (width, start, sync, metric)
    )""",
    """CREATE TABLE rollup_state (
        id integer PRIMARY KEY CHECK (id = 1),
        through double precision NOT NULL
    )""",
)

# As SQLite's migration 9: rejected input and Kafka sources' lag (the SQL is the same,
# but for the key that numbers rejected input).
_SOURCE_RECORDS = tuple(
    s.replace("id INTEGER PRIMARY KEY", "id bigserial PRIMARY KEY")
    .replace(" REAL", " double precision")
    .replace(" INTEGER", " bigint")
    for s in SOURCE_RECORDS
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _INITIAL,
    _BY_STATUS,
    _CONSOLE_ROLLUPS,
    _SOURCE_RECORDS,
)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Migrations applied to this database (0: none, or no streamctl store at all)."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    version = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(version[0]) if version else 0  # type: ignore[call-overload]


def migrate(conn: psycopg.Connection[tuple[object, ...]], where: str) -> tuple[int, int]:
    """Apply the migrations the database lacks; (version before, version now).
    `conn` is in autocommit mode; `where` names the database in messages."""
    conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        conn.execute(
            "INSERT INTO schema_version (version) SELECT 0"
            " WHERE NOT EXISTS (SELECT 1 FROM schema_version)"
        )
        before = current_version(conn)
        if before > len(MIGRATIONS):
            msg = (
                f"{where}: store schema version {before} is newer than this streamctl"
                f" understands ({len(MIGRATIONS)}); upgrade streamctl"
            )
            raise StoreError(msg)
        for number, statements in enumerate(MIGRATIONS[before:], start=before + 1):
            try:
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute("UPDATE schema_version SET version = %s", [number])
            except psycopg.Error as exc:
                msg = f"{where}: store migration {number} failed: {exc}"
                raise StoreError(msg) from exc
        return before, len(MIGRATIONS)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
