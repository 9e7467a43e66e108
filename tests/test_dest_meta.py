"""Meta Conversions API against a fake Graph API on 127.0.0.1."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from streamctl.core.errors import MappingError
from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.meta import MetaDestination
from tests.fakes.ad_platforms import FakeMeta, meta_throttled
from tests.fakes.http import Reply
from tests.fakes.vendors_a import send_batch, serve

PIXEL = "1234567890"
TOKEN = "meta-access-token-xyz"
NOW = datetime.now(UTC).replace(microsecond=0)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def meta(module_fake_server):
    fake = FakeMeta(PIXEL, TOKEN, refuse_emails=frozenset({sha("refused@example.com")}))
    server = serve(module_fake_server, fake)
    config = {
        "pixel_id": PIXEL,
        "access_token": TOKEN,
        "base_url": server.url,
        "test_event_code": "TEST123",
    }
    return fake, server, MetaDestination("meta", config)


def event(n: int, email: str = "Buyer@Example.com", **extra):
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"msg-{n}",
        "userId": f"user-{n}",
        "timestamp": (NOW - timedelta(minutes=5)).isoformat(),
        "context": {
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            "page": {"url": "https://shop.example.com/checkout"},
            "traits": {"email": email},
        },
        **extra,
    }


def purchase(dest: MetaDestination, n: int, email: str = "Buyer@Example.com", **user):
    mapped = MappedEvent(
        {"value": 42.5, "currency": "EUR"}, user=user, properties={"order_id": f"o-{n}"}
    )
    return dest.build_payload("purchase", mapped, event(n, email))


def test_catalog_entry():
    entry = MetaDestination.catalog
    assert entry.secret_fields == frozenset({"access_token"})
    assert entry.max_batch_size == 1000
    names = {t.name for t in entry.event_types}
    assert names == {
        "purchase",
        "lead",
        "complete_registration",
        "add_to_cart",
        "page_view",
        "custom",
    }
    assert [f.name for f in entry.event_type("purchase").required] == ["value", "currency"]


def test_payload_hashes_plain_identifiers_and_keeps_the_unhashed_ones():
    dest = MetaDestination("meta", {"pixel_id": PIXEL, "access_token": TOKEN})
    payload = purchase(
        dest,
        1,
        ph="+1 (650) 555-1212",
        fn="Mary",
        country="US",
        fbp="fb.1.1596403881668.1116446470",
    )
    assert payload == {
        "event_name": "Purchase",
        "event_time": int((NOW - timedelta(minutes=5)).timestamp()),
        "event_id": "msg-1",  # pixel deduplication key
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": {
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "external_id": [sha("user-1")],
            "em": [sha("buyer@example.com")],
            "ph": [sha("16505551212")],
            "fn": [sha("mary")],
            "country": [sha("us")],
            "fbp": "fb.1.1596403881668.1116446470",
        },
        "custom_data": {"value": 42.5, "currency": "EUR", "order_id": "o-1"},
    }
    assert dest.check_payload("purchase", payload) is None


def test_already_hashed_values_and_mapped_fields_win():
    dest = MetaDestination(
        "meta", {"pixel_id": PIXEL, "access_token": TOKEN, "action_source": "app"}
    )
    digest = sha("someone@example.com")
    mapped = MappedEvent({"event_name": "DemoRequested", "event_id": "e-9"}, user={"em": [digest]})
    payload = dest.build_payload("custom", mapped, event(2))
    assert payload["event_name"] == "DemoRequested" and payload["event_id"] == "e-9"
    assert payload["user_data"]["em"] == [digest]
    assert payload["action_source"] == "app" and "event_source_url" not in payload


def test_a_phone_that_is_no_phone_is_a_mapping_error_naming_the_field():
    dest = MetaDestination("meta", {"pixel_id": PIXEL, "access_token": TOKEN})
    with pytest.raises(MappingError, match=r"meta: user `ph`: a phone number"):
        purchase(dest, 1, ph="ask reception")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"event_time": int((NOW - timedelta(days=8)).timestamp())}, "older than 7 days"),
        ({"action_source": "carrier_pigeon"}, "`action_source`"),
        ({"event_source_url": None}, "website events need `event_source_url`"),
        ({"custom_data": {"value": "lots", "currency": "EUR"}}, "numeric `value`"),
        ({"custom_data": {"value": 1, "currency": "euros"}}, "ISO 4217"),
        ({"user_data": {"email": "x"}}, "user_data has no field 'email'"),
    ],
)
def test_check_payload_refuses_what_meta_would(change, words):
    dest = MetaDestination("meta", {"pixel_id": PIXEL, "access_token": TOKEN})
    payload = {**purchase(dest, 1), **change}
    problem = dest.check_payload("purchase", payload)
    assert problem is not None and words in problem


def test_batch_is_delivered_with_the_test_event_code(meta):
    fake, server, dest = meta
    result = send_batch(dest, "purchase", [purchase(dest, n) for n in range(3)])
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == [] and len(fake.events) == 3
    assert fake.test_event_codes == ["TEST123"]
    assert server.requests[0].path == f"/v24.0/{PIXEL}/events"


def test_one_invalid_event_rejects_the_batch_and_asks_for_a_split(meta):
    fake, _server, dest = meta
    payloads = [purchase(dest, 0), purchase(dest, 1, email="refused@example.com")]
    result = send_batch(dest, "purchase", payloads)
    assert result.split
    assert {(i.status, i.status_code) for i in result.items} == {(ItemStatus.FAILED, 400)}
    assert "(#100/2804008) Invalid event: event 1" in (result.items[0].error or "")
    assert fake.events == []
    alone = send_batch(dest, "purchase", payloads[1:])
    assert not alone.split and alone.items[0].status is ItemStatus.FAILED


def test_a_bad_token_fails_without_split(meta):
    _fake, _server, dest = meta
    dest = MetaDestination("meta", {**dest.config, "access_token": "wrong-token-123"})
    result = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, 1)])
    assert not result.split
    assert all(i.status is ItemStatus.FAILED and "(#190)" in (i.error or "") for i in result.items)


def test_graph_throttling_waits_as_the_usage_header_says(meta):
    fake, _server, dest = meta
    fake.outages.append(meta_throttled(minutes=3))
    result = send_batch(dest, "purchase", [purchase(dest, 0)])
    assert [(i.status, i.retry_after) for i in result.items] == [(ItemStatus.RETRY, 180.0)]


@pytest.mark.parametrize(
    ("reply", "wait"),
    [
        (Reply(429, {"error": {"message": "slow down", "code": 4}}, {"Retry-After": "7"}), 7.0),
        # Retry-After: 0 means at once, not "unsaid" (the 60 s default).
        (Reply(429, {"error": {"message": "slow down", "code": 4}}, {"Retry-After": "0"}), 0.0),
        (Reply(503, "Service Unavailable"), None),
        (
            Reply(
                500,
                {
                    "error": {
                        "message": "An unknown error occurred",
                        "code": 1,
                        "is_transient": True,
                    }
                },
            ),
            None,
        ),
    ],
)
def test_429_and_server_errors_retry(meta, reply, wait):
    fake, _server, dest = meta
    fake.outages.append(reply)
    result = send_batch(dest, "purchase", [purchase(dest, 0), purchase(dest, 1)])
    assert [(i.status, i.retry_after) for i in result.items] == [(ItemStatus.RETRY, wait)] * 2
    assert not result.split


def test_request_shows_the_token_only_in_the_body():
    dest = MetaDestination("meta", {"pixel_id": PIXEL, "access_token": TOKEN})
    request = dest.build_request("purchase", [purchase(dest, 0)])
    assert request.url == f"https://graph.facebook.com/v24.0/{PIXEL}/events"
    assert TOKEN not in request.url and request.json["access_token"] == TOKEN
    assert "test_event_code" not in request.json


def test_validate_refuses_a_user_field_meta_does_not_define(tmp_path):
    import json

    from typer.testing import CliRunner

    from streamctl.cli.main import app
    from tests.replay_helpers import write_project

    write_project(
        tmp_path,
        'meta: { type: meta, config: { pixel_id: "1", access_token: tok-123456 } }\n',
        "source: web\ndestination: meta\nevent_types:\n  - type: lead\n    mappings:\n"
        "      user:\n        emial: { field: context.traits.email }\n",
        [],
    )
    result = CliRunner().invoke(app, ["validate", "--project", str(tmp_path), "--format", "json"])
    assert result.exit_code == 1
    [problem] = json.loads(result.stdout)
    assert problem["path"].endswith("sync.yaml") and problem["line"] == 7
    assert "has no user field 'emial'" in problem["message"]
    assert ", em, " in problem["message"]  # the fields it does take are listed
