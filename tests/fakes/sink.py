"""A webhook destination on 127.0.0.1 that counts every messageId it is sent (the
`sink` fixture of tests/conftest.py): tests of many processes check each event
answered 200 arrived, and how often."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

from tests.fakes.http import Received, Reply


class Sink:
    """A webhook destination that counts every messageId it is sent; `hold()` makes it
    keep requests waiting until `release()`."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.arrived: set[str] = set()  # requests come in, answered or held
        self.refused: set[str] = set()  # answered 400 (permanent: archived at once)
        self.lock = threading.Lock()
        self.open = threading.Event()
        self.open.set()

    def answer(self, request: Received) -> Reply:
        message_id = request.json()["message_id"]
        with self.lock:
            self.arrived.add(message_id)
        self.open.wait(30)
        with self.lock:
            self.received[message_id] += 1
            if message_id in self.refused:
                return Reply(400, {"error": "refused"})
        return Reply(200, {"ok": True})

    def hold(self) -> None:
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    def count(self) -> int:
        with self.lock:
            return len(self.received)


def write_sink_project(
    root: Path, store: str, sink_url: str, write_key: str, bus: dict[str, object] | None = None
) -> Path:
    """A project whose `web` source (one write key) is delivered to the sink at
    `sink_url` by the sync `web-to-sink`, one event a request, fast retries."""
    root.mkdir(parents=True, exist_ok=True)
    project = {
        "version": 1,
        "store": store,
        **({"bus": bus} if bus else {}),
        "listen": {"host": "127.0.0.1", "port": 0},
        "sources": {"web": {"type": "http", "write_keys": [write_key]}},
        "destinations": {"sink": {"type": "webhook", "config": {"url": sink_url + "/hook"}}},
    }
    (root / "streamctl.yaml").write_text(json.dumps(project))
    (root / "syncs").mkdir(exist_ok=True)
    sync = {
        "name": "web-to-sink",
        "source": "web",
        "destination": "sink",
        "event_types": [
            {"type": "custom", "mappings": {"required": {"message_id": {"field": "messageId"}}}}
        ],
        "delivery": {"backoff": {"initial": "50ms", "max": "200ms"}, "timeout": "10s"},
    }
    (root / "syncs" / "web-to-sink.yaml").write_text(json.dumps(sync))
    return root
