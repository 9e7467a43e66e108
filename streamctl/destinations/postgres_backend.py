"""Loading the `postgres` destination's batches (the driver's side of `postgres`).

The layout, types and discards are `warehouse`'s; this module holds PostgreSQL's part:

- A batch is one transaction of one `COPY ... FROM STDIN (FORMAT csv)` per table and
  the `users` upsert. The CSV is made by orjson (`_csv`: each row a JSON array on a
  line of its own, brackets taken off), so no Python runs per value. A retried batch
  finds its rows' keys taken (a unique violation): the transaction is rolled back and
  the batch loaded again as JSON arrays, `INSERT ... SELECT FROM
  json_populate_recordset(%s) ON CONFLICT DO NOTHING` (COPY has no ON CONFLICT), one
  pipelined round trip. `users` is upserted that way every time (`ON CONFLICT DO
  UPDATE`), keeping each trait's latest non-null value, in `id` order.
  Why COPY in CSV (measured in-process on 20,000 bench events, one connection, and in
  replays of 50,000 beside the JSON load in alternating rounds): PostgreSQL parses
  COPY's rows at about half the CPU of `json_populate_recordset`'s (5.5 against 10.5
  us an event; in replays 10 against 15 us an event of server CPU); psycopg's
  `write_row` per row cost the delivering process 2.5-3 us an event more than the
  JSON, the CSV by orjson 1.5-2 more (`tuples` and `_csv`). A string with a control
  character (JSON writes `\n`, CSV would read two characters) sends its table's
  rows through `write_row`, and one with U+0000 (which COPY cannot carry) the batch
  through the JSON path, which drops that character.
- Schema changes run in their own transaction under a transaction-level advisory
  lock on the schema's name: two processes adding the same table or column wait for
  each other, and the second finds the work done (`CREATE TABLE IF NOT EXISTS` alone
  races on the catalog's unique indexes).
- Connections come from a psycopg-pool pool, opened on the first batch in the
  delivering process (replay's worker processes build payloads, never connect).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg import sql
from psycopg.types.json import Json

from streamctl.destinations.warehouse import (
    USERS,
    ColumnType,
    LoadPlan,
    Row,
    SchemaChange,
    TableLoad,
    TableSchema,
    by_table,
    schema_of,
    table_key,
    widens,
)

POOL_SIZE = 4  # a sync's default delivery.concurrency
CONNECT_TIMEOUT = 10  # seconds
MAX_STATEMENT_BYTES = 32 << 20  # of JSON per statement (PostgreSQL takes up to 1 GB)

SQL_TYPES: dict[ColumnType, str] = {
    "boolean": "boolean",
    "bigint": "bigint",
    "double": "double precision",
    "timestamp": "timestamp with time zone",
    "text": "text",
}
# What a column someone created or changed by hand is taken for.
FROM_SQL: dict[str, ColumnType] = {
    "boolean": "boolean",
    "bigint": "bigint",
    "integer": "bigint",
    "smallint": "bigint",
    "double precision": "double",
    "real": "double",
    "numeric": "double",
    "timestamp with time zone": "timestamp",
    "timestamp without time zone": "timestamp",
}


class PostgresBackend:
    """The tables of one PostgreSQL schema (see the module docstring)."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self.namespace = schema
        self.pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"connect_timeout": CONNECT_TIMEOUT},
            open=False,
            timeout=CONNECT_TIMEOUT,
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except BaseException:
            self.pool.close()  # its threads would keep trying to connect
            raise

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    def schema(self) -> dict[str, TableSchema]:
        with self._transaction() as conn:
            return self._read_schema(conn)

    def _read_schema(self, conn: psycopg.Connection[Any]) -> dict[str, TableSchema]:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            [self.namespace],
        ).fetchall()
        return schema_of(rows, FROM_SQL)

    def evolve(self, changes: Sequence[SchemaChange]) -> dict[str, TableSchema]:
        with self._transaction() as conn:
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"streamctl:{self.namespace}"]
            )
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.namespace))
            )
            current = self._read_schema(conn)
            for table, table_changes in by_table(changes).items():
                existing = current.get(table)
                if existing is None:
                    conn.execute(self._create_table(table, table_changes))
                    continue
                for change in table_changes:
                    for statement in self._column_change(change, existing.get(change.column)):
                        conn.execute(statement)
            return self._read_schema(conn)

    def _create_table(self, table: str, changes: Sequence[SchemaChange]) -> sql.Composed:
        columns = [
            sql.SQL("{} {}").format(sql.Identifier(c.column), sql.SQL(SQL_TYPES[c.type]))
            for c in changes
        ]
        columns += [
            sql.SQL("{} timestamp with time zone DEFAULT now()").format(sql.Identifier(c))
            for c in ("loaded_at", "uuid_ts")
        ]
        key = sql.SQL(", ").join(map(sql.Identifier, table_key(table)))
        return sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
            self._table(table), sql.SQL(", ").join(columns), key
        )

    def _column_change(
        self, change: SchemaChange, current: ColumnType | None
    ) -> list[sql.Composed]:
        name = sql.Identifier(change.column)
        table = self._table(change.table)
        if current is None:
            return [
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    table, name, sql.SQL(SQL_TYPES[change.type])
                )
            ]
        if widens(change, current):
            return [
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
                    table,
                    name,
                    sql.SQL(SQL_TYPES[change.type]),
                    name,
                    sql.SQL(SQL_TYPES[change.type]),
                )
            ]
        return []  # another writer made it already

    def load(self, plan: LoadPlan) -> None:
        try:
            self._copy(plan)
            return
        except psycopg.errors.UniqueViolation:
            pass  # a retried batch: some of its rows' keys are taken
        except psycopg.DataError as exc:
            if exc.sqlstate is not None:
                raise  # the server refused a value (Feb 30): the engine splits the batch
            # psycopg's own: a string holds U+0000, which COPY cannot carry
        self._insert_skipping_taken(plan)

    def _copy(self, plan: LoadPlan) -> None:
        """The batch as one transaction: a COPY per table, then the `users` upsert."""
        with self._transaction() as conn:
            cursor = conn.cursor()
            for load in plan.inserted():
                self._copy_table(cursor, load)
            self._merge_users(conn, plan.users)

    def _copy_table(self, cursor: psycopg.Cursor[Any], load: TableLoad) -> None:
        table, names = self._table(load.name), _names(load.columns)
        rows = load.tuples()
        parts = [_csv(rows[n : n + CSV_ROWS]) for n in range(0, len(rows), CSV_ROWS)]
        if all(part is not None for part in parts):
            statement = sql.SQL(
                "COPY {} ({}) FROM STDIN (FORMAT csv, NULL 'null', ESCAPE '\\')"
            ).format(table, names)
            with cursor.copy(statement) as copy:
                for part in parts:
                    copy.write(part)  # type: ignore[arg-type]
            return
        # A string with a control character: psycopg formats each row.
        with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, names)) as copy:
            for row in rows:
                copy.write_row(row)

    def _insert_skipping_taken(self, plan: LoadPlan) -> None:
        """The batch again, a row whose key is taken skipped (`ON CONFLICT DO NOTHING`,
        which COPY lacks), as JSON arrays in one pipelined transaction."""
        with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            for load in plan.inserted():
                for part in _json_parts(load.rows):
                    conn.execute(self._insert(load), [part])
            self._merge_users(conn, plan.users)

    def _merge_users(self, conn: psycopg.Connection[Any], users: TableLoad | None) -> None:
        """Both load paths' last step: `users` upserted as JSON arrays (no COPY: each
        row is merged into the one stored)."""
        if users is not None:
            for part in _json_parts(users.rows):
                conn.execute(self._upsert_users(users), [part])

    def _insert(self, load: TableLoad) -> sql.Composed:
        names = _names(load.columns)
        return sql.SQL(
            "INSERT INTO {table} ({names}) SELECT {names} FROM json_populate_recordset("
            "NULL::{table}, %s) ON CONFLICT DO NOTHING"
        ).format(table=self._table(load.name), names=names)

    def _upsert_users(self, load: TableLoad) -> sql.Composed:
        """Each trait's latest non-null value: a later identify overwrites, an earlier
        one (a late retry) only fills what is missing.

        In `id` order: two batches loading at once lock the users they share in the
        same order, so the second waits for the first instead of deadlocking (in the
        batches' own order, 4 batches loaded at once deadlocked 4 times in 4 tries, each
        costing PostgreSQL's 1 s deadlock_timeout and a retry)."""
        newer = sql.SQL("excluded.received_at >= u.received_at OR u.received_at IS NULL")
        updates: list[sql.Composable] = [
            sql.SQL(
                "{c} = CASE WHEN {newer} THEN COALESCE(excluded.{c}, u.{c})"
                " ELSE COALESCE(u.{c}, excluded.{c}) END"
            ).format(c=sql.Identifier(c), newer=newer)
            for c in load.columns
            if c not in ("id", "received_at")
        ]
        updates.append(sql.SQL("received_at = GREATEST(u.received_at, excluded.received_at)"))
        return sql.SQL(
            "INSERT INTO {table} AS u ({names}) SELECT {names} FROM json_populate_recordset("
            "NULL::{table}, %s) ORDER BY id ON CONFLICT (id) DO UPDATE SET {updates}"
        ).format(
            table=self._table(USERS),
            names=_names(load.columns),
            updates=sql.SQL(", ").join(updates),
        )

    def _table(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.namespace, table)

    def close(self) -> None:
        self.pool.close()


SAMPLE_ROWS = 64  # rows serialized first to tell a batch's bytes per row


CSV_ROWS = 1000  # rows per `_csv` part: a few MB at most, even near the 32 KB event limit
_ESCAPE = re.compile(rb"\\[bfnrtu]")  # a JSON escape of a control character, or `\\` + letter


def _csv(rows: list[tuple[Any, ...]]) -> bytes | None:
    """Rows of scalars (str, int, float, bool, None) as the CSV that `COPY ... (FORMAT
    csv, NULL 'null', ESCAPE '\\')` reads, made by orjson; None when a string holds a
    control character (JSON writes it as `\n`, which CSV would read as two characters).

    Each row is a JSON array on a line of its own (a JSON text holds no line break):
    taking the brackets off makes it a CSV line, `"a\\"b",1,null` (CSV's quoted
    strings with `\\` escaping `"` and itself, as JSON's; `null` unquoted is NULL,
    `"null"` a string). Measured on 5,000 bench events (see the module docstring)."""
    data = b"\n".join(map(orjson.dumps, rows))
    if _ESCAPE.search(data) and _ESCAPE.search(data.replace(b"\\\\", b"")):
        return None  # (the second look: `\\` + letter is an escaped backslash, not a control)
    return data.replace(b"]\n[", b"\n")[1:-1] + b"\n"


def _json_parts(rows: list[Row]) -> list[Json]:
    """Rows as JSON arrays of at most `MAX_STATEMENT_BYTES` each (a batch of 10,000
    events near the 32 KB limit would otherwise be one 320 MB value).

    Each part's rows are as many as half the limit takes at the bytes per row seen
    last (first in a sample of `SAMPLE_ROWS` rows): a batch of usual size is one part,
    one `orjson.dumps` beside the sample's, and only a part whose rows come out larger
    than that is serialized again, cut to its own bytes per row. (Serializing the whole
    batch first to learn its size, as this did before, serialized every large batch
    twice.)"""
    if not rows:
        return []
    sample = _json(rows[:SAMPLE_ROWS])
    if len(rows) <= SAMPLE_ROWS and len(sample) <= MAX_STATEMENT_BYTES:
        return [Json(sample, dumps=bytes)]
    per_row = len(sample) / min(len(rows), SAMPLE_ROWS)
    parts: list[Json] = []
    start = 0
    while start < len(rows):
        part = rows[start : start + max(1, int(MAX_STATEMENT_BYTES / 2 / per_row))]
        data = _json(part)
        per_row = len(data) / len(part)
        if len(data) > MAX_STATEMENT_BYTES and len(part) > 1:
            continue  # again, as many rows as these rows' size allows
        parts.append(Json(data, dumps=bytes))  # (one row alone: PostgreSQL takes up to 1 GB)
        start += len(part)
    return parts


def _json(rows: list[Row]) -> bytes:
    """PostgreSQL's text cannot hold U+0000: rather than refuse the event, the character
    is dropped from its strings."""
    data = orjson.dumps(rows)
    if b"\\u0000" in data:
        data = orjson.dumps([_without_nul(row) for row in rows])
    return data


def _without_nul(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.replace("\x00", "") if type(v) is str else v for k, v in row.items()}


def _names(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, columns))


def transient(exc: BaseException) -> bool:
    """OperationalError covers lost connections, deadlocks, serialization failures, a
    full disk and an administrator's shutdown; a pool timeout is a server not answering."""
    return isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout)
