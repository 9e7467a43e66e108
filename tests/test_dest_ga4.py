"""GA4 Measurement Protocol destination against a fake /mp/collect on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from itertools import chain
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from streamctl.core.errors import MappingError
from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.ga4 import GA4Destination
from tests.fakes.vendors_b import FakeGA4

CONFIG = {"measurement_id": "G-TEST123", "api_secret": "s3cr3t"}


def now_iso(minutes_ago: int = 1) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


def payload(dest: GA4Destination, event_type: str = "purchase", **overrides: object) -> dict:
    required: dict[str, object] = {"client_id": "555.666"}
    if event_type == "purchase":
        required.update(
            transaction_id="T-1",
            items=[{"item_id": "sku-1", "price": 10, "quantity": 1}],
            currency="USD",
            value=10.0,
        )
    required.update(overrides)
    return dest.build_payload(event_type, MappedEvent(required=required), {"messageId": "m"})


def send(dest: GA4Destination, event_type: str, payloads: list[dict]):
    async def go():
        async with httpx.AsyncClient() as client:
            return await dest.send(client, event_type, payloads, timeout=5)

    return asyncio.run(go())


@pytest.fixture
def server(module_fake_server, fake):
    module_fake_server.answer = fake
    return module_fake_server


@pytest.fixture
def fake():
    return FakeGA4(CONFIG["measurement_id"], CONFIG["api_secret"])


def test_catalog_declares_recommended_events_with_their_required_fields():
    catalog = GA4Destination.catalog
    purchase = catalog.event_type("purchase")
    assert purchase is not None
    assert {f.name: f.type for f in purchase.required} == {
        "client_id": "string",
        "transaction_id": "string",
        "items": "array",
    }
    assert {"currency", "value", "timestamp", "user_id"} <= {f.name for f in purchase.optional}
    assert {"add_to_cart", "sign_up", "login", "page_view", "custom"} <= {
        t.name for t in catalog.event_types
    }
    assert catalog.event_type("custom").field("name").type == "string"
    assert catalog.secret_fields == frozenset({"api_secret"})
    assert catalog.max_batch_size == 25


def test_payload_places_user_properties_params_and_timestamp():
    dest = GA4Destination("ga", CONFIG)
    mapped = MappedEvent(
        required={
            "client_id": "c1",
            "user_id": "u1",
            "name": "level_up",
            "timestamp": "2026-11-26T12:00:00.250Z",
        },
        user={"plan": "pro"},
        properties={"level": 3, "coupon": None},
    )
    body = dest.build_payload("custom", mapped, {})
    assert body == {
        "client_id": "c1",
        "user_id": "u1",
        "user_properties": {"plan": {"value": "pro"}},
        "events": [
            {"name": "level_up", "params": {"level": 3}, "timestamp_micros": 1795694400250000}
        ],
    }


def test_an_unparseable_timestamp_is_a_mapping_error_naming_the_field():
    dest = GA4Destination("ga", CONFIG)
    with pytest.raises(MappingError, match="timestamp"):
        dest.build_payload(
            "login", MappedEvent(required={"client_id": "c", "timestamp": "yesterday"}), {}
        )


def test_a_valid_purchase_passes_the_checks():
    dest = GA4Destination("ga", CONFIG)
    assert dest.check_payload("purchase", payload(dest, timestamp=now_iso())) is None


@pytest.mark.parametrize(
    ("event_type", "overrides", "problem"),
    [
        ("custom", {"name": "a" * 41}, "longer than 40"),
        ("custom", {"name": "1st_event"}, "must start with a letter"),
        ("custom", {"name": "order completed"}, "only letters, digits and _"),
        ("custom", {"name": "session_start"}, "reserved by GA4"),
        ("custom", {"name": "google_thing"}, "prefix reserved"),
        ("custom", {"name": "ok", **{f"p{i}": i for i in range(26)}}, "26 parameters"),
        ("custom", {"name": "ok", "p" * 41: 1}, "longer than 40"),
        ("custom", {"name": "ok", "note": "x" * 101}, "101 characters"),
        ("custom", {"name": "ok", "nested": {"a": 1}}, "string or a number"),
        ("custom", {"name": "ok", "timestamp": now_iso(minutes_ago=73 * 60)}, "72 hours"),
        ("purchase", {"items": [{"price": 1}]}, "item_id or item_name"),
        ("purchase", {"items": [{"item_id": str(i)} for i in range(201)]}, "201 items"),
        (
            "purchase",
            {"items": [{"item_id": "a", **{f"c{i}": i for i in range(28)}}]},
            "28 custom parameters",
        ),
        ("purchase", {"currency": None}, "value without currency"),
        ("purchase", {"client_id": ""}, "client_id"),
        ("purchase", {"user_id": "u" * 257}, "user_id"),
    ],
)
def test_limits_checked_before_sending(event_type, overrides, problem):
    dest = GA4Destination("ga", CONFIG)
    problems = dest.check_payload(event_type, payload(dest, event_type, **overrides))
    assert problems is not None
    assert problem in problems


def test_long_page_location_is_within_its_own_limit():
    dest = GA4Destination("ga", CONFIG)
    body = dest.build_payload(
        "page_view",
        MappedEvent(required={"client_id": "c", "page_location": "https://x/" + "a" * 900}),
        {},
    )
    assert dest.check_payload("page_view", body) is None


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ({"a" * 25: "x"}, "longer than 24"),
        ({"plan": "x" * 37}, "longer than 36"),
        ({"first_open_time": 1}, "reserved"),
        ({"ga_plan": "x"}, "reserved"),
        ({f"p{i}": i for i in range(26)}, "26 user properties"),
    ],
)
def test_user_property_limits(user, problem):
    dest = GA4Destination("ga", CONFIG)
    body = dest.build_payload("login", MappedEvent(required={"client_id": "c"}, user=user), {})
    assert problem in (dest.check_payload("login", body) or "")


def test_send_groups_events_by_client_in_requests_of_at_most_25(fake, server):
    dest_config = dict(CONFIG)
    dest = GA4Destination("ga", {**dest_config, "base_url": server.url})
    payloads = [payload(dest, transaction_id=f"A{i}") for i in range(30)]
    payloads.insert(3, payload(dest, client_id="other", transaction_id="B"))
    payloads.append(payload(dest, client_id="c3", user_id="u3", transaction_id="C"))
    result = send(dest, "purchase", payloads)
    assert fake.problems == []
    assert [item.status for item in result.items] == [ItemStatus.DELIVERED] * 32
    assert all(item.status_code == 204 for item in result.items)
    bodies = [r.json() for r in fake.requests]
    sizes = sorted(len(b["events"]) for b in bodies)
    assert sizes == [1, 1, 5, 25]
    by_client = {}
    for body in bodies:  # a client's requests go out together: they arrive in any order
        by_client.setdefault(body["client_id"], []).append(
            [e["params"]["transaction_id"] for e in body["events"]]
        )
    first = sorted(by_client["555.666"], key=lambda ids: int(ids[0][1:]))
    assert list(chain.from_iterable(first)) == [f"A{i}" for i in range(30)]  # order kept
    by_client = {client: list(chain.from_iterable(parts)) for client, parts in by_client.items()}
    assert by_client["other"] == ["B"]
    assert by_client["c3"] == ["C"]


def test_request_url_carries_measurement_id_and_secret_and_regions():
    assert (
        GA4Destination("ga", CONFIG)
        .url()
        .startswith("https://www.google-analytics.com/mp/collect?")
    )
    eu = GA4Destination("ga", {**CONFIG, "region": "eu"}).url()
    parts = urlsplit(eu)
    assert parts.netloc == "region1.google-analytics.com"
    assert parse_qs(parts.query) == {"measurement_id": ["G-TEST123"], "api_secret": ["s3cr3t"]}


def test_build_request_refuses_a_mix_of_clients():
    dest = GA4Destination("ga", CONFIG)
    with pytest.raises(ValueError, match="one client"):
        dest.build_request("purchase", [payload(dest), payload(dest, client_id="b")])


def test_server_errors_and_rate_limits_are_retried_with_retry_after(fake, server):
    fake.fail_next(503, {"error": "unavailable"})
    fake.fail_next(429, "slow down", headers={"Retry-After": "7"})
    dest = GA4Destination("ga", {**CONFIG, "base_url": server.url})
    first = send(dest, "purchase", [payload(dest)])
    second = send(dest, "purchase", [payload(dest)])
    third = send(dest, "purchase", [payload(dest)])
    assert first.items[0].status is ItemStatus.RETRY and first.items[0].status_code == 503
    assert second.items[0].status is ItemStatus.RETRY and second.items[0].retry_after == 7
    assert third.items[0].status is ItemStatus.DELIVERED
    assert fake.problems == []


def test_one_clients_failure_does_not_touch_the_other_clients_outcomes(fake, server):
    fake.fail_next(500)
    dest = GA4Destination("ga", {**CONFIG, "base_url": server.url})
    payloads = [payload(dest, client_id="a"), payload(dest, client_id="b")]
    # Requests go out concurrently: whichever arrives first gets the 500.
    result = send(dest, "purchase", payloads)
    statuses = sorted(item.status for item in result.items)
    assert statuses == sorted([ItemStatus.DELIVERED, ItemStatus.RETRY])


def test_connection_refused_is_a_retry():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = GA4Destination("ga", {**CONFIG, "base_url": f"http://127.0.0.1:{port}"})
    result = send(dest, "purchase", [payload(dest)])
    assert result.items[0].status is ItemStatus.RETRY
    assert "connection" in (result.items[0].error or "")


def test_validation_server_flags_events_and_only_the_rest_are_collected(fake, server):
    fake.invalid_names = {"bad_one"}
    fake.invalid_clients = {"broken-client"}
    dest = GA4Destination("ga", {**CONFIG, "base_url": server.url, "validate": True})
    custom = [
        dest.build_payload("custom", MappedEvent(required={"client_id": client, "name": name}), {})
        for client, name in [
            ("c1", "good_one"),
            ("c1", "bad_one"),
            ("c1", "good_two"),
            ("broken-client", "fine"),
        ]
    ]
    result = send(dest, "custom", custom)
    assert fake.problems == []
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED, ItemStatus.FAILED, ItemStatus.DELIVERED, ItemStatus.FAILED,
    ]  # fmt: skip
    assert "NAME_INVALID" in result.items[1].error and "index: [1]" in result.items[1].error
    assert "client_id is invalid" in result.items[3].error
    assert len(fake.validated) == 2  # one validation request per client
    assert [a["event"]["name"] for a in fake.accepted] == ["good_one", "good_two"]
    paths = sorted(urlsplit(r.path).path for r in fake.requests)
    assert paths == ["/debug/mp/collect", "/debug/mp/collect", "/mp/collect"]


def test_validation_server_outage_retries_without_collecting(fake, server):
    fake.fail_next(503, "unavailable")
    dest = GA4Destination("ga", {**CONFIG, "base_url": server.url, "validate": True})
    result = send(dest, "purchase", [payload(dest)])
    assert result.items[0].status is ItemStatus.RETRY
    assert "validation server" in result.items[0].error
    assert fake.accepted == []


def test_consent_is_request_level_and_checked(fake, server):
    dest = GA4Destination("ga", {**CONFIG, "base_url": server.url})
    granted = {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}
    payloads = [
        dest.build_payload(
            "login", MappedEvent(required={"client_id": "c", "consent": consent}), {}
        )
        for consent in (granted, None, granted)
    ]
    assert payloads[0]["consent"] == granted and "consent" not in payloads[1]
    assert dest.check_payload("login", payloads[0]) is None
    result = send(dest, "login", payloads)
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert sorted(len(r.json()["events"]) for r in fake.requests) == [
        1,
        2,
    ]  # consent splits the client
    assert fake.problems == []
    bad = dest.build_payload(
        "login", MappedEvent(required={"client_id": "c", "consent": {"ads": "yes"}}), {}
    )
    assert "consent must map" in (dest.check_payload("login", bad) or "")
