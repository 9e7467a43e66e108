"""Snapchat Conversions API v3 against a fake Snap on 127.0.0.1."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from streamctl.core.errors import MappingError
from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.snapchat import SnapchatDestination
from tests.fakes.ad_platforms import FakeSnapchat
from tests.fakes.http import Reply
from tests.fakes.vendors_a import send_batch, serve

PIXEL = "a1b2c3d4-pixel"
TOKEN = "snap-access-token-xyz"
NOW = datetime.now(UTC).replace(microsecond=0)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def snapchat(module_fake_server):
    fake = FakeSnapchat(PIXEL, TOKEN, refuse_events=frozenset({"msg-bad"}))
    server = serve(module_fake_server, fake)
    config = {"pixel_id": PIXEL, "access_token": TOKEN, "base_url": server.url}
    return fake, server, SnapchatDestination("snap", config)


def event(n: int | str, days_ago: float = 0.01):
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"msg-{n}",
        "userId": f"user-{n}",
        "timestamp": (NOW - timedelta(days=days_ago)).isoformat(),
        "context": {
            "ip": "203.0.113.5",
            "userAgent": "Mozilla/5.0",
            "page": {"url": "https://shop.example.com/thanks"},
            "traits": {"email": "Person@Example.com", "phone": "+44 844 412 4653"},
        },
    }


def purchase(dest: SnapchatDestination, n: int | str, days_ago: float = 0.01, **user):
    mapped = MappedEvent({"value": 10, "currency": "USD"}, user=user, properties={"num_items": 2})
    return dest.build_payload("purchase", mapped, event(n, days_ago))


def test_catalog_entry():
    entry = SnapchatDestination.catalog
    assert entry.secret_fields == frozenset({"access_token"})
    assert entry.max_batch_size == 2000
    assert {t.name for t in entry.event_types} == {
        "purchase",
        "sign_up",
        "add_to_cart",
        "page_view",
        "custom",
    }


def test_payload_hashes_as_snap_documents():
    dest = SnapchatDestination("snap", {"pixel_id": PIXEL, "access_token": TOKEN})
    payload = purchase(dest, 1, sc_click_id="click-1")
    assert payload["event_name"] == "PURCHASE" and payload["action_source"] == "WEB"
    assert payload["event_source_url"] == "https://shop.example.com/thanks"
    assert payload["user_data"] == {
        "client_ip_address": "203.0.113.5",
        "client_user_agent": "Mozilla/5.0",
        "external_id": [sha("user-1")],
        # Snap's own examples: Person@Example.com and +44 844 412 4653.
        "em": ["542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345"],
        "ph": ["dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383"],
        "sc_click_id": "click-1",
    }
    assert payload["custom_data"] == {"value": 10, "currency": "USD", "num_items": 2}
    assert dest.check_payload("purchase", payload) is None


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda d: purchase(d, 1, days_ago=40), "older than 37 days"),
        (
            lambda d: d.build_payload("custom", MappedEvent({"event_name": "BOUGHT"}), event(2)),
            "'BOUGHT' is not one of",
        ),
        (
            lambda d: {**purchase(d, 3), "user_data": {"client_ip_address": "203.0.113.5"}},
            "Snap matches on",
        ),
        (lambda d: {**purchase(d, 4), "action_source": "web"}, "`action_source` 'web'"),
    ],
)
def test_check_payload_refuses_what_snap_would(build, words):
    dest = SnapchatDestination("snap", {"pixel_id": PIXEL, "access_token": TOKEN})
    problem = dest.check_payload("purchase", build(dest))
    assert problem is not None and words in problem


def test_a_bad_phone_is_a_mapping_error():
    dest = SnapchatDestination("snap", {"pixel_id": PIXEL, "access_token": TOKEN})
    with pytest.raises(MappingError, match="snapchat: user `ph`"):
        purchase(dest, 1, ph="n/a")


def test_batch_is_delivered_with_the_token_in_the_query(snapchat):
    fake, server, dest = snapchat
    result = send_batch(dest, "purchase", [purchase(dest, n) for n in range(3)])
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == [] and len(fake.events) == 3
    assert server.requests[0].path == f"/v3/{PIXEL}/events?access_token={TOKEN}"


def test_validate_only_uses_the_test_event_tool(snapchat):
    fake, _server, dest = snapchat
    dest = SnapchatDestination("snap", {**dest.config, "validate_only": True})
    result = send_batch(dest, "purchase", [purchase(dest, 0)])
    assert result.items[0].status is ItemStatus.DELIVERED
    assert fake.events == [] and len(fake.validated) == 1


def test_a_refused_event_asks_for_a_split_and_a_bad_token_does_not(snapchat):
    fake, _server, dest = snapchat
    result = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, "bad")])
    assert result.split and {i.status for i in result.items} == {ItemStatus.FAILED}
    assert "INVALID: data[1]" in (result.items[0].error or "") and fake.events == []
    wrong = SnapchatDestination("snap", {**dest.config, "access_token": "wrong-token-1"})
    refused = send_batch(wrong, "purchase", [purchase(dest, 0), purchase(dest, 1)])
    assert not refused.split and {i.status_code for i in refused.items} == {401}


@pytest.mark.parametrize(
    ("reply", "wait"),
    [
        (Reply(429, {"status": "ERROR", "reason": "Too many requests"}, {"Retry-After": "6"}), 6.0),
        (Reply(503, "Service Unavailable"), None),
    ],
)
def test_429_and_5xx_retry(snapchat, reply, wait):
    fake, _server, dest = snapchat
    fake.outages.append(reply)
    result = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, 1)])
    assert [(i.status, i.retry_after) for i in result.items] == [(ItemStatus.RETRY, wait)] * 2
