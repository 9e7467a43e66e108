"""A webhook destination on 127.0.0.1 that counts every messageId it is sent (the
`sink` fixture of tests/conftest.py): tests of many processes check each event
answered 200 arrived, and how often."""

from __future__ import annotations

import threading
from collections import Counter

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
