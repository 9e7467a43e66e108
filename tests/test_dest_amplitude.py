"""Amplitude HTTP V2 against a fake Amplitude on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from streamctl.destinations.amplitude import UNNAMED_IN_REJECTED_BATCH, AmplitudeDestination
from streamctl.destinations.base import ItemStatus, MappedEvent
from tests.fakes.http import Reply
from tests.fakes.vendors_a import FakeAmplitude, send_batch, serve

KEY = "amp-key-123"


@pytest.fixture
def amplitude(module_fake_server):
    fake = FakeAmplitude(KEY, throttled_users={"hot-user-1"})
    server = serve(module_fake_server, fake)
    return fake, server, AmplitudeDestination("amp", {"api_key": KEY, "base_url": server.url})


def event(n: int, user: str = "user-0001", **extra):
    return {
        "type": "track",
        "event": "Song Played",
        "messageId": f"msg-{n}",
        "userId": user,
        "anonymousId": f"anon-{n:04d}",
        "timestamp": "2026-11-26T12:00:00.250Z",
        **extra,
    }


def track(dest: AmplitudeDestination, n: int, user: str = "user-0001", **properties):
    return dest.build_payload(
        "custom", MappedEvent({"event_type": "Song Played"}, properties=properties), event(n, user)
    )


def test_catalog_marks_the_key_secret_and_describes_identity():
    entry = AmplitudeDestination.catalog
    assert entry.secret_fields == frozenset({"api_key"})
    assert entry.max_batch_size == 2000 and entry.max_batch_bytes == 1_000_000
    assert {t.name for t in entry.event_types} == {"custom", "purchase", "identify"}
    assert "user_id or device_id" in entry.identity


def test_payload_defaults_and_sections():
    dest = AmplitudeDestination("amp", {"api_key": KEY})
    mapped = MappedEvent(
        {"event_type": "Song Played"}, user={"plan": "pro"}, properties={"genre": "jazz"}
    )
    payload = dest.build_payload("custom", mapped, event(1, user=12345))
    assert payload == {
        "event_type": "Song Played",
        "user_id": "12345",  # numbers become strings: Amplitude drops numeric ids
        "device_id": "anon-0001",
        "insert_id": "msg-1",
        "time": 1795694400250,
        "user_properties": {"plan": "pro"},
        "event_properties": {"genre": "jazz"},
    }
    assert dest.check_payload("custom", payload) is None


def test_mapped_values_win_over_defaults():
    dest = AmplitudeDestination("amp", {"api_key": KEY})
    mapped = MappedEvent(
        {"event_type": "X", "device_id": "device-9", "time": 1700000000, "insert_id": "i-1"}
    )
    payload = dest.build_payload("custom", mapped, event(1))
    assert payload == {
        "event_type": "X",
        "device_id": "device-9",
        "time": 1700000000000,
        "insert_id": "i-1",
    }


def test_identify_becomes_an_identify_event_with_operations():
    dest = AmplitudeDestination("amp", {"api_key": KEY})
    mapped = MappedEvent({"set_once": {"first_seen": "2026-01-01"}}, user={"plan": "pro"})
    payload = dest.build_payload("identify", mapped, event(2))
    assert payload["event_type"] == "$identify"
    assert payload["user_properties"] == {
        "$setOnce": {"first_seen": "2026-01-01"},
        "$set": {"plan": "pro"},
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"event_type": "x"}, "neither user_id nor device_id"),
        ({"event_type": "x", "user_id": "abc"}, "shorter than 5"),
        ({"event_type": "x", "user_id": "user-1", "time": "yesterday"}, "`time`"),
        ({"event_type": "", "user_id": "user-1"}, "event_type"),
    ],
)
def test_check_payload_refuses_what_amplitude_would(payload, message):
    problem = AmplitudeDestination("amp", {"api_key": KEY}).check_payload("custom", payload)
    assert problem is not None and message in problem


def test_min_id_length_option_is_sent_and_honoured(amplitude):
    fake, server, _ = amplitude
    dest = AmplitudeDestination("amp", {"api_key": KEY, "base_url": server.url, "min_id_length": 2})
    payload = {"event_type": "x", "user_id": "ab", "insert_id": "short-id"}
    assert dest.check_payload("custom", payload) is None
    assert send_batch(dest, "custom", [payload]).items[0].status is ItemStatus.DELIVERED
    assert server.requests[0].json()["options"] == {"min_id_length": 2}
    assert fake.problems == []


def test_batch_is_delivered_in_one_documented_request(amplitude):
    fake, server, dest = amplitude
    payloads = [track(dest, n) for n in range(3)]
    result = send_batch(dest, "custom", payloads)
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == []
    (request,) = server.requests
    assert request.path == "/2/httpapi"
    body = request.json()
    assert body["api_key"] == KEY and [e["insert_id"] for e in body["events"]] == [
        "msg-0",
        "msg-1",
        "msg-2",
    ]
    assert set(fake.ingested) == {"msg-0", "msg-1", "msg-2"}


def test_regions_pick_the_documented_hosts():
    us = AmplitudeDestination("a", {"api_key": KEY})
    eu = AmplitudeDestination("a", {"api_key": KEY, "region": "eu"})
    assert us.build_request("custom", [{}]).url == "https://api2.amplitude.com/2/httpapi"
    assert eu.build_request("custom", [{}]).url == "https://api.eu.amplitude.com/2/httpapi"


def test_400_fails_only_the_named_events_and_resends_the_rest(amplitude):
    fake, server, dest = amplitude
    payloads = [track(dest, n) for n in range(4)]
    payloads[1]["price"] = "12 dollars"  # Amplitude refuses it; we do not check prices
    result = send_batch(dest, "custom", payloads)
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED,
        ItemStatus.FAILED,
        ItemStatus.DELIVERED,
        ItemStatus.DELIVERED,
    ]
    assert "invalid `price`" in (result.items[1].error or "")
    assert result.items[1].status_code == 400
    assert set(fake.ingested) == {"msg-0", "msg-2", "msg-3"}
    assert len(server.requests) == 2  # the refused request, then the other three again
    assert len(server.requests[1].json()["events"]) == 3
    assert fake.problems == []


def test_429_retries_throttled_users_after_30s_and_delivers_the_others(amplitude):
    fake, server, dest = amplitude
    payloads = [track(dest, 0), track(dest, 1, user="hot-user-1"), track(dest, 2)]
    result = send_batch(dest, "custom", payloads)
    statuses = [(i.status, i.retry_after) for i in result.items]
    assert statuses == [
        (ItemStatus.DELIVERED, None),
        (ItemStatus.RETRY, 30.0),
        (ItemStatus.DELIVERED, None),
    ]
    assert result.items[1].status_code == 429
    assert set(fake.ingested) == {"msg-0", "msg-2"}
    assert len(server.requests) == 2  # the throttled request, then the two others again


def test_classify_alone_marks_unnamed_events_for_an_immediate_resend():
    dest = AmplitudeDestination("amp", {"api_key": KEY})
    response = httpx.Response(
        400, json={"code": 400, "error": "bad", "events_with_missing_fields": {"event_type": [0]}}
    )
    result = dest.classify(response, [{}, {}])
    assert result.items[0].status is ItemStatus.FAILED
    assert (result.items[1].status, result.items[1].retry_after, result.items[1].error) == (
        ItemStatus.RETRY,
        0.0,
        UNNAMED_IN_REJECTED_BATCH,
    )


def test_request_level_400_asks_the_engine_to_split(amplitude):
    _fake, server, _ = amplitude
    dest = AmplitudeDestination("amp", {"api_key": "wrong-key", "base_url": server.url})
    result = send_batch(dest, "custom", [track(dest, 0), track(dest, 1)])
    assert result.split
    assert all(
        i.status is ItemStatus.FAILED and "Invalid API key" in (i.error or "") for i in result.items
    )
    assert "wrong-key" not in (result.items[0].error or "")


def test_413_asks_the_engine_to_split(amplitude):
    fake, _server, dest = amplitude
    fake.MAX_BYTES = 600
    result = send_batch(dest, "custom", [track(dest, n, **{"pad": "x" * 200}) for n in range(4)])
    assert result.split and {i.status_code for i in result.items} == {413}
    assert fake.ingested == {}


def test_server_errors_retry_every_event(amplitude):
    fake, _server, dest = amplitude
    fake.outages.append(Reply(503, {"code": 503, "error": "unavailable"}, {"Retry-After": "3"}))
    result = send_batch(dest, "custom", [track(dest, 0), track(dest, 1)])
    assert [(i.status, i.retry_after) for i in result.items] == [(ItemStatus.RETRY, 3.0)] * 2
    assert not result.split


def test_an_identify_that_sets_nothing_is_refused():
    dest = AmplitudeDestination("amp", {"api_key": KEY})
    payload = dest.build_payload("identify", MappedEvent({}), event(3))
    problem = dest.check_payload("identify", payload)
    assert problem is not None and "sets nothing" in problem


def test_a_resend_that_meets_an_outage_leaves_the_events_to_the_engine(amplitude):
    _fake, server, dest = amplitude
    replies = [
        Reply(400, {"code": 400, "error": "bad", "events_with_invalid_fields": {"time": [1]}}),
        Reply(503, {"code": 503, "error": "unavailable"}, {"Retry-After": "2"}),
    ]
    server.answer = lambda _req: replies.pop(0)
    result = send_batch(dest, "custom", [track(dest, 0), track(dest, 1), track(dest, 2)])
    assert [(i.status, i.status_code, i.retry_after) for i in result.items] == [
        (ItemStatus.RETRY, 503, 2.0),
        (ItemStatus.FAILED, 400, None),
        (ItemStatus.RETRY, 503, 2.0),
    ]
    assert [len(r.json()["events"]) for r in server.requests] == [3, 2]
