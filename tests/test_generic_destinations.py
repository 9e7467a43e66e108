"""The generic destinations of SPEC §6: webhook (against a real loopback server), file, console."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence

import httpx

from streamctl.core.model import DestinationConfig
from streamctl.destinations.base import BatchResult, Destination, ItemStatus, MappedEvent, Payload
from streamctl.destinations.console import ConsoleDestination
from streamctl.destinations.file import FileDestination
from streamctl.destinations.registry import CATALOG, create
from streamctl.destinations.webhook import WebhookDestination
from tests.fakes.http import FakeServer, Received, Reply

EVENT = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1"}


def send(
    destination: Destination, payloads: Sequence[Payload], timeout: float = 5.0
) -> BatchResult:
    async def go() -> BatchResult:
        async with httpx.AsyncClient() as client:
            return await destination.send(client, "custom", payloads, timeout)

    return asyncio.run(go())


def test_the_generic_layout_nests_user_and_properties_only_when_mapped():
    hook = WebhookDestination("hook", {"url": "http://127.0.0.1:9/"})
    full = MappedEvent({"id": 1}, user={"email": "a@b.c"}, properties={"total": 3})
    assert hook.build_payload("custom", full, EVENT) == {
        "id": 1,
        "user": {"email": "a@b.c"},
        "properties": {"total": 3},
    }
    assert hook.build_payload("custom", MappedEvent({"id": 1}), EVENT) == {"id": 1}


def test_all_three_are_registered_with_one_open_custom_type():
    for name, cls in (
        ("webhook", WebhookDestination),
        ("file", FileDestination),
        ("console", ConsoleDestination),
    ):
        assert CATALOG[name] is cls
        (custom,) = cls.catalog.event_types
        assert (custom.name, custom.open_fields, custom.required) == ("custom", True, ())
    assert WebhookDestination.catalog.secret_fields == {"headers"}
    assert WebhookDestination.catalog.batch_size == 1


def test_webhook_posts_one_object_per_request_with_its_headers(fake_server):
    hook = WebhookDestination(
        "hook", {"url": f"{fake_server.url}/in", "headers": {"Authorization": "Bearer t-1"}}
    )
    result = send(hook, [{"id": 1}])
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED]
    (request,) = fake_server.requests
    assert (request.method, request.path) == ("POST", "/in")
    assert request.json() == {"id": 1}
    assert request.headers["authorization"] == "Bearer t-1"
    assert request.headers["content-type"] == "application/json"


def test_webhook_sends_a_json_array_when_batching(fake_server):
    hook = WebhookDestination("hook", {"url": fake_server.url, "method": "put"})
    result = send(hook, [{"id": 1}, {"id": 2}, {"id": 3}])
    assert len(result.items) == 3
    assert all(i.status is ItemStatus.DELIVERED for i in result.items)
    assert fake_server.requests[0].method == "PUT"
    assert fake_server.bodies() == [[{"id": 1}, {"id": 2}, {"id": 3}]]


def test_webhook_classifies_responses(fake_server):
    hook = WebhookDestination("hook", {"url": fake_server.url})
    fake_server.answer = lambda req: Reply(503, "busy", {"Retry-After": "7"})
    retry = send(hook, [{"id": 1}]).items[0]
    assert (retry.status, retry.status_code, retry.retry_after) == (ItemStatus.RETRY, 503, 7.0)
    fake_server.answer = lambda req: Reply(400, {"error": "bad field"})
    failed = send(hook, [{"id": 1}, {"id": 2}])
    assert failed.items[0].status is ItemStatus.FAILED
    assert failed.split  # a refused batch is bisected so good events still go through
    assert "bad field" in (failed.items[0].response or "")


def test_webhook_timeout_comes_from_its_config():
    release = threading.Event()

    def slow(req: Received) -> Reply:
        release.wait(5)
        return Reply(200)

    with FakeServer(slow) as server:
        hook = WebhookDestination("hook", {"url": server.url, "timeout": 0.2})
        try:
            item = send(hook, [{"id": 1}], timeout=30.0).items[0]
        finally:
            release.set()
    assert item.status is ItemStatus.RETRY
    assert "timeout" in (item.error or "")


def test_webhook_connection_errors_are_retried():
    with FakeServer() as server:
        url = server.url
    item = send(WebhookDestination("hook", {"url": url}), [{"id": 1}]).items[0]
    assert item.status is ItemStatus.RETRY
    assert "connection error" in (item.error or "")


def test_file_appends_one_json_line_per_payload(tmp_path):
    path = tmp_path / "out" / "events.ndjson"
    destination = create(DestinationConfig("local", "file", {"path": str(path)}))
    assert (
        send(destination, [{"id": 1}, {"id": 2, "text": "é"}]).items[0].status
        is ItemStatus.DELIVERED
    )
    send(destination, [{"id": 3}])
    asyncio.run(destination.aclose())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"id": 1}, {"id": 2, "text": "é"}, {"id": 3}]


def test_file_request_preview_shows_the_lines(tmp_path):
    destination = FileDestination("local", {"path": str(tmp_path / "x.ndjson")})
    request = destination.build_request("custom", [{"a": 1}])
    assert request.body() == b'{"a":1}\n'
    assert request.url.startswith("file://")


def test_file_write_errors_are_retried_not_lost(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    destination = FileDestination("local", {"path": str(tmp_path / "blocker" / "x.ndjson")})
    item = send(destination, [{"id": 1}]).items[0]
    assert item.status is ItemStatus.RETRY
    assert "cannot write" in (item.error or "")


def test_console_prints_ndjson_on_stdout(capsys):
    destination = ConsoleDestination("stdout", {})
    result = send(destination, [{"id": 1}, {"id": 2}])
    assert all(i.status is ItemStatus.DELIVERED for i in result.items)
    captured = capsys.readouterr()
    assert captured.out == '{"id":1}\n{"id":2}\n'
    assert captured.err == ""


def test_webhook_with_array_body_sends_an_array_even_for_one_payload(fake_server):
    hook = WebhookDestination("hook", {"url": fake_server.url, "array_body": True})
    send(hook, [{"id": 1}])
    assert fake_server.bodies() == [[{"id": 1}]]
