"""Iterable destination against a fake Iterable API on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from streamctl.destinations.base import BatchResult, ItemStatus, MappedEvent
from streamctl.destinations.iterable import IterableDestination
from tests.fakes.vendors_b import FakeIterable

KEY = "it-key"


def custom(dest, email: str, name: str = "Signed Up", message_id: str | None = None) -> dict:
    mapped = MappedEvent(
        required={"eventName": name, "email": email, "createdAt": "2026-11-26T12:00:00Z"},
        properties={"plan": "pro"},
    )
    return dest.build_payload("custom", mapped, {"messageId": message_id or f"m-{email}-{name}"})


async def _send(dest, event_type, payloads):
    async with httpx.AsyncClient() as client:
        return await dest.send(client, event_type, payloads, timeout=5)


async def _deliver(dest, event_type, payloads) -> BatchResult:
    """The delivery engine's contract for `split`: bisect and resend the halves."""
    result = await _send(dest, event_type, payloads)
    if not result.split:
        return result
    middle = len(payloads) // 2
    first = await _deliver(dest, event_type, payloads[:middle])
    second = await _deliver(dest, event_type, payloads[middle:])
    return BatchResult(first.items + second.items)


def send(dest, event_type, payloads):
    return asyncio.run(_send(dest, event_type, payloads))


def deliver(dest, event_type, payloads):
    return asyncio.run(_deliver(dest, event_type, payloads))


@pytest.fixture
def fake():
    return FakeIterable(KEY)


@pytest.fixture
def server(module_fake_server, fake):
    module_fake_server.answer = fake
    return module_fake_server


def dest_for(server, **config) -> IterableDestination:
    return IterableDestination("it", {"api_key": KEY, "base_url": server.url, **config})


def test_catalog():
    catalog = IterableDestination.catalog
    assert [t.name for t in catalog.event_types] == ["custom", "purchase", "identify"]
    purchase = catalog.event_type("purchase")
    assert {f.name: f.type for f in purchase.required} == {"items": "array", "total": "number"}
    assert catalog.event_type("custom").user_fields is False
    assert catalog.secret_fields == frozenset({"api_key"})
    assert IterableDestination("it", {"api_key": KEY}).batch_size("purchase") == 1
    assert IterableDestination("it", {"api_key": KEY, "bulk": False}).batch_size("custom") == 1


def test_payload_shapes():
    dest = IterableDestination("it", {"api_key": KEY})
    assert custom(dest, "a@x.io", message_id="m1") == {
        "eventName": "Signed Up",
        "email": "a@x.io",
        "createdAt": 1795694400,
        "id": "m1",
        "dataFields": {"plan": "pro"},
    }
    purchase = dest.build_payload(
        "purchase",
        MappedEvent(
            required={
                "userId": "u1",
                "total": 20.5,
                "items": [{"id": "s", "name": "Sock", "price": 20.5, "quantity": 1}],
            },
            user={"vip": True},
            properties={"coupon": "X"},
        ),
        {"messageId": "m2"},
    )
    assert purchase == {
        "user": {"userId": "u1", "dataFields": {"vip": True}},
        "total": 20.5,
        "items": [{"id": "s", "name": "Sock", "price": 20.5, "quantity": 1}],
        "id": "m2",
        "dataFields": {"coupon": "X"},
    }
    identify = dest.build_payload(
        "identify", MappedEvent(required={"email": "a@x.io"}, user={"plan": "pro"}), {}
    )
    assert identify == {"email": "a@x.io", "dataFields": {"plan": "pro"}}


@pytest.mark.parametrize(
    ("event_type", "required", "problem"),
    [
        ("custom", {"eventName": "x"}, "email or a userId"),
        (
            "purchase",
            {"userId": "u", "total": 1, "items": [{"id": "a", "price": 1}]},
            "lacks name, quantity",
        ),
        ("purchase", {"total": 1, "items": []}, "email or a userId"),
        ("custom", {"eventName": "x", "userId": "u", "id": "x" * 513}, "512 bytes"),
    ],
)
def test_checks(event_type, required, problem):
    dest = IterableDestination("it", {"api_key": KEY})
    payload = dest.build_payload(event_type, MappedEvent(required=required), {})
    assert problem in (dest.check_payload(event_type, payload) or "")


def test_track_bulk_fails_only_the_events_iterable_names(fake, server):
    fake.invalid_emails = {"bad@x"}
    fake.forgotten_emails = {"gone@x"}
    fake.disallowed_events = {"Secret"}
    dest = dest_for(server)
    payloads = [
        custom(dest, "a@x"),
        custom(dest, "bad@x"),
        custom(dest, "b@x", name="Secret"),
        custom(dest, "gone@x"),
        custom(dest, "c@x"),
    ]
    result = send(dest, "custom", payloads)
    assert fake.problems == []
    assert [r.path for r in fake.requests] == ["/api/events/trackBulk"]
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED, ItemStatus.FAILED, ItemStatus.FAILED, ItemStatus.FAILED, ItemStatus.DELIVERED,
    ]  # fmt: skip
    assert result.items[1].error == "invalid email"
    assert "disallowed" in result.items[2].error
    assert "forgotten" in result.items[3].error
    assert [e["email"] for e in fake.accepted] == ["a@x", "c@x"]


def test_unnamed_failures_are_bisected_down_to_the_failing_event(fake, server):
    fake.unnamed_failure_events = {"Broken"}
    dest = dest_for(server)
    payloads = [custom(dest, f"u{i}@x", name="Broken" if i == 2 else "Fine") for i in range(4)]
    result = deliver(dest, "custom", payloads)
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED, ItemStatus.DELIVERED, ItemStatus.FAILED, ItemStatus.DELIVERED,
    ]  # fmt: skip
    assert "without naming" in result.items[2].error
    assert fake.problems == []


def test_user_bulk_update_and_single_update(fake, server):
    fake.not_found_user_ids = {"ghost"}
    bulk = dest_for(server)
    users = [
        bulk.build_payload("identify", MappedEvent(required={"userId": uid}, user={"n": 1}), {})
        for uid in ("u1", "ghost", "u3")
    ]
    result = send(bulk, "identify", users)
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED,
        ItemStatus.FAILED,
        ItemStatus.DELIVERED,
    ]
    single = dest_for(server, bulk=False)
    one = send(single, "identify", users[:1])
    assert one.items[0].status is ItemStatus.DELIVERED
    assert [r.path for r in fake.requests] == ["/api/users/bulkUpdate", "/api/users/update"]
    assert fake.problems == []


def test_purchases_go_one_per_request_to_track_purchase(fake, server):
    fake.invalid_emails = {"bad@x"}
    dest = dest_for(server)
    item = {"id": "s1", "name": "Sock", "price": 5, "quantity": 2}
    purchases = [
        dest.build_payload(
            "purchase", MappedEvent(required={"email": email, "total": 10, "items": [item]}), {}
        )
        for email in ("a@x", "bad@x")
    ]
    result = send(dest, "purchase", purchases)
    assert [r.path for r in fake.requests] == ["/api/commerce/trackPurchase"] * 2
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED, ItemStatus.FAILED]
    assert result.items[1].status_code == 400
    assert "InvalidEmailAddressError" in result.items[1].error
    assert fake.problems == []


def test_single_track_disallowed_name_answered_200_is_a_failure(fake, server):
    fake.disallowed_events = {"Secret"}
    dest = dest_for(server, bulk=False)
    result = send(dest, "custom", [custom(dest, "a@x", name="Secret")])
    assert [r.path for r in fake.requests] == ["/api/events/track"]
    assert result.items[0].status is ItemStatus.FAILED
    assert "disallowed" in result.items[0].error


def test_rate_limit_server_error_and_bad_key(fake, server):
    fake.fail_next(429, {"msg": "Rate limit exceeded", "code": "RateLimitExceeded", "params": None},
                   headers={"Retry-After": "3"})  # fmt: skip
    fake.fail_next(500, {"msg": "oops", "code": "GenericError", "params": None})
    dest = dest_for(server)
    payloads = [custom(dest, "a@x"), custom(dest, "b@x")]
    limited = send(dest, "custom", payloads)
    broken = send(dest, "custom", payloads)
    assert {i.status for i in limited.items} == {ItemStatus.RETRY}
    assert limited.items[0].retry_after == 3
    assert "RateLimitExceeded" in limited.items[0].error
    assert {i.status for i in broken.items} == {ItemStatus.RETRY}
    wrong_key = IterableDestination("it", {"api_key": "nope", "base_url": server.url})
    refused = send(wrong_key, "custom", payloads)
    assert {i.status for i in refused.items} == {ItemStatus.FAILED}
    assert refused.split is False
    assert "BadApiKey" in refused.items[0].error


def test_a_400_on_a_bulk_request_is_split(fake, server):
    fake.fail_next(
        400, {"msg": "types mismatched", "code": "RequestFieldsTypesMismatched", "params": {}}
    )
    dest = dest_for(server)
    result = send(dest, "custom", [custom(dest, "a@x"), custom(dest, "b@x")])
    assert result.split is True
    assert "RequestFieldsTypesMismatched" in result.items[0].error


def test_regions():
    assert IterableDestination("it", {"api_key": KEY}).build_request("custom", [{}]).url == (
        "https://api.iterable.com/api/events/trackBulk"
    )
    eu = IterableDestination("it", {"api_key": KEY, "region": "eu"}).build_request("custom", [{}])
    assert eu.url == "https://api.eu.iterable.com/api/events/trackBulk"
    assert eu.headers["Api-Key"] == KEY
