"""`duckdb`: every event as rows of a DuckDB database file, in Segment's warehouse layout.

    destinations:
      local-warehouse:
        type: duckdb
        config: { path: warehouse.duckdb }

The catalog entry; loading is `duckdb_backend`'s, imported on the first batch (DuckDB
costs about 0.15 s of start-up, which every command would otherwise pay).
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


class DuckDBDestination(StorageDestination):
    catalog = CatalogEntry(
        type="duckdb",
        description="Store every event in a DuckDB database file, in Segment's warehouse layout.",
        docs="https://segment.com/docs/connections/storage/warehouses/schema/",
        config=(
            ConfigField(
                "path",
                "string",
                required=True,
                project_path=True,
                description="The database file, relative to the project root.",
            ),
            ConfigField("schema", "string", default="main", description="Schema of the tables."),
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
        return f"{Path(str(self.config['path'])).as_uri()}#{self.config['schema']}"

    def open_backend(self) -> StagingBackend:
        from streamctl.destinations.duckdb_backend import DuckDBBackend

        return DuckDBBackend(Path(str(self.config["path"])), str(self.config["schema"]))

    def transient(self, exc: BaseException) -> bool:
        from streamctl.destinations.duckdb_backend import transient

        return transient(exc)
