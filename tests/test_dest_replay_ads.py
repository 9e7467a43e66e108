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
from tests.replay_helpers import FAST_RETRIES, outcomes, replay, write_project

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


def destination(name: str, type_name: str, token_variable: str, url: str, **config: str) -> str:
    """A `destinations:` entry whose token comes from the environment, pointed at `url`."""
    lines = "".join(f"    {key}: {value}\n" for key, value in config.items())
    return (
        f"{name}:\n  type: {type_name}\n  config:\n{lines}"
        f'    access_token: "${{{token_variable}}}"\n    base_url: "{url}"\n'
    )


def orders_and_signups(
    name: str, signup_type: str, value: str = "value", delivery: str = FAST_RETRIES
) -> str:
    """A sync sending Order Completed as `purchase` and Signed Up as `signup_type`."""
    return f"""\
source: web
destination: {name}
event_types:
  - type: purchase
    filter: {{ field: event, op: eq, value: Order Completed }}
    mappings:
      required:
        {value}: {{ field: properties.total }}
        currency: {{ field: properties.currency }}
  - type: {signup_type}
    filter: {{ field: event, op: eq, value: Signed Up }}
    mappings: {{}}
{delivery}
"""


def replay_orders(
    root, destination_yaml: str, sync: str, fake, outage: Reply, token: str, events=None
):
    """Replays orders msg-1..3 and a sign-up msg-4 (or `events`), the first request
    answered `outage`. Checks what every vendor test expects: three delivered, one
    archived, nothing off the vendor's contract, the token never shown. Returns the
    recorded outcomes."""
    fake.outages.append(outage)
    events = events or [order(1), order(2), order(3), order(4, event="Signed Up")]
    code, summary, stderr = replay(root, write_project(root, destination_yaml, sync, events))
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3, "archived": 1}]
    recorded = outcomes(root)
    assert token not in stderr + json.dumps(summary) + str(recorded)
    return recorded


# -- Meta -------------------------------------------------------------------------------

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


def meta_destination(url: str) -> str:
    return destination(
        "meta",
        "meta",
        "META_ACCESS_TOKEN",
        url,
        pixel_id='"1234567890"',
        test_event_code="TEST4242",
    )


def test_replay_into_meta_hashes_user_data_and_archives_only_the_refused_event(
    tmp_path, module_fake_server, monkeypatch
):
    refused = frozenset({sha("refused@example.com")})
    fake = FakeMeta("1234567890", "meta-token-abc", refuse_emails=refused)
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("META_ACCESS_TOKEN", "meta-token-abc")
    throttled = Reply(429, {"error": {"message": "slow down", "code": 4}}, {"Retry-After": "0"})
    events = [order(1), order(2), order(3, email="Refused@Example.com"), order(4)]
    recorded = replay_orders(
        tmp_path, meta_destination(server.url), META_SYNC, fake, throttled, "meta-token-abc", events
    )
    by_id = {event["event_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-2", "msg-4"}  # event_id: the messageId (pixel dedupe)
    assert by_id["msg-1"]["user_data"]["em"] == [sha("buyer1@example.com")]
    assert by_id["msg-1"]["user_data"]["ph"] == [sha("16505551201")]
    assert by_id["msg-1"]["user_data"]["client_ip_address"] == "203.0.113.1"  # never hashed
    assert by_id["msg-1"]["custom_data"] == {"value": 11.5, "currency": "USD", "order_id": "o-1"}
    assert set(fake.test_event_codes) == {"TEST4242"}
    assert recorded["msg-3"][0] == "archived" and "(#100/2804008)" in (recorded["msg-3"][1] or "")


def test_preview_shows_meta_user_data_hashed(tmp_path, module_fake_server, monkeypatch):
    server = serve(module_fake_server, FakeMeta("1234567890", "meta-token-abc"))
    monkeypatch.setenv("META_ACCESS_TOKEN", "meta-token-abc")
    write_project(tmp_path, meta_destination(server.url), META_SYNC, [])
    data = preview(tmp_path, order(5))
    [delivery] = data["syncs"][0]["deliveries"]
    user_data = delivery["request"]["body"]["data"][0]["user_data"]
    assert user_data["em"] == [sha("buyer5@example.com")]
    assert user_data["ph"] == [sha("16505551205")]
    assert "Buyer5@Example.com" not in json.dumps(delivery)
    assert delivery["request"]["body"]["access_token"] == "***"


# -- TikTok -----------------------------------------------------------------------------


def test_replay_into_tiktok_hashes_the_user_and_archives_only_the_refused_event(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeTikTok("C0PIXEL42", "tiktok-token-abc", refuse_events=frozenset({"msg-3"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", "tiktok-token-abc")
    recorded = replay_orders(
        tmp_path,
        destination(
            "tiktok", "tiktok", "TIKTOK_ACCESS_TOKEN", server.url, event_source_id="C0PIXEL42"
        ),
        orders_and_signups("tiktok", "complete_registration"),
        fake,
        tiktok_reply(40100, "Too many requests"),
        "tiktok-token-abc",
    )
    by_id = {event["event_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-2", "msg-4"}
    assert by_id["msg-4"]["event"] == "CompleteRegistration"
    assert by_id["msg-1"]["user"]["email"] == [sha("buyer1@example.com")]
    assert by_id["msg-1"]["user"]["phone"] == [sha("+16505551201")]  # E.164 with its '+'
    assert by_id["msg-1"]["properties"] == {"value": 11.5, "currency": "USD"}
    assert recorded["msg-3"][0] == "archived" and "code 40002" in (recorded["msg-3"][1] or "")


# -- Snapchat ---------------------------------------------------------------------------


def test_replay_into_snapchat_archives_only_the_refused_event_and_never_shows_the_token(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeSnapchat("snap-pixel-1", "snap-token-abc", refuse_events=frozenset({"msg-2"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("SNAP_ACCESS_TOKEN", "snap-token-abc")
    recorded = replay_orders(
        tmp_path,
        destination("snap", "snapchat", "SNAP_ACCESS_TOKEN", server.url, pixel_id="snap-pixel-1"),
        orders_and_signups("snap", "sign_up"),
        fake,
        Reply(429, {"status": "ERROR", "reason": "slow down"}, {"Retry-After": "0"}),
        "snap-token-abc",
    )
    by_id = {event["event_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-3", "msg-4"}
    assert by_id["msg-4"]["event_name"] == "SIGN_UP"
    assert by_id["msg-1"]["user_data"]["ph"] == [sha("16505551201")]
    assert recorded["msg-2"][0] == "archived" and "INVALID" in (recorded["msg-2"][1] or "")

    data = preview(tmp_path, order(5))
    [delivery] = data["syncs"][0]["deliveries"]
    assert "snap-token-abc" not in json.dumps(data)  # the token sits in the URL's query
    assert delivery["request"]["url"].endswith("access_token=***")
    assert delivery["request"]["body"]["data"][0]["user_data"]["em"] == [sha("buyer5@example.com")]


# -- Pinterest --------------------------------------------------------------------------


def test_replay_into_pinterest_archives_the_event_pinterest_did_not_process(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakePinterest("549755885175", "pina-token-abc", refuse_events=frozenset({"msg-2"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("PINTEREST_TOKEN", "pina-token-abc")
    recorded = replay_orders(
        tmp_path,
        destination(
            "pinterest", "pinterest", "PINTEREST_TOKEN", server.url, ad_account_id='"549755885175"'
        ),
        orders_and_signups("pinterest", "sign_up"),
        fake,
        Reply(429, {"code": 8, "message": "Rate limit exceeded"}, {"Retry-After": "0"}),
        "pina-token-abc",
    )
    by_id = {event["event_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-3", "msg-4"}
    assert by_id["msg-4"]["event_name"] == "signup"
    assert by_id["msg-1"]["custom_data"] == {"value": "11.5", "currency": "USD"}  # value as text
    assert by_id["msg-1"]["user_data"]["em"] == [sha("buyer1@example.com")]
    assert recorded["msg-2"] == (
        "archived",
        "pinterest: Event is older than the maximum allowed age.",
    )


# -- Reddit -----------------------------------------------------------------------------


def test_replay_into_reddit_archives_the_invalid_event_and_resends_the_others(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeReddit("t2_abc123", "reddit-token-abc", refuse_events=frozenset({"msg-2"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("REDDIT_TOKEN", "reddit-token-abc")
    # The resend of the events Reddit did not name takes one more attempt.
    delivery = (
        "delivery: { batch_size: 10, max_attempts: 4, backoff: { initial: 10ms, max: 20ms } }"
    )
    recorded = replay_orders(
        tmp_path,
        destination("reddit", "reddit", "REDDIT_TOKEN", server.url, account_id="t2_abc123"),
        orders_and_signups("reddit", "sign_up", value="value_decimal", delivery=delivery),
        fake,
        Reply(429, {"message": "Too Many Requests"}, {"Retry-After": "0"}),
        "reddit-token-abc",
    )
    by_id = {event["event_metadata"]["conversion_id"]: event for event in fake.events}
    assert set(by_id) == {"msg-1", "msg-3", "msg-4"}
    assert by_id["msg-4"]["event_type"] == {"tracking_type": "SignUp"}
    assert by_id["msg-1"]["user"]["email"] == sha("buyer1@example.com")
    assert by_id["msg-1"]["user"]["ip_address"] == sha("203.0.113.1")
    assert recorded["msg-2"] == (
        "archived",
        "reddit: event_metadata.currency: invalid currency code",
    )
