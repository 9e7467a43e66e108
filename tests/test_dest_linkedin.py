"""LinkedIn Conversions API against a fake LinkedIn on 127.0.0.1: hashed email, per-element outcomes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.core.errors import MappingError
from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.linkedin import LinkedInDestination
from tests.fakes.vendors_a import send_batch, serve
from tests.fakes.vendors_c import FakeLinkedIn
from tests.replay_helpers import outcomes, replay, track, write_project
from tests.test_dest_examples_a import copy_example

TOKEN = "AQV-linkedin-oauth-token"
EVENT = {"messageId": "m-1", "userId": "u1"}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EMAIL_SHA = hashlib.sha256(b"ada@example.com").hexdigest()


def recent(minutes: int = 5) -> str:
    when = datetime.now(UTC) - timedelta(minutes=minutes)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def linkedin(module_fake_server):
    fake = FakeLinkedIn(TOKEN)
    server = serve(module_fake_server, fake)
    return fake, LinkedInDestination("li", {"access_token": TOKEN, "base_url": server.url})


def conversion(dest, rule="123", event=EVENT, **fields):
    required = {"conversion": rule, "conversionHappenedAt": recent(), "email": " Ada@Example.com ",
                **fields}  # fmt: skip
    return dest.build_payload("purchase", MappedEvent(required), event)


def test_catalog():
    entry = LinkedInDestination.catalog
    assert entry.secret_fields == frozenset({"access_token"})
    assert {"purchase", "lead", "sign_up", "add_to_cart", "custom"} <= {
        t.name for t in entry.event_types
    }
    assert entry.max_batch_size == 5000


def test_the_email_is_normalised_and_hashed_and_a_hash_passes_through():
    dest = LinkedInDestination("li", {"access_token": TOKEN})
    element = conversion(dest, value=49.5, currency="EUR", li_fat_id="df5gf5-gh6t7",
                         first_name="Ada", last_name="Lovelace")  # fmt: skip
    assert element["conversion"] == "urn:lla:llaPartnerConversion:123"
    assert isinstance(element["conversionHappenedAt"], int)
    assert element["conversionValue"] == {"currencyCode": "EUR", "amount": "49.5"}
    assert element["eventId"] == "m-1"
    assert element["user"] == {
        "userIds": [
            {"idType": "SHA256_EMAIL", "idValue": EMAIL_SHA},
            {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "df5gf5-gh6t7"},
        ],
        "userInfo": {"firstName": "Ada", "lastName": "Lovelace"},
    }
    hashed = conversion(dest, "urn:lla:llaPartnerConversion:7", email=EMAIL_SHA.upper())
    assert hashed["user"]["userIds"] == [{"idType": "SHA256_EMAIL", "idValue": EMAIL_SHA}]
    assert hashed["conversion"] == "urn:lla:llaPartnerConversion:7"
    assert dest.check_payload("purchase", element) is None


def test_an_email_without_at_sign_is_a_mapping_error_that_does_not_echo_it():
    dest = LinkedInDestination("li", {"access_token": TOKEN})
    with pytest.raises(MappingError) as caught:
        conversion(dest, email="ada.example.com")
    assert "ada.example.com" not in str(caught.value)
    assert "`email`" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": None}, "needs a user id"),
        ({"conversionHappenedAt": "2020-01-01T00:00:00Z"}, "older than 90 days"),
        ({"first_name": "Ada"}, "both first_name and last_name"),
        ({"value": "lots"}, "numeric `value`"),
    ],
)
def test_check_payload_refuses_what_linkedin_would(fields, message):
    dest = LinkedInDestination("li", {"access_token": TOKEN})
    assert message in (dest.check_payload("purchase", conversion(dest, **fields)) or "")


def test_a_batch_gets_each_element_s_outcome(linkedin):
    fake, dest = linkedin
    fake.unknown_rules = {"999"}
    result = send_batch(
        dest, "purchase", [conversion(dest), conversion(dest, "999"), conversion(dest)]
    )
    assert fake.problems == []
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED, ItemStatus.FAILED, ItemStatus.DELIVERED,
    ]  # fmt: skip
    assert "Conversion rule 999 does not exist" in (result.items[1].error or "")
    (request,) = fake.requests
    assert request.headers["x-restli-method"] == "BATCH_CREATE"
    assert request.headers["linkedin-version"] == "202505"
    assert len(fake.accepted) == 2


def test_a_throttled_element_is_retried_alone(linkedin):
    fake, dest = linkedin
    fake.throttled_rules = {"555"}
    result = send_batch(dest, "purchase", [conversion(dest, "555"), conversion(dest)])
    assert [(i.status, i.status_code) for i in result.items] == [
        (ItemStatus.RETRY, 429), (ItemStatus.DELIVERED, 201),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "headers", "expected", "wait", "split"),
    [
        (429, {"Retry-After": "4"}, ItemStatus.RETRY, 4.0, False),
        (500, {}, ItemStatus.RETRY, None, False),
        (400, {}, ItemStatus.FAILED, None, True),
        (403, {}, ItemStatus.FAILED, None, False),
    ],
)
def test_whole_request_answers(linkedin, status, headers, expected, wait, split):
    fake, dest = linkedin
    fake.fail_next(status, {"status": status, "code": "TOO_MANY_REQUESTS",
                            "message": "Resource level throttle limit reached"}, headers)  # fmt: skip
    result = send_batch(dest, "lead", [conversion(dest), conversion(dest)])
    assert {i.status for i in result.items} == {expected}
    assert result.items[0].retry_after == wait
    assert result.split is split


def test_an_expired_token_is_archived(module_fake_server):
    serve(module_fake_server, FakeLinkedIn(TOKEN))
    dest = LinkedInDestination(
        "li", {"access_token": "expired", "base_url": module_fake_server.url}
    )
    (item,) = send_batch(dest, "purchase", [conversion(dest)]).items
    assert (item.status, item.status_code) == (ItemStatus.FAILED, 401)
    assert "INVALID_ACCESS_TOKEN" in (item.error or "")


LINKEDIN_DESTINATION = """\
linkedin:
  type: linkedin
  config: {{ access_token: "${{LINKEDIN_ACCESS_TOKEN}}", base_url: "{url}" }}
"""
LINKEDIN_SYNC = """\
source: web
destination: linkedin
event_types:
  - type: purchase
    filter: { field: event, op: eq, value: Order Completed }
    mappings:
      required:
        conversion: { field: properties.rule }
        conversionHappenedAt: { field: timestamp }
        email: { field: context.traits.email }
        value: { field: properties.total }
        currency: { field: properties.currency }
delivery: { batch_size: 10, max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
"""


def order(n: int, rule: str = "123", email: str | None = None) -> dict:
    event = track(
        n, timestamp=recent(n), context={"traits": {"email": email or f"U{n}@Example.com"}}
    )
    event["properties"]["rule"] = rule
    return event


def test_replay_into_linkedin_archives_the_refused_element(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeLinkedIn(TOKEN)
    serve(module_fake_server, fake)
    fake.unknown_rules = {"999"}
    monkeypatch.setenv("LINKEDIN_ACCESS_TOKEN", TOKEN)
    events_file = write_project(
        tmp_path,
        LINKEDIN_DESTINATION.format(url=module_fake_server.url),
        LINKEDIN_SYNC,
        [order(1), order(2, "999"), order(3), order(4, email="not-an-email")],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 2, "archived": 1, "mapping_error": 1}]
    assert TOKEN not in stderr + json.dumps(summary)
    hashes = sorted(e["user"]["userIds"][0]["idValue"] for e in fake.accepted)
    assert hashes == sorted(
        hashlib.sha256(f"u{n}@example.com".encode()).hexdigest() for n in (1, 3)
    )
    recorded = outcomes(tmp_path)
    assert recorded["msg-2"][0] == "archived" and "999 does not exist" in recorded["msg-2"][1]
    assert recorded["msg-4"][0] == "mapping_error"
    assert "not-an-email" not in (recorded["msg-4"][1] or "")


def test_preview_shows_the_hashed_email(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKEDIN_ACCESS_TOKEN", TOKEN)
    write_project(
        tmp_path, LINKEDIN_DESTINATION.format(url="http://127.0.0.1:9"), LINKEDIN_SYNC, []
    )
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(order(1, email=" Ada@Example.com")))
    result = CliRunner().invoke(
        app, ["preview", "--project", str(tmp_path), "--sync", "sync", "--json", str(event_file)]
    )
    assert result.exit_code == 0, result.stderr
    (delivery,) = json.loads(result.stdout)["syncs"][0]["deliveries"]
    user_ids = delivery["request"]["body"]["elements"][0]["user"]["userIds"]
    assert user_ids == [{"idType": "SHA256_EMAIL", "idValue": EMAIL_SHA}]
    assert "Ada@Example.com" not in json.dumps(delivery)  # the event itself is shown above
    assert TOKEN not in result.stdout


def test_example_project_replays_cleanly(tmp_path, module_fake_server, monkeypatch):
    fake = FakeLinkedIn("li-example-token")
    serve(module_fake_server, fake)
    monkeypatch.setenv("LINKEDIN_ACCESS_TOKEN", "li-example-token")
    monkeypatch.setenv("LINKEDIN_BASE_URL", module_fake_server.url)
    project = copy_example("linkedin", tmp_path)
    # The example events are dated; LinkedIn takes conversions of the last 90 days only.
    lines = (EXAMPLES / "events.ndjson").read_text().splitlines()[:80]
    events = [{**json.loads(line), "timestamp": recent(n)} for n, line in enumerate(lines)]
    events_file = tmp_path / "events.ndjson"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    code, summary, stderr = replay(project, events_file)
    assert code == 0, stderr
    assert fake.problems == []
    (counts,) = summary["syncs"]
    assert set(counts) <= {"sync", "delivered", "filtered"}
    assert counts["delivered"] == len(fake.accepted) > 0
