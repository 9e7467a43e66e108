"""The SQLite store (docs/store.md): `Store.open(path)`, its ingest queue `store.queue`."""

from __future__ import annotations

from streamctl.store.db import AttemptRecord, PendingDelivery, RecordedResults, Store
from streamctl.store.sqlite_queue import SqliteEventQueue

__all__ = ["AttemptRecord", "PendingDelivery", "RecordedResults", "SqliteEventQueue", "Store"]
