"""TikTok Events API 2.0 against a fake TikTok on 127.0.0.1."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from streamctl.core.errors import MappingError
from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.tiktok import TikTokDestination
from tests.fakes.ad_platforms import FakeTikTok, tiktok_reply
from tests.fakes.http import Reply
from tests.fakes.vendors_a import send_batch, serve

PIXEL = "C0PIXELCODE1"
TOKEN = "tiktok-access-token-xyz"
NOW = datetime.now(UTC).replace(microsecond=0)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def tiktok(module_fake_server):
    fake = FakeTikTok(PIXEL, TOKEN, refuse_events=frozenset({"msg-bad"}))
    server = serve(module_fake_server, fake)
    config = {"event_source_id": PIXEL, "access_token": TOKEN, "base_url": server.url}
    return fake, server, TikTokDestination("tiktok", config)


def event(n: int | str, **extra):
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"msg-{n}",
        "userId": f"User-{n}",
        "timestamp": (NOW - timedelta(minutes=3)).isoformat(),
        "context": {
            "ip": "203.0.113.9",
            "userAgent": "Mozilla/5.0",
            "locale": "en-US",
            "page": {
                "url": "https://shop.example.com/checkout",
                "referrer": "https://www.tiktok.com/",
            },
            "traits": {"email": " Buyer@Example.com ", "phone": "+1 (650) 555-1212"},
        },
        **extra,
    }


def purchase(dest: TikTokDestination, n: int | str, **user):
    mapped = MappedEvent(
        {"value": 19.99, "currency": "USD", "content_type": "product"},
        user=user,
        properties={"order_id": f"o-{n}"},
    )
    return dest.build_payload("purchase", mapped, event(n))


def test_catalog_entry():
    entry = TikTokDestination.catalog
    assert entry.secret_fields == frozenset({"access_token"})
    assert entry.max_batch_size == 1000
    assert {t.name for t in entry.event_types} == {
        "purchase", "lead", "complete_registration", "add_to_cart", "custom",
    }  # fmt: skip


def test_payload_hashes_email_phone_in_e164_with_plus_and_external_id():
    dest = TikTokDestination("tiktok", {"event_source_id": PIXEL, "access_token": TOKEN})
    payload = purchase(dest, 1, ttclid="E.C.P.abc123")
    assert payload == {
        "event": "Purchase",
        "event_time": int((NOW - timedelta(minutes=3)).timestamp()),
        "event_id": "msg-1",
        "user": {
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0",
            "locale": "en-US",
            "external_id": [sha("user-1")],
            "email": [sha("buyer@example.com")],
            "phone": [sha("+16505551212")],  # TikTok hashes E.164 with its '+'
            "ttclid": "E.C.P.abc123",
        },
        "properties": {
            "value": 19.99,
            "currency": "USD",
            "content_type": "product",
            "order_id": "o-1",
        },
        "page": {"url": "https://shop.example.com/checkout", "referrer": "https://www.tiktok.com/"},
    }
    assert dest.check_payload("purchase", payload) is None


def test_custom_event_name_and_bad_values():
    dest = TikTokDestination("tiktok", {"event_source_id": PIXEL, "access_token": TOKEN})
    payload = dest.build_payload(
        "custom", MappedEvent({"event": "ViewContent", "page_url": "https://x.example/p"}), event(2)
    )
    assert payload["event"] == "ViewContent" and payload["page"]["url"] == "https://x.example/p"
    with pytest.raises(MappingError, match="tiktok: user `email`"):
        purchase(dest, 3, email="nobody")
    bad = {**purchase(dest, 4), "properties": {"value": "free"}, "user": {"mail": "x"}}
    problem = dest.check_payload("purchase", bad)
    assert problem is not None and "numeric `value`" in problem and "no field 'mail'" in problem


def test_batch_is_delivered(tiktok):
    fake, server, dest = tiktok
    result = send_batch(dest, "purchase", [purchase(dest, n) for n in range(3)])
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == [] and len(fake.events) == 3
    request = server.requests[0]
    assert request.headers["access-token"] == TOKEN
    assert request.json()["event_source"] == "web" and request.json()["event_source_id"] == PIXEL


def test_a_refused_event_fails_the_batch_with_a_split(tiktok):
    fake, _server, dest = tiktok
    result = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, "bad")])
    assert result.split and fake.events == []
    assert {i.status for i in result.items} == {ItemStatus.FAILED}
    assert "code 40002 data[1]" in (result.items[0].error or "")


def test_a_bad_token_fails_without_split(tiktok):
    _fake, _server, dest = tiktok
    dest = TikTokDestination("tiktok", {**dest.config, "access_token": "wrong-token-1"})
    result = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, 1)])
    assert not result.split
    assert all(i.status is ItemStatus.FAILED and "40105" in (i.error or "") for i in result.items)


@pytest.mark.parametrize(
    ("reply", "wait"),
    [
        (tiktok_reply(40100, "Too many requests. Please retry in some time."), 1.0),
        (Reply(429, {"code": 40100, "message": "Too many requests"}, {"Retry-After": "4"}), 4.0),
        (tiktok_reply(40700, "Internal error, please retry"), None),
        (Reply(503, "Service Unavailable"), None),
    ],
)
def test_throttling_and_server_errors_retry(tiktok, reply, wait):
    fake, _server, dest = tiktok
    fake.outages.append(reply)
    result = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, 1)])
    assert [(i.status, i.retry_after) for i in result.items] == [(ItemStatus.RETRY, wait)] * 2
    assert not result.split
