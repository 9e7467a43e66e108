"""Intercom data events and contacts against a fake Intercom on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.intercom import IntercomDestination
from tests.fakes.vendors_a import send_batch, serve
from tests.fakes.vendors_c import FakeIntercom
from tests.replay_helpers import outcomes, replay, track, write_project

TOKEN = "intercom-test-token"
EVENT = {"messageId": "m-1", "userId": "u1", "timestamp": "2026-11-26T12:00:00Z"}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def intercom(module_fake_server):
    fake = FakeIntercom(TOKEN)
    server = serve(module_fake_server, fake)
    return fake, IntercomDestination("ic", {"access_token": TOKEN, "base_url": server.url})


def data_event(dest, user_id="u1", event_type="custom", **required):
    fields = {"event_name": "placed-order", "created_at": "2026-11-26T12:00:00Z",
              "user_id": user_id, **required}  # fmt: skip
    return dest.build_payload(
        event_type, MappedEvent(fields, properties={"order_id": "o-1"}), EVENT
    )


def contact(dest, **required):
    return dest.build_payload("identify", MappedEvent(required, user={"plan": "pro"}), EVENT)


def test_catalog():
    entry = IntercomDestination.catalog
    assert entry.secret_fields == frozenset({"access_token"})
    assert [t.name for t in entry.event_types] == ["custom", "purchase", "identify"]
    assert entry.max_batch_size == 1


def test_payloads():
    dest = IntercomDestination("ic", {"access_token": TOKEN})
    assert data_event(dest) == {
        "event_name": "placed-order", "created_at": 1795694400, "user_id": "u1",
        "metadata": {"order_id": "o-1"},
    }  # fmt: skip
    purchase = data_event(dest, event_type="purchase", revenue=29.99, currency="EUR")
    assert purchase["metadata"]["price"] == {"amount": 2999, "currency": "EUR"}
    assert dest.check_payload("purchase", purchase) is None
    created = contact(dest, external_id="u1", signed_up_at="2026-11-26T12:00:00Z")
    assert created == {"external_id": "u1", "signed_up_at": 1795694400, "role": "user",
                       "custom_attributes": {"plan": "pro"}}  # fmt: skip


@pytest.mark.parametrize(
    ("event_type", "payload", "message"),
    [
        ("custom", {"event_name": "x", "created_at": 1}, "user_id, email or id"),
        ("custom", {"event_name": "x", "user_id": "u", "metadata": {f"k{i}": i for i in range(11)}},
         "11 metadata keys"),
        ("custom", {"event_name": "x", "user_id": "u", "metadata": {"items": [1]}}, "nested"),
        ("purchase", {"event_name": "x", "user_id": "u",
                      "metadata": {"price": {"amount": "a lot", "currency": "USD"}}}, "revenue"),
        ("identify", {"role": "user"}, "external_id or an email"),
        ("identify", {"role": "lead", "external_id": "u"}, "lead cannot"),
        ("identify", {"role": "admin", "email": "a@b.c"}, "role must be"),
    ],
)  # fmt: skip
def test_check_payload_refuses_what_intercom_would(event_type, payload, message):
    dest = IntercomDestination("ic", {"access_token": TOKEN})
    assert message in (dest.check_payload(event_type, payload) or "")


def test_an_event_is_accepted_and_an_unknown_user_is_archived(intercom):
    fake, dest = intercom
    assert send_batch(dest, "custom", [data_event(dest)]).items[0].status is ItemStatus.DELIVERED
    fake.unknown_users = {"ghost"}
    (item,) = send_batch(dest, "custom", [data_event(dest, "ghost")]).items
    assert (item.status, item.status_code) == (ItemStatus.FAILED, 404)
    assert "not_found: User Not Found" in (item.error or "")
    assert fake.problems == []
    assert [e["user_id"] for e in fake.events] == ["u1"]


def test_identify_creates_then_updates_the_same_contact(intercom):
    fake, dest = intercom
    first = send_batch(dest, "identify", [contact(dest, external_id="u1", name="Ada")])
    second = send_batch(
        dest, "identify", [contact(dest, external_id="u1", email="ada@example.com")]
    )
    assert [first.items[0].status, second.items[0].status] == [ItemStatus.DELIVERED] * 2
    assert fake.problems == []
    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", "/contacts/search"), ("POST", "/contacts"),
        ("POST", "/contacts/search"), ("PUT", "/contacts/c1"),
    ]  # fmt: skip
    assert list(fake.contacts.values()) == [
        {"external_id": "u1", "name": "Ada", "email": "ada@example.com", "role": "user",
         "custom_attributes": {"plan": "pro"}},
    ]  # fmt: skip


def test_a_conflict_on_create_is_retried(intercom):
    fake, dest = intercom
    fake.contacts["c9"] = {"external_id": "u1", "role": "user"}
    fake.fail_next(200, {"type": "list", "data": [], "total_count": 0})  # the lagging search
    (item,) = send_batch(dest, "identify", [contact(dest, external_id="u1")]).items
    assert (item.status, item.status_code) == (ItemStatus.RETRY, 409)


def test_a_rate_limited_request_waits_until_the_reset(intercom):
    fake, dest = intercom
    fake.fail_next(429, {"type": "error.list", "errors": [{"code": "rate_limit_exceeded",
                   "message": "Exceeded rate limit"}]},
                   {"X-RateLimit-Limit": "166", "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(time.time()) + 8)})  # fmt: skip
    (item,) = send_batch(dest, "custom", [data_event(dest)]).items
    assert item.status is ItemStatus.RETRY
    assert 5 < (item.retry_after or 0) <= 8
    fake.fail_next(503, "Service Unavailable")
    (item,) = send_batch(dest, "identify", [contact(dest, email="a@example.com")]).items
    assert (item.status, item.status_code) == (ItemStatus.RETRY, 503)


def test_replay_into_intercom(tmp_path, module_fake_server, monkeypatch):
    fake = FakeIntercom(TOKEN)
    server = serve(module_fake_server, fake)
    fake.unknown_users = {"user-0003"}
    fake.invalid_emails = {"broken@example"}
    monkeypatch.setenv("INTERCOM_ACCESS_TOKEN", TOKEN)
    identify = [
        {"type": "identify", "messageId": f"id-{n}", "userId": f"user-{n}",
         "timestamp": "2026-11-26T09:00:00.000Z", "traits": {"email": email, "plan": "pro"}}
        for n, email in ((6, "six@example.com"), (7, "broken@example"))
    ]  # fmt: skip
    events_file = write_project(
        tmp_path,
        f"""\
        intercom:
          type: intercom
          config: {{ access_token: "${{INTERCOM_ACCESS_TOKEN}}", region: eu, base_url: "{server.url}" }}
        """,
        """\
        source: web
        destination: intercom
        match: first
        event_types:
          - type: identify
            filter: { field: type, op: eq, value: identify }
            mappings:
              required:
                external_id: { field: userId }
                email: { field: traits.email }
              user:
                plan: { field: traits.plan }
          - type: purchase
            filter: { field: event, op: eq, value: Order Completed }
            mappings:
              required:
                event_name: { static: placed-order }
                created_at: { field: timestamp }
                user_id: { field: userId }
                revenue: { field: properties.total }
                currency: { field: properties.currency }
              properties:
                order_id: { field: properties.order_id }
        delivery: { max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
        """,
        [*(track(n) for n in range(1, 5)), *identify],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 4, "archived": 2}]
    assert TOKEN not in stderr + json.dumps(summary)
    prices = sorted((e["user_id"], e["metadata"]["price"]["amount"]) for e in fake.events)
    assert prices == [("user-0001", 1150), ("user-0002", 1250), ("user-0004", 1450)]
    assert [c["email"] for c in fake.contacts.values()] == ["six@example.com"]
    recorded = outcomes(tmp_path)
    assert recorded["msg-3"][0] == "archived" and "User Not Found" in recorded["msg-3"][1]
    assert recorded["id-7"][0] == "archived" and "is invalid" in recorded["id-7"][1]
