"""Loading the `postgres` destination's batches (the driver's side of `postgres`).

The layout, types and discards are `warehouse`'s; this module holds PostgreSQL's part:

- Loads are COPY: straight into the table, inside a savepoint. A retried batch finds
  its rows' keys taken (a unique violation): the savepoint is rolled back and the batch
  goes through a temporary table and `INSERT ... ON CONFLICT DO NOTHING` instead, so
  the common case pays for one COPY and nothing else. `users` always goes that way,
  with `ON CONFLICT DO UPDATE` keeping each trait's latest non-null value.
- Schema changes run in their own transaction under a transaction-level advisory
  lock on the schema's name: two processes adding the same table or column wait for
  each other, and the second finds the work done (`CREATE TABLE IF NOT EXISTS` alone
  races on the catalog's unique indexes).
- Connections come from a psycopg-pool pool, opened on the first batch in the
  delivering process (replay's worker processes build payloads, never connect).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg import sql

from streamctl.destinations.warehouse import (
    USERS,
    ColumnType,
    LoadPlan,
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
            self._load(plan)
        except psycopg.DataError as exc:
            # PostgreSQL's text cannot hold U+0000 (psycopg refuses it before sending):
            # rather than archive the event, the character is dropped, the batch loaded.
            if "NUL" not in str(exc):
                raise
            self._load(_without_nul(plan))

    def _load(self, plan: LoadPlan) -> None:
        with self._transaction() as conn:
            for table in (*plan.tables.values(), *([plan.discards] if plan.discards else [])):
                self._insert(conn, table)
            if plan.users is not None:
                self._upsert_users(conn, plan.users)

    def _insert(self, conn: psycopg.Connection[Any], load: TableLoad) -> None:
        try:
            with conn.transaction():  # a savepoint: a taken key undoes this COPY only
                self._copy(conn, self._table(load.name), load)
        except psycopg.errors.UniqueViolation:
            stage = self._stage(conn, load)
            conn.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                    self._table(load.name), _names(load.columns), _names(load.columns), stage
                )
            )

    def _upsert_users(self, conn: psycopg.Connection[Any], load: TableLoad) -> None:
        """Each trait's latest non-null value: a later identify overwrites, an earlier
        one (a late retry) only fills what is missing.

        In `id` order: two batches loading at once lock the users they share in the
        same order, so the second waits for the first instead of deadlocking (in the
        batches' own order, 4 batches loaded at once deadlocked 4 times in 4 tries, each
        costing PostgreSQL's 1 s deadlock_timeout and a retry)."""
        stage = self._stage(conn, load)
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
        conn.execute(
            sql.SQL(
                "INSERT INTO {} AS u ({}) SELECT {} FROM {} ORDER BY id"
                " ON CONFLICT (id) DO UPDATE SET {}"
            ).format(
                self._table(USERS),
                _names(load.columns),
                _names(load.columns),
                stage,
                sql.SQL(", ").join(updates),
            )
        )

    def _stage(self, conn: psycopg.Connection[Any], load: TableLoad) -> sql.Identifier:
        stage = sql.Identifier(f"_streamctl_stage_{load.name}"[:63])
        conn.execute(
            sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {}) ON COMMIT DROP").format(
                stage, self._table(load.name)
            )
        )
        self._copy(conn, stage, load)
        return stage

    def _copy(self, conn: psycopg.Connection[Any], table: sql.Composable, load: TableLoad) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(table, _names(load.columns))
        with conn.cursor().copy(statement) as copy:
            for row in load.tuples():
                copy.write_row(row)

    def _table(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.namespace, table)

    def close(self) -> None:
        self.pool.close()


def _without_nul(plan: LoadPlan) -> LoadPlan:
    def clean(load: TableLoad) -> TableLoad:
        rows = [
            {k: v.replace("\x00", "") if type(v) is str else v for k, v in row.items()}
            for row in load.rows
        ]
        return TableLoad(load.name, load.columns, load.types, rows)

    return LoadPlan(
        plan.changes,
        {name: clean(load) for name, load in plan.tables.items()},
        None if plan.users is None else clean(plan.users),
        None if plan.discards is None else clean(plan.discards),
    )


def _names(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, columns))


def transient(exc: BaseException) -> bool:
    """OperationalError covers lost connections, deadlocks, serialization failures, a
    full disk and an administrator's shutdown; a pool timeout is a server not answering."""
    return isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout)
