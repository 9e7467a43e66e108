"""`postgres`: every event as rows of a PostgreSQL schema, in Segment's warehouse layout.

    destinations:
      warehouse:
        type: postgres
        config: { url: "${WAREHOUSE_URL}", schema: segment }

The catalog entry and the connection settings; loading is `postgres_backend`'s,
imported on the first batch (psycopg and its pool cost about 0.2 s of start-up, which
every command would otherwise pay).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamctl.destinations.base import CatalogEntry, ConfigField
from streamctl.destinations.storage import (
    STORAGE_EVENT_TYPES,
    WIDEN_TO_TEXT,
    StorageDestination,
)

if TYPE_CHECKING:
    from streamctl.destinations.warehouse import WarehouseBackend


class PostgresDestination(StorageDestination):
    catalog = CatalogEntry(
        type="postgres",
        description="Store every event in PostgreSQL tables, in Segment's warehouse layout.",
        docs="https://segment.com/docs/connections/storage/warehouses/schema/",
        config=(
            ConfigField(
                "url",
                "string",
                secret=True,
                description="postgresql://user:password@host:port/database (or the keys below).",
            ),
            ConfigField("host", "string", description="Server host (without url)."),
            ConfigField("port", "integer", description="Server port (default 5432)."),
            ConfigField("user", "string", description="User name."),
            ConfigField("password", "string", secret=True, description="Password."),
            ConfigField("database", "string", description="Database name."),
            ConfigField("schema", "string", default="public", description="Schema of the tables."),
            WIDEN_TO_TEXT,
        ),
        event_types=STORAGE_EVENT_TYPES,
        batch_size=5000,
        max_batch_size=10_000,
        identity="messageId (every table's key)",
    )

    def conninfo(self) -> str:
        import psycopg.conninfo

        keys = ("host", "port", "user", "password", "database")
        given = {k: self.config[k] for k in keys if self.config.get(k) not in (None, "")}
        if "database" in given:
            given["dbname"] = given.pop("database")
        return psycopg.conninfo.make_conninfo(str(self.config.get("url") or ""), **given)

    def target(self) -> str:
        import psycopg.conninfo

        parts = psycopg.conninfo.conninfo_to_dict(self.conninfo())
        host = parts.get("host") or "localhost"
        port = f":{parts['port']}" if parts.get("port") else ""
        return f"postgresql://{host}{port}/{parts.get('dbname', '')}#{self.config['schema']}"

    def open_backend(self) -> WarehouseBackend:
        from streamctl.destinations.postgres_backend import PostgresBackend

        return PostgresBackend(self.conninfo(), str(self.config["schema"]))

    def transient(self, exc: BaseException) -> bool:
        from streamctl.destinations.postgres_backend import transient

        return transient(exc)
