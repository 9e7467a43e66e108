"""Loading the `duckdb` destination's batches (the driver's side of `duckdb`).

The layout, types and discards are `warehouse`'s; this module holds DuckDB's part:

- A batch is one transaction: per table one `INSERT OR IGNORE ... SELECT ... FROM
  read_json(FILE)` of the rows written as NDJSON (orjson) to a temporary file beside
  the database (the key is the table's primary key, so a retried batch adds nothing);
  `users` is `INSERT ... ON CONFLICT DO UPDATE`. DuckDB's Python API has no appender,
  executemany costs ~10 ms a row, and a Python list per column (`unnest($1)`) goes
  through a conversion of every value: 12-19 us a row of 13 columns against 4 us for
  the file, measured on 8,000 `tracks` rows.
- DuckDB lets one process write a file at a time (its own file lock): the delivering
  process opens it on the first batch; another process's lock is a retry. Inside one
  process, two destinations on one file share DuckDB's database instance; their
  schema changes may conflict (a catalog write-write conflict): the loser rolls back,
  reads the schema again and applies what is still missing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from streamctl.destinations.duckdb_staging import StagedBatch
from streamctl.destinations.warehouse import (
    DISCARD_COLUMNS,
    DISCARDS,
    USERS,
    ColumnPlan,
    ColumnType,
    SchemaChange,
    SummaryPlan,
    TableSchema,
    by_table,
    schema_of,
    table_key,
    widens,
)

EVOLVE_TRIES = 5
SQL_TYPES: dict[ColumnType, str] = {
    "boolean": "BOOLEAN",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "timestamp": "TIMESTAMPTZ",
    "text": "VARCHAR",
}
FROM_SQL: dict[str, ColumnType] = {
    "BOOLEAN": "boolean",
    "BIGINT": "bigint",
    "INTEGER": "bigint",
    "SMALLINT": "bigint",
    "DOUBLE": "double",
    "FLOAT": "double",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMP": "timestamp",
}
# Tables with a primary key (small ones: upserts and discards). The event tables have
# none: DuckDB's index made each load about twice as slow, and `_not_stored` finds a
# retried batch's rows without it.
INDEXED = frozenset({USERS, DISCARDS})
_file_locks: dict[Path, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _file_lock(path: Path) -> threading.Lock:
    with _file_locks_guard:
        return _file_locks.setdefault(path.resolve(), threading.Lock())


def transient(exc: BaseException) -> bool:
    """IOException: another process holds the file's lock, or the disk is full;
    TransactionException: a concurrent writer of this process won a conflict."""
    return isinstance(exc, duckdb.IOException | duckdb.TransactionException)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote(name: str) -> str:
    """A DuckDB identifier: reserved words, unicode and capitals stay as they are."""
    return '"' + name.replace('"', '""') + '"'


class DuckDBBackend:
    """The tables of one schema of a DuckDB file (see the module docstring)."""

    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.namespace = schema
        self.con = duckdb.connect(str(path))
        self.con.execute("SET TimeZone = 'UTC'")
        # Every backend of this file in this process takes the same lock: DuckDB lets
        # one process write a file, and inside it loads go one at a time, so the key
        # checks of one never miss the rows of another.
        self.lock = _file_lock(path)

    def schema(self) -> dict[str, TableSchema]:
        with self.lock:
            return self._read_schema()

    def _read_schema(self) -> dict[str, TableSchema]:
        rows = self.con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = ? AND table_catalog = current_database()"
            " ORDER BY table_name, ordinal_position",
            [self.namespace],
        ).fetchall()
        return schema_of(rows, FROM_SQL)

    def evolve(self, changes: Sequence[SchemaChange]) -> dict[str, TableSchema]:
        with self.lock:
            for attempt in range(EVOLVE_TRIES):
                try:
                    self._evolve(changes)
                    break
                except duckdb.TransactionException:
                    # Another connection of this process changed the catalog first.
                    self.con.execute("ROLLBACK")
                    if attempt == EVOLVE_TRIES - 1:
                        raise
            return self._read_schema()

    def _evolve(self, changes: Sequence[SchemaChange]) -> None:
        self.con.execute("BEGIN")
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.namespace)}")
        current = self._read_schema()
        for table, table_changes in by_table(changes).items():
            existing = current.get(table)
            if existing is None:
                self.con.execute(self._create_table(table, table_changes))
                continue
            for change in table_changes:
                statement = self._column_change(change, existing.get(change.column))
                if statement:
                    self.con.execute(statement)
        self.con.execute("COMMIT")

    def _create_table(self, table: str, changes: Sequence[SchemaChange]) -> str:
        columns = [f"{quote(c.column)} {SQL_TYPES[c.type]}" for c in changes]
        columns += [
            f"{quote(c)} TIMESTAMPTZ DEFAULT current_timestamp" for c in ("loaded_at", "uuid_ts")
        ]
        if table in INDEXED:
            columns.append(f"PRIMARY KEY ({', '.join(map(quote, table_key(table)))})")
        return f"CREATE TABLE IF NOT EXISTS {self.table(table)} ({', '.join(columns)})"

    def _column_change(self, change: SchemaChange, current: ColumnType | None) -> str:
        table, column = self.table(change.table), quote(change.column)
        if current is None:
            return f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {SQL_TYPES[change.type]}"
        if widens(change, current):
            return f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {SQL_TYPES[change.type]}"
        return ""

    # -- a batch staged in DuckDB (`duckdb_staging`) ---------------------------------

    def stage(self, payloads: Sequence[Any]) -> StagedBatch:
        """The batch's payloads read into temporary tables of a connection of its own
        (outside the file's lock: another batch may be loading meanwhile)."""
        return StagedBatch(self.con.cursor(), self.path.parent, payloads)

    def load_staged(self, batch: StagedBatch, plan: SummaryPlan) -> int:
        """Write a staged batch as `plan` says, in one transaction; the rows written
        to the event tables (not `users`, not `discards`)."""
        con = batch.con
        written = 0
        with self.lock:
            con.execute("BEGIN")
            try:
                for table, columns in plan.tables.items():
                    if table == USERS:
                        continue
                    select = batch.select(table, columns)
                    written += self._insert_select(con, batch, table, columns, select)
                discards = batch.discards(plan.tables) if plan.discards else None
                if discards is not None:
                    self._insert_select(con, batch, DISCARDS, [], discards)
                if USERS in plan.tables:
                    self._upsert_users_select(
                        con, plan.tables[USERS], batch.users(plan.tables[USERS])
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return written

    def _insert_select(
        self,
        con: duckdb.DuckDBPyConnection,
        batch: StagedBatch,
        table: str,
        columns: Sequence[ColumnPlan],
        select: str,
    ) -> int:
        names = [c.name for c in columns] or list(DISCARD_COLUMNS)
        conditions = self.only_new_in(table)
        if table in INDEXED:
            verb = "INSERT OR IGNORE"
        else:
            verb = "INSERT"
            conditions.append(self._not_stored_in(con, batch, table))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        listed = ", ".join(map(quote, names))
        written = con.execute(
            f"{verb} INTO {self.table(table)} ({listed}) SELECT {listed} FROM ({select}) s{where}"
        ).fetchall()
        return int(written[0][0]) if written else 0

    def _not_stored_in(self, con: duckdb.DuckDBPyConnection, batch: StagedBatch, table: str) -> str:
        """`_not_stored` for a staged table's rows."""
        low, high = con.execute(
            "SELECT min(TRY_CAST(received_at AS TIMESTAMPTZ))::VARCHAR,"
            f" max(TRY_CAST(received_at AS TIMESTAMPTZ))::VARCHAR FROM {batch.rows_table(table)}"
        ).fetchall()[0]
        if low is None:
            return f"s.id NOT IN (SELECT id FROM {self.table(table)})"
        span = f"{_literal(low)}::TIMESTAMPTZ AND {_literal(high)}::TIMESTAMPTZ"
        return (
            f"NOT EXISTS (SELECT 1 FROM {self.table(table)} t"
            f" WHERE t.received_at BETWEEN {span} AND t.id = s.id)"
        )

    def only_new_in(self, table: str) -> list[str]:
        """Conditions on the selected rows (`s`) beyond the table's key; none here."""
        return []

    def _upsert_users_select(
        self, con: duckdb.DuckDBPyConnection, columns: Sequence[ColumnPlan], select: str
    ) -> None:
        names = [c.name for c in columns]
        con.execute(
            f"INSERT INTO {self.table(USERS)} AS u ({', '.join(map(quote, names))}) {select}"
            f" ON CONFLICT (id) DO UPDATE SET {self._user_updates(names)}"
        )

    @staticmethod
    def _user_updates(names: Sequence[str]) -> str:
        newer = "excluded.received_at >= u.received_at OR u.received_at IS NULL"
        updates = [
            f"{c} = CASE WHEN {newer} THEN COALESCE(excluded.{c}, u.{c}) ELSE COALESCE(u.{c}, excluded.{c}) END"
            for c in map(quote, names)
            if c not in ('"id"', '"received_at"')
        ]
        updates.append("received_at = greatest(u.received_at, excluded.received_at)")
        return ", ".join(updates)

    def table(self, table: str) -> str:
        return f"{quote(self.namespace)}.{quote(table)}"

    def close(self) -> None:
        with self.lock:
            self.con.close()
