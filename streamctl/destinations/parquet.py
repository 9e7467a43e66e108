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

Loading is `parquet_backend`'s, imported on the first batch (DuckDB costs about
0.15 s of start-up, which every command would otherwise pay).

Read them back with DuckDB (or any Parquet reader):

    SELECT * FROM read_parquet('lake/order_completed/*/*.parquet', union_by_name = true)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from streamctl.destinations.base import CatalogEntry, ConfigField
from streamctl.destinations.storage import (
    STORAGE_EVENT_TYPES,
    WIDEN_TO_TEXT,
    StorageDestination,
)

if TYPE_CHECKING:
    from streamctl.destinations.warehouse import StagingBackend

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
        # A commit, and each statement's set-up, cost about as much for 100 rows as for
        # 10,000 (docs/destinations/duckdb.md#throughput).
        batch_size=10_000,
        max_batch_size=20_000,
        identity="messageId (every table's key)",
    )

    def target(self) -> str:
        return Path(str(self.config["path"])).as_uri()

    def open_backend(self) -> StagingBackend:
        from streamctl.destinations.parquet_backend import ParquetBackend

        return ParquetBackend(
            Path(str(self.config["path"])),
            int(self.config["roll_rows"]),
            float(self.config["roll_interval"]),
        )

    def transient(self, exc: BaseException) -> bool:
        from streamctl.destinations.duckdb_backend import transient

        return transient(exc)
