"""Reads of the console's debugger when no live feed is at hand (`streamctl console`).

    newest = latest_event_id(store)
    events = events_after(store, newest - 10)    # [{id, source, message_id, event, outcomes}]

`streamctl run` feeds the debugger from its live feed; a console serving a store that
another node writes polls these instead, by event id (the primary key: a range seek).
"""

from __future__ import annotations

from typing import Any

import orjson

from streamctl.core.timestamps import iso
from streamctl.store.connection import SqliteConnection


def latest_event_id(store: SqliteConnection) -> int:
    with store.lock:
        row = store.conn.execute("SELECT max(id) FROM events").fetchone()
    return int(row[0] or 0)


def events_after(store: SqliteConnection, after_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """Events recorded after `after_id` (oldest first), each with its deliveries' statuses."""
    with store.lock:
        events = store.conn.execute(
            "SELECT id, source, message_id, received_at, payload FROM events"
            " WHERE id > ? AND duplicate = 0 ORDER BY id LIMIT ?",
            [after_id, limit],
        ).fetchall()
        if not events:
            return []
        deliveries = store.conn.execute(
            "SELECT event_id, sync, status, stage, event_type, status_code, error FROM deliveries"
            " WHERE event_id BETWEEN ? AND ? ORDER BY id",
            [events[0][0], events[-1][0]],
        ).fetchall()
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
