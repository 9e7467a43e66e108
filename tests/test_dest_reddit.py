"""Reddit Conversions API v2.0 against a fake Reddit on 127.0.0.1."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.reddit import RESENT_WITH_INVALID, RedditDestination
from tests.fakes.ad_platforms import FakeReddit
from tests.fakes.http import Reply
from tests.fakes.vendors_a import send_batch, serve

ACCOUNT = "t2_abc123"
TOKEN = "reddit-conversion-token-xyz"
NOW = datetime.now(UTC).replace(microsecond=0)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def reddit(module_fake_server):
    fake = FakeReddit(ACCOUNT, TOKEN, refuse_events=frozenset({"msg-bad"}))
    server = serve(module_fake_server, fake)
    config = {"account_id": ACCOUNT, "access_token": TOKEN, "base_url": server.url}
    return fake, server, RedditDestination("reddit", config)


def event(n: int | str, minutes_ago: float = 2):
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"msg-{n}",
        "userId": f"User-{n}",
        "timestamp": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "context": {
            "ip": " 203.0.113.4 ",
            "userAgent": "Mozilla/5.0",
            "traits": {"email": "Jane.Doe+promo@Example.com", "phone": "+1 650 555 1212 x7"},
        },
    }


def purchase(dest: RedditDestination, n: int | str, minutes_ago: float = 2, **required):
    mapped = MappedEvent({"value_decimal": 42.5, "currency": "USD", "item_count": 2, **required})
    return dest.build_payload("purchase", mapped, event(n, minutes_ago))


def test_catalog_entry():
    entry = RedditDestination.catalog
    assert entry.secret_fields == frozenset({"access_token"})
    assert entry.max_batch_size == 1000
    assert {t.name for t in entry.event_types} == {
        "purchase", "lead", "sign_up", "add_to_cart", "page_view", "custom",
    }  # fmt: skip


def test_payload_hashes_as_reddit_normalises():
    dest = RedditDestination("reddit", {"account_id": ACCOUNT, "access_token": TOKEN})
    payload = purchase(dest, 1, click_id="rdt-click-1")
    assert payload == {
        "event_at": (NOW - timedelta(minutes=2))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "event_type": {"tracking_type": "Purchase"},
        "click_id": "rdt-click-1",
        "user": {
            "email": sha("janedoe@example.com"),  # dots and +tag of the local part dropped
            "phone_number": sha("+16505551212"),  # '+digits', the extension dropped
            "external_id": sha("User-1"),  # trimmed, case kept
            "ip_address": sha("203.0.113.4"),  # hashed, unlike Meta's
            "user_agent": "Mozilla/5.0",
        },
        "event_metadata": {
            "value_decimal": 42.5,
            "currency": "USD",
            "item_count": 2,
            "conversion_id": "msg-1",
        },
    }
    assert dest.check_payload("purchase", payload) is None


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda d: purchase(d, 1, minutes_ago=8 * 24 * 60), "older than 7 days"),
        (lambda d: purchase(d, 2, minutes_ago=-30), "in the future"),
        (lambda d: purchase(d, 3, currency="dollars"), "ISO 4217"),
        (
            lambda d: d.build_payload("custom", MappedEvent({"tracking_type": "Custom"}), event(4)),
            "custom_event_name",
        ),
        (
            lambda d: d.build_payload("custom", MappedEvent({"tracking_type": "Bought"}), event(5)),
            "'Bought' is not one of",
        ),
    ],
)
def test_check_payload_refuses_what_reddit_would(build, words):
    dest = RedditDestination("reddit", {"account_id": ACCOUNT, "access_token": TOKEN})
    problem = dest.check_payload("purchase", build(dest))
    assert problem is not None and words in problem


def test_batch_is_delivered_and_test_mode_records_nothing(reddit):
    fake, server, dest = reddit
    result = send_batch(dest, "purchase", [purchase(dest, n) for n in range(3)])
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == [] and len(fake.events) == 3
    assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    testing = RedditDestination("reddit", {**dest.config, "test_mode": True})
    assert (
        send_batch(testing, "purchase", [purchase(dest, 9)]).items[0].status is ItemStatus.DELIVERED
    )
    assert fake.test_requests == 1 and len(fake.events) == 3


def test_invalid_events_fail_alone_and_the_rest_are_resent(reddit):
    fake, _server, dest = reddit
    result = send_batch(
        dest, "purchase", [purchase(dest, 0), purchase(dest, "bad"), purchase(dest, 2)]
    )
    assert [i.status for i in result.items] == [
        ItemStatus.RETRY,
        ItemStatus.FAILED,
        ItemStatus.RETRY,
    ]
    assert result.items[1].error == "reddit: event_metadata.currency: invalid currency code"
    assert result.items[0].error == RESENT_WITH_INVALID and result.items[0].retry_after == 0.0
    assert not result.split and fake.events == []
    again = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, 2)])
    assert [i.status for i in again.items] == [ItemStatus.DELIVERED] * 2


@pytest.mark.parametrize(
    ("reply", "status", "wait", "split"),
    [
        (
            Reply(429, {"message": "Too Many Requests"}, {"Retry-After": "3"}),
            ItemStatus.RETRY,
            3.0,
            False,
        ),
        (Reply(502, "Bad Gateway"), ItemStatus.RETRY, None, False),
        (Reply(400, {"message": "malformed request"}), ItemStatus.FAILED, None, True),
        (Reply(401, {"message": "Unauthorized"}), ItemStatus.FAILED, None, False),
    ],
)
def test_request_level_answers(reddit, reply, status, wait, split):
    fake, _server, dest = reddit
    fake.outages.append(reply)
    result = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, 1)])
    assert [(i.status, i.retry_after) for i in result.items] == [(status, wait)] * 2
    assert result.split is split
