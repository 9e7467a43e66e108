"""The console's reads (`streamctl.store.base.ConsoleReads`), written once for both stores.

    store.refresh_rollups()                               # roll up what settled
    series = store.read_series(since, width=600, sync="to-braze")
    totals = store.totals_by_sync(since, width=600)       # {sync: {metric: n}}
    newest = store.latest_event_id()
    events = store.events_after(newest - 10)    # [{id, source, message_id, at, event, outcomes}]

The rollups' algorithm is streamctl.store.rollups'; each store brings its SQL as
`rollup_tables` (SQLite's `SqliteRollups`, PostgreSQL's `PostgresRollups`). The
debugger's reads are the same SQL on both (`SqlReader`): `streamctl run` feeds the
debugger from its live feed; a console serving a store that another node writes
polls these instead, by event id (the primary key: a range seek).
"""

from __future__ import annotations

from typing import Any

import orjson

from streamctl.core.timestamps import iso
from streamctl.store import rollups
from streamctl.store.connection import SqlReader
from streamctl.store.rollups import RollupTables, Series


class ConsoleOperations:
    """Mixed into each store, which provides `rollup_tables`."""

    @property
    def rollup_tables(self) -> RollupTables:
        raise NotImplementedError

    def refresh_rollups(self, now: float | None = None) -> int:
        return rollups.refresh(self.rollup_tables, now)

    def read_series(
        self, since: float, width: int, sync: str | None = None, now: float | None = None
    ) -> Series:
        return rollups.read_series(self.rollup_tables, since, width, sync, now)

    def totals_by_sync(
        self, since: float, width: int, now: float | None = None
    ) -> dict[str, dict[str, int]]:
        return rollups.totals_by_sync(self.rollup_tables, since, width, now)

    def latest_event_id(self: SqlReader) -> int:
        row = self.row("SELECT max(id) FROM events")
        return int(row[0] or 0)

    def events_after(self: SqlReader, after_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """Events recorded after `after_id` (oldest first), each with its deliveries' statuses."""
        with self.lock:
            events = self.rows(
                "SELECT id, source, message_id, received_at, payload FROM events"
                " WHERE id > ? AND duplicate = 0 ORDER BY id LIMIT ?",
                [after_id, limit],
            )
            if not events:
                return []
            deliveries = self.rows(
                "SELECT event_id, sync, status, stage, event_type, status_code, error"
                " FROM deliveries WHERE event_id BETWEEN ? AND ? ORDER BY id",
                [events[0][0], events[-1][0]],
            )
        outcomes: dict[int, list[dict[str, Any]]] = {}
        for event_id, sync, status, stage, event_type, code, error in deliveries:
            outcomes.setdefault(event_id, []).append(
                {"sync": sync, "status": status, "stage": stage, "event_type": event_type,
                 "status_code": code, "error": error}
            )  # fmt: skip
        return [
            {
                "id": event_id,
                "source": source,
                "message_id": message_id,
                "at": iso(received_at),
                "event": orjson.loads(payload),
                "outcomes": outcomes.get(event_id, []),
            }
            for event_id, source, message_id, received_at, payload in events
        ]
