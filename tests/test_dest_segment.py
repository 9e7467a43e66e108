"""Segment-compatible forwarding destination against a fake /v1/batch on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from streamctl.destinations.base import BatchResult, ItemStatus, MappedEvent
from streamctl.destinations.segment import SegmentDestination
from tests.fakes.vendors_b import FakeSegment

KEY = "wk-123"
SOURCE_EVENT = {"messageId": "msg-1", "timestamp": "2026-11-26T12:00:00.000Z", "type": "track"}


def track(dest: SegmentDestination, name: str = "Order Completed", **props: object) -> dict:
    mapped = MappedEvent(
        required={"event": name, "userId": "u1"},
        user={"email": "a@example.com"},
        properties={"total": 10, **props},
    )
    return dest.build_payload(
        "track", mapped, {**SOURCE_EVENT, "messageId": f"m-{name}-{len(props)}"}
    )


async def _send(dest, payloads):
    async with httpx.AsyncClient() as client:
        return await dest.send(client, "track", payloads, timeout=5)


async def _deliver(dest, payloads) -> BatchResult:
    """What the delivery engine does with `split`: bisect and resend the halves."""
    result = await _send(dest, payloads)
    if not result.split:
        return result
    middle = len(payloads) // 2
    first = await _deliver(dest, payloads[:middle])
    second = await _deliver(dest, payloads[middle:])
    return BatchResult(first.items + second.items)


def send(dest, payloads):
    return asyncio.run(_send(dest, payloads))


def deliver(dest, payloads):
    return asyncio.run(_deliver(dest, payloads))


@pytest.fixture
def server(module_fake_server, fake):
    module_fake_server.answer = fake
    return module_fake_server


@pytest.fixture
def fake():
    return FakeSegment(KEY)


def test_catalog_has_the_segment_calls_and_custom():
    catalog = SegmentDestination.catalog
    assert [t.name for t in catalog.event_types] == [
        "track", "identify", "page", "screen", "group", "alias", "custom",
    ]  # fmt: skip
    assert {f.name for f in catalog.event_type("track").required} == {"event"}
    assert {f.name for f in catalog.event_type("alias").required} == {"previousId", "userId"}
    assert catalog.event_type("identify").properties is False
    assert catalog.secret_fields == frozenset({"write_key"})
    assert (catalog.max_batch_size, catalog.max_batch_bytes) == (2500, 500 * 1024)


def test_track_places_user_in_context_traits_and_keeps_the_source_identity():
    dest = SegmentDestination("seg", {"write_key": KEY})
    payload = dest.build_payload(
        "custom",
        MappedEvent(
            required={"event": "Signed Up", "anonymousId": "a1", "context": {"ip": "1.2.3.4"}},
            user={"email": "a@example.com"},
            properties={"plan": "pro"},
        ),
        SOURCE_EVENT,
    )
    assert payload == {
        "type": "track",
        "event": "Signed Up",
        "anonymousId": "a1",
        "context": {"ip": "1.2.3.4", "traits": {"email": "a@example.com"}},
        "properties": {"plan": "pro"},
        "messageId": "msg-1",
        "timestamp": "2026-11-26T12:00:00.000Z",
    }


def test_identify_user_section_becomes_traits_and_group_properties_become_group_traits():
    dest = SegmentDestination("seg", {"write_key": KEY})
    identify = dest.build_payload(
        "identify",
        MappedEvent(required={"userId": "u1", "messageId": "mine"}, user={"plan": "pro"}),
        SOURCE_EVENT,
    )
    assert identify == {
        "type": "identify",
        "userId": "u1",
        "messageId": "mine",
        "traits": {"plan": "pro"},
        "timestamp": "2026-11-26T12:00:00.000Z",
    }
    group = dest.build_payload(
        "group",
        MappedEvent(required={"userId": "u1", "groupId": "g1"}, properties={"name": "ACME"}),
        {},
    )
    assert group == {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "ACME"}}


@pytest.mark.parametrize(
    ("event_type", "required", "problem"),
    [
        ("track", {"event": "x"}, "userId or an anonymousId"),
        ("track", {"event": "", "userId": "u"}, "needs an event name"),
        ("alias", {"userId": "u"}, "userId and previousId"),
        ("group", {"userId": "u", "groupId": ""}, "groupId"),
        ("track", {"event": "x", "userId": "u", "context": {"blob": "x" * 33_000}}, "32768"),
    ],
)
def test_checks_before_sending(event_type, required, problem):
    dest = SegmentDestination("seg", {"write_key": KEY})
    payload = dest.build_payload(event_type, MappedEvent(required=required), {"messageId": "m"})
    assert problem in (dest.check_payload(event_type, payload) or "")


def test_a_batch_goes_in_one_request_with_basic_auth(fake, server):
    dest = SegmentDestination("seg", {"write_key": KEY, "base_url": server.url})
    payloads = [track(dest, f"E{i}") for i in range(3)]
    result = send(dest, payloads)
    assert fake.problems == []
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert len(fake.requests) == 1
    assert fake.accepted == payloads


def test_batches_over_500_kb_are_cut_into_several_requests(fake, server):
    dest = SegmentDestination("seg", {"write_key": KEY, "base_url": server.url})
    payloads = [track(dest, f"E{i}", blob="x" * 20_000) for i in range(40)]  # ~800 KB
    result = send(dest, payloads)
    assert fake.problems == []  # includes "request over 500 KB"
    assert len(fake.requests) >= 2
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 40
    # Parts go out concurrently: each arrives whole, in order, but parts may interleave.
    assert sorted(e["event"] for e in fake.accepted) == sorted(f"E{i}" for i in range(40))
    for request in fake.requests:
        names = [e["event"] for e in request.json()["batch"]]
        assert names == sorted(names, key=lambda n: int(n[1:]))


def test_a_refused_batch_is_split_until_only_the_bad_event_fails(fake, server):
    fake.reject_events = {"E5"}
    dest = SegmentDestination("seg", {"write_key": KEY, "base_url": server.url})
    payloads = [track(dest, f"E{i}") for i in range(8)]
    first = send(dest, payloads)
    result = deliver(dest, payloads)
    assert first.split is True and all(i.status is ItemStatus.FAILED for i in first.items)
    statuses = [i.status for i in result.items]
    assert statuses == [ItemStatus.DELIVERED] * 5 + [ItemStatus.FAILED] + [ItemStatus.DELIVERED] * 2
    failed = result.items[5]
    assert failed.status_code == 400 and "too large" in (failed.error or "")
    assert fake.problems == []


def test_rate_limits_and_server_errors_retry_auth_errors_fail_without_split(fake, server):
    fake.fail_next(429, {"message": "slow"}, headers={"Retry-After": "12"})
    fake.fail_next(502, "bad gateway")
    fake.fail_next(401, {"success": False, "message": "invalid write key"})
    dest = SegmentDestination("seg", {"write_key": KEY, "base_url": server.url})
    payloads = [track(dest, "A"), track(dest, "B")]
    limited, bad_gateway, unauthorized = (send(dest, payloads) for _ in range(3))
    assert {i.status for i in limited.items} == {ItemStatus.RETRY}
    assert limited.items[0].retry_after == 12
    assert (
        bad_gateway.items[1].status is ItemStatus.RETRY and bad_gateway.items[1].status_code == 502
    )
    assert {i.status for i in unauthorized.items} == {ItemStatus.FAILED}
    assert unauthorized.split is False
    assert "invalid write key" in (unauthorized.items[0].error or "")


def test_region_hosts():
    assert SegmentDestination("s", {"write_key": KEY}).url() == "https://api.segment.io/v1/batch"
    eu = SegmentDestination("s", {"write_key": KEY, "region": "eu"})
    assert eu.url() == "https://events.eu1.segmentapis.com/v1/batch"
