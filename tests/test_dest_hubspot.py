"""HubSpot custom behavioral events and contact upserts against a fake HubSpot on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamctl.core.errors import MappingError
from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.hubspot import HubSpotDestination
from tests.fakes.vendors_a import send_batch, serve
from tests.fakes.vendors_c import FakeHubSpot
from tests.replay_helpers import outcomes, replay, track, write_project

TOKEN = "pat-na1-test-token"
EVENT = {"messageId": "m-1", "userId": "u1", "timestamp": "2026-11-26T12:00:00Z"}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def hubspot(module_fake_server):
    fake = FakeHubSpot(TOKEN)
    server = serve(module_fake_server, fake)
    return fake, HubSpotDestination("hs", {"access_token": TOKEN, "base_url": server.url})


def occurrence(dest, email="a@example.com", name="pe123_order_placed", event=EVENT, **properties):
    required = {"eventName": name, "email": email, "occurredAt": "2026-11-26T13:00:00+01:00"}
    return dest.build_payload("custom", MappedEvent(required, properties=properties), event)


def contact(dest, email, **user):
    return dest.build_payload("identify", MappedEvent({"email": email}, user=user), EVENT)


def test_catalog():
    entry = HubSpotDestination.catalog
    assert entry.secret_fields == frozenset({"access_token"})
    assert [t.name for t in entry.event_types] == ["custom", "identify"]
    assert entry.max_batch_size == 500


def test_an_occurrence_is_sent_in_utc_with_a_uuid_stable_per_message():
    dest = HubSpotDestination("hs", {"access_token": TOKEN})
    first = occurrence(dest, total=12.5)
    assert first["occurredAt"] == "2026-11-26T12:00:00.000Z"
    assert first["properties"] == {"total": 12.5}
    assert occurrence(dest)["uuid"] == first["uuid"]
    assert occurrence(dest, event={**EVENT, "messageId": "m-2"})["uuid"] != first["uuid"]
    assert dest.check_payload("custom", first) is None


def test_an_unreadable_time_is_a_mapping_error():
    dest = HubSpotDestination("hs", {"access_token": TOKEN})
    required = {"eventName": "pe1_x", "email": "a@b.c", "occurredAt": "yesterday"}
    with pytest.raises(MappingError, match="occurredAt"):
        dest.build_payload("custom", MappedEvent(required), EVENT)


@pytest.mark.parametrize(
    ("config", "payload", "message"),
    [
        ({}, {"eventName": "order_placed", "email": "a@b.c"}, "pe<HubID>_<name>"),
        ({"portal_id": "999"}, {"eventName": "pe123_x", "email": "a@b.c"}, "pe999_"),
        ({}, {"eventName": "pe123_x"}, "one of email, utk, objectId"),
        ({}, {"eventName": "pe123_x", "utk": "t", "properties": {"Total": 1}}, "lowercase"),
        ({}, {"eventName": "pe123_x", "utk": "t", "properties": {"items": [1]}}, "non"),
        ({}, {"eventName": "pe1_x", "utk": "t", "properties": {f"p{i}": i for i in range(51)}},
         "at most 50"),
    ],
)  # fmt: skip
def test_check_payload_refuses_what_hubspot_would(config, payload, message):
    dest = HubSpotDestination("hs", {"access_token": TOKEN, **config})
    problem = dest.check_payload("custom", payload) or ""
    assert message.replace("non", "must be strings") in problem


def test_a_contact_without_an_email_is_refused():
    dest = HubSpotDestination("hs", {"access_token": TOKEN})
    problem = dest.check_payload("identify", contact(dest, "not-an-email")) or ""
    assert "needs an email" in problem


def test_events_go_in_one_batch_request(hubspot):
    fake, dest = hubspot
    payloads = [occurrence(dest, f"user{n}@example.com", total=n) for n in range(3)]
    result = send_batch(dest, "custom", payloads)
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == []
    (request,) = fake.requests
    assert request.path == "/events/v3/send/batch"
    assert [e["email"] for e in fake.accepted] == [f"user{n}@example.com" for n in range(3)]


def test_an_unknown_event_refuses_the_request_and_asks_for_a_split(hubspot):
    fake, dest = hubspot
    fake.unknown_events = {"pe123_typo"}
    result = send_batch(dest, "custom", [occurrence(dest), occurrence(dest, name="pe123_typo")])
    assert result.split
    assert {i.status for i in result.items} == {ItemStatus.FAILED}
    assert "VALIDATION_ERROR: Event definition pe123_typo not found" in (
        result.items[0].error or ""
    )


def test_contacts_multi_status_fails_only_the_named_email(hubspot):
    fake, dest = hubspot
    fake.invalid_emails = {"bad@example"}
    payloads = [
        contact(dest, "one@example.com", firstname="One"),
        contact(dest, "bad@example", firstname="Bad"),
        contact(dest, "ONE@example.com", lastname="Uno"),  # same contact: merged
        contact(dest, "two@example.com", plan="pro"),
    ]
    result = send_batch(dest, "identify", payloads)
    assert fake.problems == []
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED, ItemStatus.FAILED, ItemStatus.DELIVERED, ItemStatus.DELIVERED,
    ]  # fmt: skip
    assert result.items[1].status_code == 207
    assert "not a valid email" in (result.items[1].error or "")
    assert fake.contacts["one@example.com"] == {"firstname": "One", "lastname": "Uno"}


def test_an_error_naming_no_contact_fails_those_missing_from_results(hubspot):
    fake, dest = hubspot
    fake.unnamed_failures = {"bad@example"}
    payloads = [contact(dest, "one@example.com"), contact(dest, "bad@example")]
    result = send_batch(dest, "identify", payloads)
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED, ItemStatus.FAILED]
    assert "not a valid email" in (result.items[1].error or "")


def test_more_than_100_contacts_go_in_requests_of_100(hubspot):
    fake, dest = hubspot
    payloads = [contact(dest, f"u{n}@example.com") for n in range(150)]
    result = send_batch(dest, "identify", payloads)
    assert fake.problems == []
    assert sorted(len(r.json()["inputs"]) for r in fake.requests) == [50, 100]
    assert {i.status for i in result.items} == {ItemStatus.DELIVERED}


@pytest.mark.parametrize(
    ("status", "headers", "expected", "wait", "split"),
    [
        (429, {}, ItemStatus.RETRY, 10.0, False),
        (429, {"Retry-After": "3"}, ItemStatus.RETRY, 3.0, False),
        (502, {}, ItemStatus.RETRY, None, False),
        (403, {}, ItemStatus.FAILED, None, False),
        (400, {}, ItemStatus.FAILED, None, True),
    ],
)
def test_whole_request_answers(hubspot, status, headers, expected, wait, split):
    fake, dest = hubspot
    fake.fail_next(status, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                            "errorType": "RATE_LIMIT"}, headers)  # fmt: skip
    result = send_batch(dest, "custom", [occurrence(dest), occurrence(dest, "b@example.com")])
    assert {i.status for i in result.items} == {expected}
    assert result.items[0].retry_after == wait
    assert result.split is split


def test_a_wrong_token_is_archived_without_bisecting(module_fake_server):
    fake = FakeHubSpot(TOKEN)
    server = serve(module_fake_server, fake)
    dest = HubSpotDestination("hs", {"access_token": "wrong", "base_url": server.url})
    result = send_batch(dest, "custom", [occurrence(dest), occurrence(dest)])
    assert {i.status for i in result.items} == {ItemStatus.FAILED}
    assert not result.split
    assert "INVALID_AUTHENTICATION" in (result.items[0].error or "")


HUBSPOT_SYNC = """\
source: web
destination: hubspot
match: first
event_types:
  - type: identify
    filter: { field: type, op: eq, value: identify }
    mappings:
      required:
        email: { field: traits.email }
      user:
        firstname: { field: traits.first_name }
        plan: { field: traits.plan }
  - type: custom
    mappings:
      required:
        eventName: { template: "pe123_{{ row.event | downcase | replace: ' ', '_' }}" }
        email: { field: context.traits.email }
        occurredAt: { field: timestamp }
      properties:
        total: { field: properties.total }
        order_id: { field: properties.order_id }
delivery: { batch_size: 10, max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
"""


def identify(n: int, email: str) -> dict:
    return {
        "type": "identify", "messageId": f"id-{n}", "userId": f"user-{n}",
        "timestamp": "2026-11-26T09:00:00.000Z",
        "traits": {"email": email, "first_name": f"User {n}", "plan": "pro"},
    }  # fmt: skip


def test_replay_into_hubspot_archives_only_what_hubspot_refuses(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeHubSpot(TOKEN)
    server = serve(module_fake_server, fake)
    fake.unknown_events = {"pe123_poison"}
    fake.invalid_emails = {"broken@example"}
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    with_email = {"context": {"traits": {"email": "buyer@example.com"}}}
    events_file = write_project(
        tmp_path,
        f"""\
        hubspot:
          type: hubspot
          config: {{ access_token: "${{HUBSPOT_ACCESS_TOKEN}}", portal_id: "123", base_url: "{server.url}" }}
        """,
        HUBSPOT_SYNC,
        [
            *(track(n, **with_email) for n in range(1, 5)),
            track(5, event="Poison", **with_email),
            identify(6, "six@example.com"),
            identify(7, "broken@example"),
        ],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 5, "archived": 2}]
    assert TOKEN not in stderr + json.dumps(summary)
    events = sorted(fake.accepted[i]["properties"]["order_id"] for i in range(len(fake.accepted))
                    if "eventName" in fake.accepted[i])  # fmt: skip
    assert events == ["o-1", "o-2", "o-3", "o-4"]
    assert fake.contacts == {"six@example.com": {"firstname": "User 6", "plan": "pro"}}
    recorded = outcomes(tmp_path)
    assert recorded["msg-5"][0] == "archived" and "pe123_poison not found" in recorded["msg-5"][1]
    assert recorded["id-7"][0] == "archived" and "not a valid email" in recorded["id-7"][1]
