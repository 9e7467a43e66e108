"""multipart: cutting a batch into requests and merging per-payload outcomes back in order."""

from __future__ import annotations

import asyncio
import json

import httpx
import orjson
import pytest

from streamctl.destinations.base import (
    CatalogEntry,
    Destination,
    EventTypeSpec,
    HttpRequest,
    ItemStatus,
)
from streamctl.destinations.multipart import chunk_by_bytes, send_parts, whole_request_result
from tests.fakes.http import Received, Reply


class ArrayDestination(Destination):
    """POST a JSON array of payloads; the fake refuses any array holding a "bad" one."""

    catalog = CatalogEntry("array", "test", "https://example.com", (), (EventTypeSpec("custom"),))

    def build_request(self, event_type, payloads):
        return HttpRequest(
            "POST", self.config["url"], {"Content-Type": "application/json"}, json=list(payloads)
        )


def refuse_bad(req: Received) -> Reply:
    batch = json.loads(req.body)
    if any(item.get("bad") for item in batch):
        return Reply(400, {"message": "a bad item"})
    return Reply(200, {"ok": True})


@pytest.fixture
def server(module_fake_server):
    module_fake_server.answer = refuse_bad
    return module_fake_server


def run(dest, payloads, parts):
    async def go():
        async with httpx.AsyncClient() as client:
            return await send_parts(dest, client, "custom", payloads, parts, 5)

    return asyncio.run(go())


def test_chunks_respect_bytes_items_and_keep_order():
    payloads = [{"i": i, "pad": "x" * 100} for i in range(10)]
    size = len(orjson.dumps(payloads[0])) + 1
    parts = chunk_by_bytes(payloads, max_bytes=2 + 3 * size, envelope_bytes=0)
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    for part in parts:
        assert len(orjson.dumps([payloads[i] for i in part])) <= 2 + 3 * size
    assert chunk_by_bytes(payloads, max_bytes=10**6, max_items=4) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]


def test_an_oversized_payload_gets_a_part_of_its_own():
    payloads = [{"a": 1}, {"big": "x" * 500}, {"b": 2}]
    assert chunk_by_bytes(payloads, max_bytes=100) == [[0], [1], [2]]


def test_a_refused_part_is_bisected_while_the_other_parts_stand(server):
    dest = ArrayDestination("arr", {"url": server.url})
    payloads = [{"i": i, "bad": i == 5} for i in range(8)]
    result = run(dest, payloads, [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert result.split is False
    statuses = [item.status for item in result.items]
    assert statuses == [ItemStatus.DELIVERED] * 5 + [ItemStatus.FAILED] + [ItemStatus.DELIVERED] * 2
    assert "400" in (result.items[5].error or "")


def test_a_single_part_passes_the_split_to_the_engine(server):
    dest = ArrayDestination("arr", {"url": server.url})
    result = run(dest, [{"i": 0}, {"i": 1, "bad": True}], [[0, 1]])
    assert result.split is True
    assert {item.status for item in result.items} == {ItemStatus.FAILED}


@pytest.mark.parametrize(
    ("status", "expected", "split"),
    [
        (400, ItemStatus.FAILED, True),
        (413, ItemStatus.FAILED, True),
        (401, ItemStatus.FAILED, False),
        (404, ItemStatus.FAILED, False),
        (429, ItemStatus.RETRY, False),
        (503, ItemStatus.RETRY, False),
    ],
)
def test_whole_request_outcomes(status, expected, split):
    response = httpx.Response(status, headers={"Retry-After": "4"}, text="nope")
    result = whole_request_result(response, 3, detail="vendor says no")
    assert {item.status for item in result.items} == {expected}
    assert result.split is split
    assert result.items[0].error == f"HTTP {status}: vendor says no"
    assert result.items[0].retry_after == 4
