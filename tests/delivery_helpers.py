"""Helpers for the delivery, replay and errors tests: a project on disk whose syncs
deliver through `webhook` destinations to FakeServers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamctl.config.loader import load_project
from streamctl.core.events import Event
from streamctl.core.model import Project
from streamctl.delivery.runtime import Runtime
from streamctl.sources.normalise import normalise
from streamctl.store import SqliteStore
from tests.store_rows import store_rows

FAST_DELIVERY = {
    "backoff": {"initial": "50ms", "max": "200ms"},
    "max_attempts": 6,
    "timeout": "10s",
}


def write_project(root: Path, syncs: dict[str, dict[str, Any]], urls: dict[str, str]) -> Path:
    """streamctl.yaml with one webhook destination per url, one sync file per entry.

    `syncs` maps a sync name to {"destination": NAME, "delivery": {...}, "filter": {...}}.
    Every sync maps userId, event and properties.n; with `"filter"` only matching events.
    """
    root.mkdir(parents=True, exist_ok=True)
    project = {
        "version": 1,
        "store": "state.db",
        "sources": {"web": {"type": "http", "write_keys": ["test-key"]}},
        "destinations": {
            name: {"type": "webhook", "config": {"url": url}} for name, url in urls.items()
        },
    }
    (root / "streamctl.yaml").write_text(json.dumps(project))
    (root / "syncs").mkdir(exist_ok=True)
    for name, spec in syncs.items():
        event_type: dict[str, Any] = {
            "type": "custom",
            "mappings": {
                "required": {
                    "user_id": {"field": "userId"},
                    "event": {"field": "event"},
                    "n": {"field": "properties.n"},
                    "bad": {"field": "properties.bad"},
                }
            },
        }
        if "filter" in spec:
            event_type["filter"] = spec["filter"]
        sync = {
            "name": name,
            "source": "web",
            "destination": spec["destination"],
            "event_types": [event_type],
            "delivery": {**FAST_DELIVERY, **spec.get("delivery", {})},
        }
        (root / "syncs" / f"{name}.yaml").write_text(json.dumps(sync))
    return root


def make_events(
    count: int, *, user: str | None = None, start: int = 0, **props: Any
) -> list[Event]:
    return [
        normalise(
            {
                "type": "track",
                "event": "Order Completed",
                "userId": user or f"user-{i}",
                "messageId": f"m-{i}",
                "properties": {"n": i, **props},
            }
        )
        for i in range(start, start + count)
    ]


def deliver(
    root: Path,
    events: Sequence[Event],
    *,
    syncs: Sequence[str] = (),
    timeout: float = 30.0,
    until_idle: bool = True,
) -> Project:
    """Submit events through a Runtime over the project's store and wait for every outcome."""
    project = load_project(root)

    async def main() -> None:
        store = SqliteStore.for_project(project)
        try:
            async with Runtime(project, store, syncs=syncs) as runtime:
                await runtime.submit("web", list(events))
                if until_idle:
                    assert await runtime.drain(timeout), "deliveries did not finish in time"
        finally:
            store.close()

    asyncio.run(main())
    return project


def rows(root: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return store_rows(load_project(root).store_file, sql, params)


def statuses(root: Path, sync: str) -> dict[str, int]:
    return dict(
        rows(root, "SELECT status, count(*) FROM deliveries WHERE sync = ? GROUP BY status", [sync])
    )


def received_ns(bodies: list[Any]) -> list[int]:
    """The `n` of every payload a webhook server received (bodies are objects or arrays)."""
    out: list[int] = []
    for body in bodies:
        for payload in body if isinstance(body, list) else [body]:
            out.append(payload["n"])
    return out
