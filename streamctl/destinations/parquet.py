"""`parquet`: every event as Parquet files in a folder, in Segment's warehouse layout.

    destinations:
      lake:
        type: parquet
        config: { path: lake, roll_rows: 100000, roll_interval: 300 }

    lake/tracks/date=2026-12-03/part-00000004-0.parquet
    lake/order_completed/date=2026-12-03/part-00000004-0.parquet
    lake/users/users.parquet                     # the latest traits per user, whole
    lake/_staging.duckdb                         # rows not rolled into files yet

Parquet files cannot take a row at a time, nor forget a duplicate: batches land in a
DuckDB staging file in the folder (`duckdb`'s backend, so the same types, discards and
keys), and are rolled into files, partitioned by `received_at`'s date (Hive style,
`date=YYYY-MM-DD`), by DuckDB's `COPY ... TO (PARTITION_BY ...)`: when `roll_rows` rows
are staged, when the oldest staged row is `roll_interval` seconds old (checked at each
batch), and when the destination closes (the end of a replay, a stopped `run`).

Idempotent by messageId: a rolled row's key stays in the staging file for
`DEDUPE_DAYS` days, and a batch's rows whose key is there are skipped. A roll writes
files named by a sequence number stored in the staging file, then in one transaction
records the keys, deletes the rows and moves the sequence on: a crash in between
rewrites the same files with the same rows (OVERWRITE_OR_IGNORE).

Read them back with DuckDB (or any Parquet reader):

    SELECT * FROM read_parquet('lake/order_completed/*/*.parquet', union_by_name = true)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from streamctl.destinations.base import CatalogEntry, ConfigField
from streamctl.destinations.duckdb import DuckDBBackend, quote, transient
from streamctl.destinations.storage import (
    STORAGE_EVENT_TYPES,
    WIDEN_TO_TEXT,
    StorageDestination,
)
from streamctl.destinations.warehouse import (
    DISCARDS,
    USERS,
    LoadPlan,
    TableLoad,
    WarehouseBackend,
    table_key,
)

STAGING_FILE = "_staging.duckdb"
DEDUPE_DAYS = 7  # longer than any delivery.max_age: a retry comes back within it
ROLL_ROWS = 100_000
ROLL_INTERVAL = 300.0  # seconds


class ParquetDestination(StorageDestination):
    catalog = CatalogEntry(
        type="parquet",
        description="Store every event as Parquet files (Segment's warehouse layout), "
        "partitioned by date.",
        docs="https://segment.com/docs/connections/storage/warehouses/schema/",
        config=(
            ConfigField(
                "path",
                "string",
                required=True,
                project_path=True,
                description="The folder of the files, relative to the project root.",
            ),
            ConfigField(
                "roll_rows",
                "integer",
                default=ROLL_ROWS,
                description="Write the staged rows to files once this many are staged.",
            ),
            ConfigField(
                "roll_interval",
                "number",
                default=ROLL_INTERVAL,
                description="Seconds: write the staged rows once the oldest is this old.",
            ),
            WIDEN_TO_TEXT,
        ),
        event_types=STORAGE_EVENT_TYPES,
        batch_size=5000,
        max_batch_size=10_000,
        identity="messageId (every table's key)",
    )

    def target(self) -> str:
        return Path(str(self.config["path"])).as_uri()

    def open_backend(self) -> WarehouseBackend:
        return ParquetBackend(
            Path(str(self.config["path"])),
            int(self.config["roll_rows"]),
            float(self.config["roll_interval"]),
        )

    def transient(self, exc: BaseException) -> bool:
        return transient(exc)


class ParquetBackend(DuckDBBackend):
    """A DuckDB staging file whose rows are rolled into Parquet files (module docstring)."""

    def __init__(self, folder: Path, roll_rows: int, roll_interval: float) -> None:
        super().__init__(folder / STAGING_FILE, "main")
        self.folder = folder
        self.roll_rows = roll_rows
        self.roll_interval = roll_interval
        self.con.execute("CREATE SCHEMA IF NOT EXISTS _streamctl")
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS _streamctl.rolled (table_name VARCHAR, key VARCHAR,"
            " received_at TIMESTAMPTZ, PRIMARY KEY (table_name, key))"
        )
        self.con.execute("CREATE TABLE IF NOT EXISTS _streamctl.rolls (seq BIGINT)")
        if not self.con.execute("SELECT count(*) FROM _streamctl.rolls").fetchall()[0][0]:
            self.con.execute("INSERT INTO _streamctl.rolls VALUES (0)")
        self.staged = self._staged_rows()
        self.staged_since = time.monotonic() if self.staged else None

    def only_new(self, load: TableLoad) -> list[str]:
        return [
            "NOT EXISTS (SELECT 1 FROM _streamctl.rolled r"
            f" WHERE r.table_name = '{load.name}' AND r.key = {_key_sql(load.name, 's')})"
        ]

    def load(self, plan: LoadPlan) -> None:
        super().load(plan)
        rows = sum(len(t.rows) for t in plan.tables.values())
        with self.lock:
            self.staged += rows
            if self.staged_since is None and rows:
                self.staged_since = time.monotonic()
            due = self.staged >= self.roll_rows or (
                self.staged_since is not None
                and time.monotonic() - self.staged_since >= self.roll_interval
            )
        if due:
            self.roll()

    def roll(self) -> None:
        """Write every staged row to Parquet files, then forget them (keys kept)."""
        with self.lock:
            seq = self.con.execute("SELECT seq FROM _streamctl.rolls").fetchall()[0][0]
            tables = [t for t in self._read_schema() if t != USERS]
            for table in tables:
                self._write_files(table, seq)
            self._write_users()
            self.con.execute("BEGIN")
            for table in tables:
                self.con.execute(
                    "INSERT OR IGNORE INTO _streamctl.rolled SELECT ?, "
                    f"{_key_sql(table, 't')}, t.received_at FROM {self.table(table)} t",
                    [table],
                )
                self.con.execute(f"DELETE FROM {self.table(table)}")
            self.con.execute(
                "DELETE FROM _streamctl.rolled WHERE received_at < now() - to_days(?)",
                [DEDUPE_DAYS],
            )
            self.con.execute("UPDATE _streamctl.rolls SET seq = seq + 1")
            self.con.execute("COMMIT")
            self.staged, self.staged_since = 0, None

    def _write_files(self, table: str, seq: int) -> None:
        source = self.table(table)
        if not self.con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]:
            return
        folder = (self.folder / table).as_posix().replace("'", "''")
        # The partition column is `date`: a column of that name is written as `date_`.
        columns = "* RENAME (date AS date_)" if "date" in self._read_schema()[table] else "*"
        self.con.execute(
            f"COPY (SELECT {columns}, strftime(received_at, '%Y-%m-%d') AS date FROM {source})"
            f" TO '{folder}' (FORMAT parquet, PARTITION_BY (date), OVERWRITE_OR_IGNORE,"
            f" FILENAME_PATTERN 'part-{seq:08d}-{{i}}')"
        )

    def _write_users(self) -> None:
        if USERS not in self._read_schema():
            return
        folder = self.folder / USERS
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "users.parquet.partial"
        escaped = partial.as_posix().replace("'", "''")
        self.con.execute(
            f"COPY (SELECT * FROM {self.table(USERS)}) TO '{escaped}' (FORMAT parquet)"
        )
        os.replace(partial, folder / "users.parquet")  # readers never see half a file

    def _staged_rows(self) -> int:
        return sum(
            self.con.execute(f"SELECT count(*) FROM {self.table(t)}").fetchall()[0][0]
            for t in self._read_schema()
            if t != USERS
        )

    def close(self) -> None:
        if self.staged:
            self.roll()
        super().close()


def _key_sql(table: str, alias: str) -> str:
    """One text value per row key (discards have three key columns)."""
    columns = [f"{alias}.{quote(c)}" for c in table_key(table)]
    return columns[0] if table != DISCARDS else " || '/' || ".join(columns)
