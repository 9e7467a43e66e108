"""Loading the `parquet` destination's batches: a DuckDB staging file rolled into files.

See `parquet` for the layout of the folder, the rolls and the keys kept.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from streamctl.destinations.duckdb_backend import DuckDBBackend, quote
from streamctl.destinations.duckdb_staging import StagedBatch
from streamctl.destinations.duckdb_staging import literal as _literal
from streamctl.destinations.warehouse import DISCARDS, USERS, SummaryPlan, table_key

STAGING_FILE = "_staging.duckdb"
DEDUPE_DAYS = 7  # longer than any delivery.max_age: a retry comes back within it


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

    def only_new_in(self, table: str) -> list[str]:
        return [
            "NOT EXISTS (SELECT 1 FROM _streamctl.rolled r"
            f" WHERE r.table_name = {_literal(table)} AND r.key = {_key_sql(table, 's')})"
        ]

    def load_staged(self, batch: StagedBatch, plan: SummaryPlan) -> int:
        rows = super().load_staged(batch, plan)
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
        return rows

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
