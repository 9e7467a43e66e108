"""The state store (docs/store.md): the `Store` and `EventQueue` protocols, and SQLite's
implementation of them, `SqliteStore` (its ingest queue: `store.queue`)."""

from __future__ import annotations

from streamctl.store.base import Store
from streamctl.store.db import SqliteStore
from streamctl.store.queue import EventQueue
from streamctl.store.sqlite_queue import SqliteEventQueue

__all__ = ["EventQueue", "SqliteEventQueue", "SqliteStore", "Store"]
