"""The Runtime's observer hook (streamctl.delivery.observer) and its queue notification."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from streamctl.config.loader import load_project
from streamctl.delivery import runtime as runtime_module
from streamctl.delivery.runtime import Runtime
from streamctl.store import SqliteStore
from tests.delivery_helpers import make_events, write_project
from tests.fakes.http import FakeServer, Reply


class Recorder:
    """A RuntimeObserver that remembers what it was told."""

    def __init__(self) -> None:
        self.decisions: list[tuple[str, str]] = []
        self.offered: list[int] = []
        self.attempts: list[tuple[str, str]] = []
        self.records: list[Any] = []
        self.archived: list[tuple[str, int, str]] = []

    def on_decisions(self, results: Sequence[Any]) -> None:
        self.decisions += [(d.sync, d.status.value) for r in results for d in r.decisions]

    def on_offered(self, deliveries: Sequence[Any]) -> None:
        self.offered += [d.id for d in deliveries]

    def on_attempts(self, sync: str, records: Sequence[Any]) -> None:
        self.records += records
        self.attempts += [(sync, r.new_status.value) for r in records for _ in r.delivery_ids]

    def on_archived(self, sync: str, deliveries: Sequence[Any], reason: str) -> None:
        self.archived += [(sync, d.id, reason) for d in deliveries]


class Broken(Recorder):
    def on_attempts(self, sync: str, records: Sequence[Any]) -> None:
        raise RuntimeError("the metrics backend is gone")


def _run(tmp_path: Any, observer: Any, url: str, count: int = 5) -> None:
    root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": url})
    project = load_project(root)

    async def main() -> None:
        store = SqliteStore.for_project(project)
        store.queue.append("web", make_events(count))
        async with Runtime(project, store, observer=observer) as runtime:
            runtime.process_queue(store.queue)
            assert await runtime.drain(30)
        store.close()

    asyncio.run(main())


def test_the_observer_is_told_every_decision_offer_and_attempt(tmp_path):
    recorder = Recorder()
    with FakeServer() as server:
        _run(tmp_path, recorder, server.url)
    assert recorder.decisions == [("orders", "pending")] * 5
    assert len(recorder.offered) == 5
    assert recorder.attempts == [("orders", "delivered")] * 5
    assert recorder.archived == []


def test_a_batch_answered_as_one_is_one_attempt_record_of_all_its_deliveries(tmp_path):
    recorder = Recorder()
    with FakeServer() as server:
        _run(tmp_path, recorder, server.url)
        requests = len(server.bodies())
    assert len(recorder.records) == requests
    assert sorted(i for r in recorder.records for i in r.delivery_ids) == sorted(recorder.offered)


def test_an_archive_on_a_400_is_reported_as_an_attempt_that_archives(tmp_path):
    recorder = Recorder()
    with FakeServer(lambda _request: Reply(400, {"error": "bad"})) as server:
        _run(tmp_path, recorder, server.url, count=2)
    assert recorder.attempts == [("orders", "archived")] * 2


def test_a_failing_observer_never_stops_delivery(tmp_path):
    broken = Broken()
    with FakeServer() as server:
        _run(tmp_path, broken, server.url)
        delivered = sum(len(b) if isinstance(b, list) else 1 for b in server.bodies())
    assert delivered == 5
    assert len(broken.offered) == 5


def test_notify_wakes_the_processor_before_its_poll(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_module, "QUEUE_POLL", 30.0)  # only a notify can wake it
    with FakeServer() as server:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        project = load_project(root)

        async def main() -> int:
            store = SqliteStore.for_project(project)
            async with Runtime(project, store) as runtime:
                runtime.process_queue(store.queue)
                await asyncio.sleep(0.1)  # the processor found nothing and waits
                store.queue.append("web", make_events(3))
                runtime.notify()
                for _ in range(500):
                    if store.queue.depth() == 0:
                        break
                    await asyncio.sleep(0.01)
                depth = store.queue.depth()
            store.close()
            return depth

        assert asyncio.run(main()) == 0
