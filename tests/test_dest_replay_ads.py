"""End to end: `streamctl replay` and `streamctl preview` into the fake ad-platform APIs.

Each test writes a project (credentials from `${ENV}`), replays recent events with the
real CLI, and checks what the fake vendor received (hashed identifiers, the documented
body), the CLI's JSON summary and the per-event outcomes in the SQLite store: only the
event the vendor refused is archived, even where the vendor refuses whole batches.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from streamctl.cli.main import app
from tests.fakes.ad_platforms import (
    FakeMeta,
    FakePinterest,
    FakeReddit,
    FakeSnapchat,
    FakeTikTok,
    tiktok_reply,
)
from tests.fakes.http import Reply
from tests.fakes.vendors_a import serve
from tests.test_dest_replay_a import FAST_RETRIES, outcomes, replay, write_project

NOW = datetime.now(UTC)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def order(n: int, email: str | None = None, **extra) -> dict:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"msg-{n}",
        "userId": f"user-{n:04d}",
        "anonymousId": f"anon-{n:04d}",
        "timestamp": (NOW - timedelta(minutes=10 - n)).isoformat(),
        "context": {
            "ip": f"203.0.113.{n}",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            "page": {"url": "https://shop.example.com/checkout"},
            "traits": {
                "email": email or f"Buyer{n}@Example.com",
                "phone": f"+1 (650) 555-12{n:02d}",
            },
        },
        "properties": {"order_id": f"o-{n}", "total": 10.5 + n, "currency": "USD"},
        **extra,
    }


def preview(root, event: dict, sync: str = "sync") -> dict:
    event_file = root / "event.json"
    event_file.write_text(json.dumps(event))
    result = CliRunner().invoke(
        app, ["preview", "--project", str(root), "--sync", sync, str(event_file), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# -- Meta -------------------------------------------------------------------------------

META_DESTINATION = """\
meta:
  type: meta
  config:
    pixel_id: "1234567890"
    access_token: "${META_ACCESS_TOKEN}"
    test_event_code: TEST4242
    base_url: "%s"
"""
META_SYNC = f"""\
source: web
destination: meta
event_types:
  - type: purchase
    mappings:
      required:
        value: {{ field: properties.total }}
        currency: {{ field: properties.currency }}
        order_id: {{ field: properties.order_id }}
      user:
        em: {{ field: context.traits.email }}
        ph: {{ field: context.traits.phone }}
{FAST_RETRIES}
"""


def test_replay_into_meta_hashes_user_data_and_archives_only_the_refused_event(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeMeta(
        "1234567890", "meta-token-abc", refuse_emails=frozenset({sha("refused@example.com")})
    )
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("META_ACCESS_TOKEN", "meta-token-abc")
    fake.outages.append(
        Reply(429, {"error": {"message": "slow down", "code": 4}}, {"Retry-After": "0"})
    )
    events = [order(1), order(2), order(3, email="Refused@Example.com"), order(4)]
    events_file = write_project(tmp_path, META_DESTINATION % server.url, META_SYNC, events)

    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr  # one event archived
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3, "archived": 1}]
    by_id = {event["event_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-2", "msg-4"}  # event_id: the messageId (pixel dedupe)
    assert by_id["msg-1"]["user_data"]["em"] == [sha("buyer1@example.com")]
    assert by_id["msg-1"]["user_data"]["ph"] == [sha("16505551201")]
    assert by_id["msg-1"]["user_data"]["client_ip_address"] == "203.0.113.1"  # never hashed
    assert by_id["msg-1"]["custom_data"] == {"value": 11.5, "currency": "USD", "order_id": "o-1"}
    assert set(fake.test_event_codes) == {"TEST4242"}
    recorded = outcomes(tmp_path)
    assert recorded["msg-3"][0] == "archived" and "(#100/2804008)" in (recorded["msg-3"][1] or "")
    assert "meta-token-abc" not in stderr + json.dumps(summary) + str(recorded)


def test_preview_shows_meta_user_data_hashed(tmp_path, module_fake_server, monkeypatch):
    server = serve(module_fake_server, FakeMeta("1234567890", "meta-token-abc"))
    monkeypatch.setenv("META_ACCESS_TOKEN", "meta-token-abc")
    write_project(tmp_path, META_DESTINATION % server.url, META_SYNC, [])
    data = preview(tmp_path, order(5))
    [delivery] = data["syncs"][0]["deliveries"]
    user_data = delivery["request"]["body"]["data"][0]["user_data"]
    assert user_data["em"] == [sha("buyer5@example.com")]
    assert user_data["ph"] == [sha("16505551205")]
    assert "Buyer5@Example.com" not in json.dumps(delivery)
    assert delivery["request"]["body"]["access_token"] == "***"


# -- TikTok -----------------------------------------------------------------------------

TIKTOK_DESTINATION = """\
tiktok:
  type: tiktok
  config:
    event_source_id: C0PIXEL42
    access_token: "${TIKTOK_ACCESS_TOKEN}"
    base_url: "%s"
"""
TIKTOK_SYNC = f"""\
source: web
destination: tiktok
event_types:
  - type: purchase
    filter: {{ field: event, op: eq, value: Order Completed }}
    mappings:
      required:
        value: {{ field: properties.total }}
        currency: {{ field: properties.currency }}
        order_id: {{ field: properties.order_id }}
  - type: complete_registration
    filter: {{ field: event, op: eq, value: Signed Up }}
    mappings: {{}}
{FAST_RETRIES}
"""


def test_replay_into_tiktok_hashes_the_user_and_archives_only_the_refused_event(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeTikTok("C0PIXEL42", "tiktok-token-abc", refuse_events=frozenset({"msg-3"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", "tiktok-token-abc")
    fake.outages.append(tiktok_reply(40100, "Too many requests"))
    events = [order(1), order(2), order(3), order(4, event="Signed Up")]
    events_file = write_project(tmp_path, TIKTOK_DESTINATION % server.url, TIKTOK_SYNC, events)

    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3, "archived": 1}]
    by_id = {event["event_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-2", "msg-4"}
    assert by_id["msg-4"]["event"] == "CompleteRegistration"
    assert by_id["msg-1"]["user"]["email"] == [sha("buyer1@example.com")]
    assert by_id["msg-1"]["user"]["phone"] == [sha("+16505551201")]
    assert by_id["msg-1"]["properties"] == {"value": 11.5, "currency": "USD", "order_id": "o-1"}
    recorded = outcomes(tmp_path)
    assert recorded["msg-3"][0] == "archived" and "code 40002" in (recorded["msg-3"][1] or "")
    assert "tiktok-token-abc" not in stderr + json.dumps(summary) + str(recorded)


# -- Snapchat ---------------------------------------------------------------------------

SNAP_DESTINATION = """\
snap:
  type: snapchat
  config:
    pixel_id: snap-pixel-1
    access_token: "${SNAP_ACCESS_TOKEN}"
    base_url: "%s"
"""
SNAP_SYNC = f"""\
source: web
destination: snap
event_types:
  - type: purchase
    filter: {{ field: event, op: eq, value: Order Completed }}
    mappings:
      required:
        value: {{ field: properties.total }}
        currency: {{ field: properties.currency }}
        order_id: {{ field: properties.order_id }}
  - type: sign_up
    filter: {{ field: event, op: eq, value: Signed Up }}
    mappings: {{}}
{FAST_RETRIES}
"""


def test_replay_into_snapchat_archives_only_the_refused_event_and_never_shows_the_token(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeSnapchat("snap-pixel-1", "snap-token-abc", refuse_events=frozenset({"msg-2"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("SNAP_ACCESS_TOKEN", "snap-token-abc")
    fake.outages.append(
        Reply(429, {"status": "ERROR", "reason": "slow down"}, {"Retry-After": "0"})
    )
    events = [order(1), order(2), order(3), order(4, event="Signed Up")]
    events_file = write_project(tmp_path, SNAP_DESTINATION % server.url, SNAP_SYNC, events)

    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3, "archived": 1}]
    by_id = {event["event_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-3", "msg-4"}
    assert by_id["msg-4"]["event_name"] == "SIGN_UP"
    assert by_id["msg-1"]["user_data"]["ph"] == [sha("16505551201")]
    recorded = outcomes(tmp_path)
    assert recorded["msg-2"][0] == "archived" and "INVALID" in (recorded["msg-2"][1] or "")
    assert "snap-token-abc" not in stderr + json.dumps(summary) + str(recorded)

    data = preview(tmp_path, order(5))
    [delivery] = data["syncs"][0]["deliveries"]
    assert "snap-token-abc" not in json.dumps(data)  # the token sits in the URL's query
    assert delivery["request"]["url"].endswith("access_token=***")
    assert delivery["request"]["body"]["data"][0]["user_data"]["em"] == [sha("buyer5@example.com")]


# -- Pinterest --------------------------------------------------------------------------

PINTEREST_DESTINATION = """\
pinterest:
  type: pinterest
  config:
    ad_account_id: "549755885175"
    access_token: "${PINTEREST_TOKEN}"
    base_url: "%s"
"""
PINTEREST_SYNC = f"""\
source: web
destination: pinterest
event_types:
  - type: purchase
    filter: {{ field: event, op: eq, value: Order Completed }}
    mappings:
      required:
        value: {{ field: properties.total }}
        currency: {{ field: properties.currency }}
        order_id: {{ field: properties.order_id }}
  - type: sign_up
    filter: {{ field: event, op: eq, value: Signed Up }}
    mappings: {{}}
{FAST_RETRIES}
"""


def test_replay_into_pinterest_archives_the_event_pinterest_did_not_process(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakePinterest("549755885175", "pina-token-abc", refuse_events=frozenset({"msg-2"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("PINTEREST_TOKEN", "pina-token-abc")
    fake.outages.append(
        Reply(429, {"code": 8, "message": "Rate limit exceeded"}, {"Retry-After": "0"})
    )
    events = [order(1), order(2), order(3), order(4, event="Signed Up")]
    events_file = write_project(
        tmp_path, PINTEREST_DESTINATION % server.url, PINTEREST_SYNC, events
    )

    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3, "archived": 1}]
    by_id = {event["event_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-3", "msg-4"}
    assert by_id["msg-4"]["event_name"] == "signup"
    assert by_id["msg-1"]["custom_data"] == {"value": "11.5", "currency": "USD", "order_id": "o-1"}
    assert by_id["msg-1"]["user_data"]["em"] == [sha("buyer1@example.com")]
    recorded = outcomes(tmp_path)
    assert recorded["msg-2"] == (
        "archived",
        "pinterest: Event is older than the maximum allowed age.",
    )
    assert "pina-token-abc" not in stderr + json.dumps(summary) + str(recorded)


# -- Reddit -----------------------------------------------------------------------------

REDDIT_DESTINATION = """\
reddit:
  type: reddit
  config:
    account_id: t2_abc123
    access_token: "${REDDIT_TOKEN}"
    base_url: "%s"
"""
REDDIT_SYNC = """\
source: web
destination: reddit
event_types:
  - type: purchase
    filter: { field: event, op: eq, value: Order Completed }
    mappings:
      required:
        value_decimal: { field: properties.total }
        currency: { field: properties.currency }
  - type: sign_up
    filter: { field: event, op: eq, value: Signed Up }
    mappings: {}
delivery: { batch_size: 10, max_attempts: 4, backoff: { initial: 10ms, max: 20ms } }
"""


def test_replay_into_reddit_archives_the_invalid_event_and_resends_the_others(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeReddit("t2_abc123", "reddit-token-abc", refuse_events=frozenset({"msg-2"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("REDDIT_TOKEN", "reddit-token-abc")
    fake.outages.append(Reply(429, {"message": "Too Many Requests"}, {"Retry-After": "0"}))
    events = [order(1), order(2), order(3), order(4, event="Signed Up")]
    events_file = write_project(tmp_path, REDDIT_DESTINATION % server.url, REDDIT_SYNC, events)

    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3, "archived": 1}]
    by_id = {event["event_metadata"]["conversion_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-3", "msg-4"}
    assert by_id["msg-4"]["event_type"] == {"tracking_type": "SignUp"}
    assert by_id["msg-1"]["user"]["email"] == sha("buyer1@example.com")
    assert by_id["msg-1"]["user"]["ip_address"] == sha("203.0.113.1")
    recorded = outcomes(tmp_path)
    assert recorded["msg-2"] == (
        "archived",
        "reddit: event_metadata.currency: invalid currency code",
    )
    assert "reddit-token-abc" not in stderr + json.dumps(summary) + str(recorded)
