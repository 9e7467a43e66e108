"""Braze /users/track against a fake Braze on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.braze import BrazeDestination
from tests.fakes.http import Reply
from tests.fakes.vendors_a import FakeBraze, send_batch, serve

KEY = "braze-rest-key"
EVENT = {
    "type": "track",
    "event": "Order Completed",
    "messageId": "m1",
    "userId": "u1",
    "timestamp": "2026-11-26T12:00:00Z",
}


@pytest.fixture
def braze(module_fake_server):
    fake = FakeBraze(KEY, blocked_external_ids={"test-user"})
    server = serve(module_fake_server, fake)
    config = {
        "api_key": KEY,
        "endpoint": "https://rest.iad-01.braze.com",
        "base_url": server.url,
    }
    return fake, server, BrazeDestination("braze-prod", config)


def purchase(dest: BrazeDestination, user: str, price: float = 9.99, **user_fields):
    required = {
        "external_id": user,
        "product_id": "backpack",
        "currency": "USD",
        "price": price,
        "time": "2026-11-26T12:00:00Z",
    }
    return dest.build_payload(
        "purchase", MappedEvent(required, user=user_fields, properties={"color": "red"}), EVENT
    )


def custom(dest: BrazeDestination, user: str, name: str = "rented_movie"):
    required = {"external_id": user, "name": name, "time": "2026-11-26T13:00:00+01:00"}
    return dest.build_payload(
        "custom", MappedEvent(required, properties={"movie": "The Sad Egg"}), EVENT
    )


def test_catalog():
    entry = BrazeDestination.catalog
    assert entry.secret_fields == frozenset({"api_key"})
    assert entry.batch_size == entry.max_batch_size == 75
    purchase_type = entry.event_type("purchase")
    assert purchase_type is not None
    assert {f.name: f.type for f in purchase_type.required} == {
        "product_id": "string",
        "currency": "string",
        "price": "number",
        "time": "string",
    }


def test_purchase_payload_carries_the_user_s_attributes():
    dest = BrazeDestination(
        "b", {"api_key": KEY, "endpoint": "https://rest.iad-01.braze.com", "app_id": "app-1"}
    )
    payload = purchase(dest, "user-1", email="a@b.c")
    assert payload == {
        "purchases": [
            {
                "external_id": "user-1",
                "product_id": "backpack",
                "currency": "USD",
                "price": 9.99,
                "time": "2026-11-26T12:00:00.000Z",
                "app_id": "app-1",
                "properties": {"color": "red"},
            }
        ],
        "attributes": [{"external_id": "user-1", "email": "a@b.c"}],
    }
    assert dest.check_payload("purchase", payload) is None


def test_times_are_sent_in_utc():
    dest = BrazeDestination("b", {"api_key": KEY, "endpoint": "https://x"})
    assert custom(dest, "user-1")["events"][0]["time"] == "2026-11-26T12:00:00.000Z"


@pytest.mark.parametrize(
    ("required", "message"),
    [
        (
            {"product_id": "p", "currency": "USD", "price": 1, "time": "2026-01-01T00:00:00Z"},
            "names no user",
        ),
        (
            {
                "external_id": "u",
                "product_id": "p",
                "currency": "usd",
                "price": 1,
                "time": "2026-01-01T00:00:00Z",
            },
            "ISO 4217",
        ),
        (
            {
                "external_id": "u",
                "product_id": "p",
                "currency": "USD",
                "price": 1,
                "quantity": 101,
                "time": "2026-01-01T00:00:00Z",
            },
            "1 to 100",
        ),
        (
            {
                "external_id": "u",
                "product_id": "p",
                "currency": "USD",
                "price": 1,
                "time": "last tuesday",
            },
            "`time`",
        ),
        (
            {
                "user_alias": {"alias_name": "x"},
                "product_id": "p",
                "currency": "USD",
                "price": 1,
                "time": "2026-01-01T00:00:00Z",
            },
            "alias_label",
        ),
    ],
)
def test_check_payload_refuses_what_braze_would(required, message):
    dest = BrazeDestination("b", {"api_key": KEY, "endpoint": "https://x"})
    payload = dest.build_payload("purchase", MappedEvent(required), EVENT)
    problem = dest.check_payload("purchase", payload)
    assert problem is not None and message in problem


def test_batch_merges_into_one_users_track_request(braze):
    fake, server, dest = braze
    payloads = [purchase(dest, f"user-{n}", email=f"{n}@x.io") for n in range(3)]
    result = send_batch(dest, "purchase", payloads)
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == []
    (request,) = server.requests
    assert request.path == "/users/track"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.json()
    assert [p["external_id"] for p in body["purchases"]] == ["user-0", "user-1", "user-2"]
    assert [a["email"] for a in body["attributes"]] == ["0@x.io", "1@x.io", "2@x.io"]
    assert len(fake.purchases) == 3 and len(fake.attributes) == 3


def test_non_fatal_errors_fail_only_the_payload_that_sent_the_object(braze):
    fake, _server, dest = braze
    # user-0 has no attributes, so the attributes array and the purchases array have
    # different indexes for the same payload: errors must map back through both.
    payloads = [
        purchase(dest, "user-0"),
        purchase(dest, "test-user", email="t@x.io"),
        purchase(dest, "user-2", email="c@x.io"),
    ]
    result = send_batch(dest, "purchase", payloads)
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED,
        ItemStatus.FAILED,
        ItemStatus.DELIVERED,
    ]
    error = result.items[1].error or ""
    assert "purchases[1]" in error and "attributes[0]" in error and "blacklisted" in error
    assert result.items[1].status_code == 201
    assert [p["external_id"] for p in fake.purchases] == ["user-0", "user-2"]


def test_identify_sends_attributes(module_fake_server):
    fake = FakeBraze(KEY)
    server = serve(module_fake_server, fake)
    dest = BrazeDestination(
        "b", {"api_key": KEY, "endpoint": server.url}
    )  # endpoint alone works too
    payload = dest.build_payload(
        "identify", MappedEvent({"external_id": "user-5"}, user={"first_name": "Ann"}), EVENT
    )
    assert payload == {"attributes": [{"first_name": "Ann", "external_id": "user-5"}]}
    assert send_batch(dest, "identify", [payload]).items[0].status is ItemStatus.DELIVERED
    assert fake.attributes == [{"first_name": "Ann", "external_id": "user-5"}]


def test_429_waits_until_the_rate_limit_reset(braze):
    fake, _server, dest = braze
    reset = int(time.time()) + 40
    fake.outages.append(
        Reply(
            429,
            {"message": "Rate Limited"},
            {"X-RateLimit-Reset": str(reset), "X-RateLimit-Remaining": "0"},
        )
    )
    (item,) = send_batch(dest, "custom", [custom(dest, "user-1")]).items
    assert (item.status, item.status_code) == (ItemStatus.RETRY, 429)
    assert item.retry_after is not None and 30 < item.retry_after <= 40


def test_429_prefers_retry_after(braze):
    fake, _server, dest = braze
    fake.outages.append(
        Reply(429, {"message": "Rate Limited"}, {"Retry-After": "5", "X-RateLimit-Reset": "0"})
    )
    (item,) = send_batch(dest, "custom", [custom(dest, "user-1")]).items
    assert item.retry_after == 5.0


@pytest.mark.parametrize(
    ("code", "status", "split"),
    [
        (401, ItemStatus.FAILED, False),
        (400, ItemStatus.FAILED, True),
        (500, ItemStatus.RETRY, False),
    ],
)
def test_fatal_and_server_errors(braze, code, status, split):
    fake, _server, dest = braze
    fake.outages.append(Reply(code, {"message": "nope"}))
    result = send_batch(dest, "custom", [custom(dest, "user-1"), custom(dest, "user-2")])
    assert {i.status for i in result.items} == {status}
    assert result.split is split


def test_wrong_key_is_refused_by_the_fake_as_braze_does(braze):
    _fake, server, _ = braze
    dest = BrazeDestination("b", {"api_key": "wrong", "endpoint": server.url})
    result = send_batch(dest, "custom", [custom(dest, "user-1")])
    assert (result.items[0].status, result.items[0].status_code) == (ItemStatus.FAILED, 401)


def test_queued_during_maintenance_counts_as_delivered(braze):
    fake, _server, dest = braze
    fake.outages.append(Reply(202, {"message": "queued"}))
    assert (
        send_batch(dest, "custom", [custom(dest, "user-1")]).items[0].status is ItemStatus.DELIVERED
    )
