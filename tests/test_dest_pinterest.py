"""Pinterest Conversions API against a fake Pinterest on 127.0.0.1."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.pinterest import PinterestDestination
from tests.fakes.ad_platforms import FakePinterest
from tests.fakes.http import Reply
from tests.fakes.vendors_a import send_batch, serve

ACCOUNT = "549755885175"
TOKEN = "pina-conversion-token-xyz"
NOW = datetime.now(UTC).replace(microsecond=0)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def pinterest(module_fake_server):
    fake = FakePinterest(ACCOUNT, TOKEN, refuse_events=frozenset({"msg-bad"}))
    server = serve(module_fake_server, fake)
    config = {"ad_account_id": ACCOUNT, "access_token": TOKEN, "base_url": server.url}
    return fake, server, PinterestDestination("pin", config)


def event(n: int | str, **extra):
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"msg-{n}",
        "userId": f"user-{n}",
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
        "context": {
            "ip": "203.0.113.8",
            "userAgent": "Mozilla/5.0",
            "page": {"url": "https://shop.example.com/checkout"},
            "traits": {"email": "Pinner@Example.com"},
        },
        **extra,
    }


def checkout(dest: PinterestDestination, n: int | str, **user):
    mapped = MappedEvent({"value": 72.39, "currency": "USD", "order_id": f"o-{n}"}, user=user)
    return dest.build_payload("purchase", mapped, event(n))


def test_catalog_entry():
    entry = PinterestDestination.catalog
    assert entry.secret_fields == frozenset({"access_token"})
    assert entry.max_batch_size == 1000
    assert {t.name for t in entry.event_types} == {
        "purchase", "lead", "sign_up", "add_to_cart", "page_view", "custom",
    }  # fmt: skip
    assert entry.rate_limit is not None and entry.rate_limit > 0


def test_payload_sends_hashed_arrays_and_the_value_as_text():
    dest = PinterestDestination("pin", {"ad_account_id": ACCOUNT, "access_token": TOKEN})
    payload = checkout(dest, 1, ge="Nonbinary", click_id="dj0yJnU9")
    assert payload["event_name"] == "checkout" and payload["action_source"] == "web"
    assert payload["event_id"] == "msg-1"
    assert payload["user_data"] == {
        "client_ip_address": "203.0.113.8",
        "client_user_agent": "Mozilla/5.0",
        "external_id": [sha("user-1")],
        "em": [sha("pinner@example.com")],
        "ge": [sha("n")],  # Pinterest also takes n (non-binary)
        "click_id": "dj0yJnU9",
    }
    assert payload["custom_data"] == {"value": "72.39", "currency": "USD", "order_id": "o-1"}
    assert dest.check_payload("purchase", payload) is None


def test_check_payload_refuses_what_pinterest_would():
    dest = PinterestDestination("pin", {"ad_account_id": ACCOUNT, "access_token": TOKEN})
    no_identity = {
        **checkout(dest, 1),
        "user_data": {"client_ip_address": "203.0.113.8"},
        "event_id": None,
    }
    problem = dest.check_payload("purchase", no_identity)
    assert (
        problem is not None
        and "Pinterest matches on em, hashed_maids" in problem
        and "`event_id` is required" in problem
    )
    named = dest.build_payload("custom", MappedEvent({"event_name": "purchase"}), event(2))
    assert "'purchase' is not one of" in (dest.check_payload("custom", named) or "")


def test_batch_is_delivered_with_the_bearer_token(pinterest):
    fake, server, dest = pinterest
    result = send_batch(dest, "purchase", [checkout(dest, n) for n in range(3)])
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == [] and len(fake.events) == 3
    assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_422_fails_only_the_events_pinterest_names(pinterest):
    fake, _server, dest = pinterest
    result = send_batch(
        dest, "purchase", [checkout(dest, 0), checkout(dest, "bad"), checkout(dest, 2)]
    )
    assert [(i.status, i.status_code) for i in result.items] == [
        (ItemStatus.DELIVERED, 422),
        (ItemStatus.FAILED, 422),
        (ItemStatus.DELIVERED, 422),
    ]
    assert result.items[1].error == "pinterest: Event is older than the maximum allowed age."
    assert not result.split and [e["event_id"] for e in fake.events] == ["msg-0", "msg-2"]


def test_test_mode_records_nothing(pinterest):
    fake, server, dest = pinterest
    dest = PinterestDestination("pin", {**dest.config, "test": True})
    result = send_batch(dest, "purchase", [checkout(dest, 0)])
    assert result.items[0].status is ItemStatus.DELIVERED
    assert fake.events == [] and len(fake.tested) == 1
    assert server.requests[0].path.endswith("/events?test=true")


@pytest.mark.parametrize(
    ("reply", "status", "wait", "split"),
    [
        (
            Reply(429, {"code": 8, "message": "Rate limit exceeded"}, {"Retry-After": "5"}),
            ItemStatus.RETRY,
            5.0,
            False,
        ),
        (Reply(503, {"code": 503, "message": "ramped down"}), ItemStatus.RETRY, None, False),
        (Reply(400, {"code": 1, "message": "Invalid request body"}), ItemStatus.FAILED, None, True),
        (
            Reply(401, {"code": 2, "message": "Authentication failed."}),
            ItemStatus.FAILED,
            None,
            False,
        ),
    ],
)
def test_request_level_answers(pinterest, reply, status, wait, split):
    fake, _server, dest = pinterest
    fake.outages.append(reply)
    result = send_batch(dest, "purchase", [checkout(dest, 0), checkout(dest, 1)])
    assert [(i.status, i.retry_after) for i in result.items] == [(status, wait)] * 2
    assert result.split is split
