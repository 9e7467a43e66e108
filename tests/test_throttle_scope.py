"""A throttled user waits alone: Amplitude's per-user 429 does not pause the whole lane,
a destination-wide 429 (nobody named) does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx

from streamctl.config.loader import load_project
from streamctl.core.events import Event
from streamctl.core.model import Project
from streamctl.delivery.runtime import Runtime
from streamctl.destinations import amplitude
from streamctl.destinations.amplitude import AmplitudeDestination
from streamctl.destinations.base import ItemResult, ItemStatus
from streamctl.sources.normalise import normalise
from streamctl.store import SqliteStore
from tests.fakes.http import FakeServer, Received, Reply
from tests.fakes.vendors_a import FakeAmplitude
from tests.store_rows import store_rows

KEY = "amp-key-123"
HOT, COLD = "hot-user-1", "cold-user-1"


def write_project(root: Path, url: str) -> Project:
    project = {
        "version": 1,
        "store": "state.db",
        "sources": {"web": {"type": "http", "write_keys": ["test-key"]}},
        "destinations": {"amp": {"type": "amplitude", "config": {"api_key": KEY, "base_url": url}}},
    }
    sync = {
        "name": "to-amplitude",
        "source": "web",
        "destination": "amp",
        "event_types": [
            {"type": "custom", "mappings": {"required": {"event_type": {"field": "event"}}}}
        ],
        "delivery": {
            "ordering": "per_user",
            "backoff": {"initial": "50ms", "max": "200ms"},
            "max_attempts": 6,
            "timeout": "10s",
        },
    }
    (root / "streamctl.yaml").write_text(json.dumps(project))
    (root / "syncs").mkdir()
    (root / "syncs" / "to-amplitude.yaml").write_text(json.dumps(sync))
    return load_project(root)


def track(message_id: str, user: str) -> Event:
    return normalise(
        {"type": "track", "event": "Song Played", "userId": user, "messageId": message_id}
    )


def delivery_status(project: Project, message_id: str) -> str | None:
    found = store_rows(
        project.store_file, "SELECT status FROM deliveries WHERE message_id = ?", [message_id]
    )
    return str(found[0][0]) if found else None


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")


def users_per_request(requests: list[Received]) -> list[list[str]]:
    return [[e["user_id"] for e in req.json()["events"]] for req in requests]


def test_a_throttled_user_waits_while_other_users_are_delivered(tmp_path, monkeypatch):
    # Amplitude asks a throttled user to wait 30 s; 2 s keeps the test short and still
    # leaves the retry pending well after the other user's events could have gone.
    monkeypatch.setattr(amplitude, "THROTTLE_WAIT", 2.0)
    fake = FakeAmplitude(KEY, throttled_users={HOT})

    def answer(req: Received) -> Reply:
        reply = fake.answer(req)
        if reply.status == 429:
            fake.throttled_users.clear()  # throttled once: the retry goes through
        return reply

    seen_when_cold_arrived: dict[str, str | None] = {}
    with FakeServer(answer) as server:
        project = write_project(tmp_path, server.url)

        async def main() -> None:
            store = SqliteStore.for_project(project)
            try:
                async with Runtime(project, store) as runtime:
                    await runtime.submit("web", [track("hot-0", HOT)])
                    await until(
                        lambda: delivery_status(project, "hot-0") == "retrying",
                        "the hot user's first event is throttled",
                    )
                    # The hot user's next event (held behind its first, ordering per_user)
                    # and another user's event arrive while the first one waits.
                    await runtime.submit("web", [track("hot-1", HOT), track("cold-0", COLD)])
                    await until(lambda: "cold-0" in fake.ingested, "the cold user is delivered")
                    seen_when_cold_arrived.update(
                        {m: delivery_status(project, m) for m in ("hot-0", "hot-1")}
                    )
                    assert await runtime.drain(20.0), "deliveries did not finish"
            finally:
                store.close()

        asyncio.run(main())
        requests = list(server.requests)

    assert seen_when_cold_arrived["hot-0"] == "retrying"
    assert seen_when_cold_arrived["hot-1"] != "delivered"
    assert list(fake.ingested) == ["cold-0", "hot-0", "hot-1"]
    assert users_per_request(requests) == [[HOT], [COLD], [HOT], [HOT]]
    assert fake.problems == []


def test_only_named_users_are_item_scoped_a_429_naming_nobody_pauses_everyone():
    dest = AmplitudeDestination("amp", {"api_key": KEY})
    payloads = [{"event_type": "x", "user_id": HOT}, {"event_type": "x", "user_id": COLD}]
    request = httpx.Request("POST", "https://api2.amplitude.com/2/httpapi")
    named = httpx.Response(
        429, json={"code": 429, "throttled_users": {HOT: 40}, "throttled_events": [0]},
        request=request,
    )  # fmt: skip
    result = dest.classify(named, payloads)
    assert [(i.status, i.retry_after, i.throttle_scope) for i in result.items] == [
        (ItemStatus.RETRY, 30.0, "item"),
        (ItemStatus.RETRY, 0.0, "item"),
    ]

    nobody = httpx.Response(
        429, json={"code": 429, "error": "too many"}, headers={"Retry-After": "5"}, request=request
    )
    result = dest.classify(nobody, payloads)
    assert {(i.retry_after, i.throttle_scope) for i in result.items} == {(30.0, "destination")}
    # Other destinations set nothing: their 429s keep pausing the lane as before.
    assert ItemResult(ItemStatus.RETRY, 429, retry_after=1.0).throttle_scope == "destination"
