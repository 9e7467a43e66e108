"""Customer.io Track API destination (v2 batch and v1) against a fake on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.customerio import CustomerIODestination
from tests.fakes.vendors_b import FakeCustomerIO

SITE, KEY = "site-1", "cio-key"


def event(dest, person: str | None = "u1", name: str = "Order Completed", **extra) -> dict:
    required = {"name": name, "timestamp": "2026-11-26T12:00:00Z", **extra}
    if person is not None:
        required["id"] = person
    return dest.build_payload(
        "custom", MappedEvent(required=required, properties={"total": 3}), {"messageId": "m1"}
    )


def identify(dest, person: str = "u1", **user) -> dict:
    return dest.build_payload(
        "identify",
        MappedEvent(
            required={"id": person, "email": f"{person}@x.io"}, user=user or {"plan": "pro"}
        ),
        {},
    )


def send(dest, event_type, payloads):
    async def go():
        async with httpx.AsyncClient() as client:
            return await dest.send(client, event_type, payloads, timeout=5)

    return asyncio.run(go())


@pytest.fixture
def fake():
    return FakeCustomerIO(SITE, KEY)


@pytest.fixture
def server(module_fake_server, fake):
    module_fake_server.answer = fake
    return module_fake_server


def dest_for(server, **config) -> CustomerIODestination:
    return CustomerIODestination(
        "cio", {"site_id": SITE, "api_key": KEY, "base_url": server.url, **config}
    )


def test_catalog():
    catalog = CustomerIODestination.catalog
    assert [t.name for t in catalog.event_types] == ["identify", "custom", "page", "screen"]
    assert {f.name for f in catalog.event_type("custom").required} == {"name"}
    assert catalog.event_type("identify").user_fields is True
    assert catalog.secret_fields == frozenset({"api_key"})
    assert (
        CustomerIODestination("c", {"site_id": SITE, "api_key": KEY, "api": "v1"}).batch_size(
            "custom"
        )
        == 1
    )


def test_v2_entries():
    dest = CustomerIODestination("cio", {"site_id": SITE, "api_key": KEY})
    assert event(dest) == {
        "type": "person",
        "identifiers": {"id": "u1"},
        "action": "event",
        "name": "Order Completed",
        "id": "m1",
        "timestamp": 1795694400,
        "attributes": {"total": 3},
    }
    assert identify(dest) == {
        "type": "person",
        "identifiers": {"id": "u1"},
        "action": "identify",
        "attributes": {"plan": "pro", "email": "u1@x.io"},
    }
    anonymous = event(dest, person=None, anonymous_id="anon-1")
    assert anonymous["identifiers"] == {"anonymous_id": "anon-1"}


@pytest.mark.parametrize(
    ("event_type", "required", "user", "problem"),
    [
        ("custom", {"name": "x"}, {}, "person id, an email"),
        ("custom", {"id": "u", "name": "n" * 101}, {}, "at most 100"),
        ("custom", {"id": "u", "name": ""}, {}, "non-empty"),
        ("identify", {"id": "u"}, {f"a{i}": 1 for i in range(301)}, "301 attributes"),
        ("identify", {"id": "u"}, {"bio": "x" * 1001}, "over 1000 bytes"),
        ("identify", {"anonymous_id": "a"}, {"x": 1}, "not only an anonymous_id"),
    ],
)
def test_checks(event_type, required, user, problem):
    dest = CustomerIODestination("cio", {"site_id": SITE, "api_key": KEY})
    payload = dest.build_payload(event_type, MappedEvent(required=required, user=user), {})
    assert problem in (dest.check_payload(event_type, payload) or "")


def test_v2_batch_archives_only_the_entries_customerio_names(fake, server):
    fake.bad_ids = {"bad"}
    dest = dest_for(server)
    payloads = [event(dest, "u1"), event(dest, "bad"), identify(dest, "u2"), event(dest, "u3")]
    result = send(dest, "custom", payloads)
    assert fake.problems == []
    assert [(r.method, r.path) for r in fake.requests] == [("POST", "/api/v2/batch")]
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED, ItemStatus.FAILED, ItemStatus.DELIVERED, ItemStatus.DELIVERED,
    ]  # fmt: skip
    assert result.items[1].status_code == 207
    assert "person id is not allowed" in result.items[1].error
    assert [e["identifiers"]["id"] for e in fake.accepted] == ["u1", "u2", "u3"]


def test_v1_sends_one_request_per_event_on_the_documented_paths(fake, server):
    fake.bad_ids = {"bad"}
    dest = dest_for(server, api="v1")
    payloads = [
        identify(dest, "u 1"),
        event(dest, "u1"),
        event(dest, None, anonymous_id="anon"),
        dest.build_payload("page", MappedEvent(required={"id": "u1", "name": "https://x.io/"}), {}),
        event(dest, "bad"),
    ]
    result = send(dest, "custom", payloads)
    assert fake.problems == []
    assert sorted((r.method, r.path) for r in fake.requests) == sorted(
        [
            ("PUT", "/api/v1/customers/u%201"),
            ("POST", "/api/v1/customers/u1/events"),
            ("POST", "/api/v1/events"),
            ("POST", "/api/v1/customers/u1/events"),
            ("POST", "/api/v1/customers/bad/events"),
        ]
    )
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 4 + [ItemStatus.FAILED]
    assert "must be a string" in result.items[4].error
    page = next(a for a in fake.accepted if a.get("type") == "page")
    assert page["name"] == "https://x.io/"
    tracked = next(
        a for a in fake.accepted if a["path"] == "/api/v1/customers/u1/events" and "type" not in a
    )
    assert (
        tracked["data"] == {"total": 3}
        and tracked["timestamp"] == 1795694400
        and tracked["id"] == "m1"
    )


def test_rate_limits_server_errors_and_bad_credentials(fake, server):
    fake.fail_next(429, {"meta": {"error": "rate limited"}}, headers={"Retry-After": "2"})
    fake.fail_next(503, "unavailable")
    dest = dest_for(server)
    payloads = [event(dest, "u1"), event(dest, "u2")]
    limited = send(dest, "custom", payloads)
    unavailable = send(dest, "custom", payloads)
    assert {i.status for i in limited.items} == {ItemStatus.RETRY} and limited.items[
        0
    ].retry_after == 2
    assert {i.status for i in unavailable.items} == {ItemStatus.RETRY}
    wrong = CustomerIODestination(
        "cio", {"site_id": SITE, "api_key": "nope", "base_url": server.url}
    )
    refused = send(wrong, "custom", payloads)
    assert {i.status for i in refused.items} == {ItemStatus.FAILED}
    assert refused.split is False
    assert "Unauthorized" in refused.items[0].error


def test_a_400_without_entry_errors_is_split(fake, server):
    fake.fail_next(400, {"meta": {"error": "malformed batch"}})
    dest = dest_for(server)
    result = send(dest, "custom", [event(dest, "u1"), event(dest, "u2")])
    assert result.split is True
    assert "malformed batch" in result.items[0].error


def test_regions_and_auth_header():
    eu = CustomerIODestination("cio", {"site_id": SITE, "api_key": KEY, "region": "eu"})
    request = eu.build_request("custom", [event(eu)])
    assert request.url == "https://track-eu.customer.io/api/v2/batch"
    # httpx turns this into the Basic header when sending (the fake server checks it), so
    # `preview` never prints the base64 of the key.
    assert request.auth == (SITE, KEY)
    assert "Authorization" not in request.headers
