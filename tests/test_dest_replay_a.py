"""End to end: `streamctl replay` through YAML syncs into fake Slack, Amplitude, Mixpanel and Braze.

Each test writes a project (streamctl.yaml with credentials from `${ENV}`, one sync, an
NDJSON file), replays it with the real CLI, and checks three things: what the fake
vendor received (checked against the vendor's documented contract), the CLI's exit
code and JSON summary, and the per-event outcome recorded in the SQLite store — only
the events the vendor refused are archived.
"""

from __future__ import annotations

import json

from tests.fakes.http import Reply
from tests.fakes.vendors_a import FakeAmplitude, FakeBraze, FakeMixpanel, FakeSlack, serve
from tests.replay_helpers import FAST_RETRIES, outcomes, replay, track, write_project
from tests.store_rows import store_rows

# Slack takes one message per request and one request per second: tests allow more.
SLACK_DELIVERY = (
    "delivery: { rate_limit: 50/s, max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }"
)


# -- Slack ------------------------------------------------------------------------------


def test_replay_into_slack_renders_the_template_and_archives_an_archived_channel(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeSlack({"/services/T1/B1/good": "ok", "/services/T1/B2/archived": "archived"})
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("SLACK_OK_URL", "https://hooks.slack.com/services/T1/B1/good")
    monkeypatch.setenv("SLACK_ARCHIVED_URL", "https://hooks.slack.com/services/T1/B2/archived")
    events_file = write_project(
        tmp_path,
        f"""\
        orders-channel:
          type: slack
          config: {{ webhook_url: "${{SLACK_OK_URL}}", base_url: "{server.url}" }}
        """,
        f"""\
        source: web
        destination: orders-channel
        event_types:
          - type: message
            filter: {{ field: event, op: eq, value: Order Completed }}
            mappings:
              required:
                text: {{ template: "Order {{{{ row.properties.order_id }}}}: {{{{ row.properties.total }}}} {{{{ row.properties.currency }}}}" }}
                username: {{ static: shop-bot }}
        {SLACK_DELIVERY}
        """,
        [track(1), track(2), track(3, event="Cart Viewed")],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 0, stderr
    assert fake.problems == []
    # Deliveries run concurrently: compare without depending on arrival order.
    assert sorted(fake.messages, key=lambda m: m["text"]) == [
        {"text": "Order o-1: 11.5 USD", "username": "shop-bot"},
        {"text": "Order o-2: 12.5 USD", "username": "shop-bot"},
    ]
    assert summary["syncs"] == [{"sync": "sync", "delivered": 2, "filtered": 1}]

    # The same project pointed at an archived channel: every message is archived with Slack's reason.
    (tmp_path / ".streamctl" / "state.db").unlink()
    monkeypatch.setenv("SLACK_OK_URL", "https://hooks.slack.com/services/T1/B2/archived")
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1
    assert summary["syncs"][0]["archived"] == 2
    recorded = outcomes(tmp_path)
    assert recorded["msg-1"][0] == "archived" and "channel_is_archived" in (
        recorded["msg-1"][1] or ""
    )
    assert "B2/archived" not in stderr + json.dumps(summary) + str(
        recorded
    )  # the webhook is a secret


# -- Amplitude --------------------------------------------------------------------------


def test_replay_into_amplitude_archives_only_the_silenced_device(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeAmplitude("amp-key", silenced_devices={"anon-0003"})
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("AMPLITUDE_API_KEY", "amp-key")
    identify = {
        "type": "identify",
        "messageId": "msg-9",
        "userId": "user-0009",
        "traits": {"plan": "pro"},
    }
    events_file = write_project(
        tmp_path,
        f"""\
        amplitude:
          type: amplitude
          config: {{ api_key: "${{AMPLITUDE_API_KEY}}", base_url: "{server.url}" }}
        """,
        f"""\
        source: web
        destination: amplitude
        event_types:
          - type: identify
            filter: {{ field: type, op: eq, value: identify }}
            mappings:
              required:
                user_id: {{ field: userId }}
              user:
                plan: {{ field: traits.plan }}
          - type: custom
            mappings:
              required:
                event_type: {{ field: event }}
                user_id: {{ field: userId }}
                device_id: {{ field: anonymousId }}
              properties:
                total: {{ field: properties.total }}
        {FAST_RETRIES}
        """,
        [track(1), track(2), track(3), track(4), identify],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr  # one event archived
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 4, "archived": 1}]
    assert set(fake.ingested) == {"msg-1", "msg-2", "msg-4", "msg-9"}
    assert fake.ingested["msg-9"]["user_properties"] == {"$set": {"plan": "pro"}}
    assert fake.ingested["msg-1"]["time"] == 1795683600000
    recorded = outcomes(tmp_path)
    assert recorded["msg-3"][0] == "archived" and "silenced" in (recorded["msg-3"][1] or "")
    assert {m for m, (status, _) in recorded.items() if status == "delivered"} == {
        "msg-1",
        "msg-2",
        "msg-4",
        "msg-9",
    }
    assert "amp-key" not in stderr + json.dumps(summary)


# -- Mixpanel ---------------------------------------------------------------------------


def test_replay_into_mixpanel_imports_events_and_updates_profiles(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeMixpanel(token="mp-token", secret="mp-secret")
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("MIXPANEL_TOKEN", "mp-token")
    monkeypatch.setenv("MIXPANEL_SECRET", "mp-secret")
    future = track(3, timestamp="2099-01-01T00:00:00Z")  # Mixpanel refuses events from the future
    identify = {
        "type": "identify",
        "messageId": "msg-9",
        "userId": "user-0009",
        "traits": {"email": "n@x.io"},
    }
    events_file = write_project(
        tmp_path,
        f"""\
        mixpanel:
          type: mixpanel
          config:
            project_token: "${{MIXPANEL_TOKEN}}"
            api_secret: "${{MIXPANEL_SECRET}}"
            base_url: "{server.url}"
        """,
        f"""\
        source: web
        destination: mixpanel
        event_types:
          - type: identify
            filter: {{ field: type, op: eq, value: identify }}
            mappings:
              required:
                distinct_id: {{ field: userId }}
              user:
                $email: {{ field: traits.email }}
          - type: custom
            mappings:
              required:
                event: {{ field: event }}
                distinct_id: {{ field: userId }}
              properties:
                order_id: {{ field: properties.order_id }}
        {FAST_RETRIES}
        """,
        [track(1), track(2), future, identify],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3, "archived": 1}]
    assert set(fake.ingested) == {"msg-1", "msg-2"}
    assert fake.ingested["msg-1"]["properties"]["order_id"] == "o-1"
    assert fake.profiles == {"user-0009": {"$email": "n@x.io"}}
    recorded = outcomes(tmp_path)
    assert recorded["msg-3"][0] == "archived" and "properties.time" in (recorded["msg-3"][1] or "")
    assert "mp-secret" not in stderr + json.dumps(summary)


# -- Braze ------------------------------------------------------------------------------


def test_replay_into_braze_archives_only_the_refused_purchase(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeBraze("braze-key", blocked_external_ids={"user-0002"})
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("BRAZE_API_KEY", "braze-key")
    events_file = write_project(
        tmp_path,
        f"""\
        braze-prod:
          type: braze
          config:
            api_key: "${{BRAZE_API_KEY}}"
            endpoint: https://rest.iad-01.braze.com
            base_url: "{server.url}"
        """,
        f"""\
        source: web
        destination: braze-prod
        event_types:
          - type: purchase
            filter: {{ field: event, op: eq, value: Order Completed }}
            mappings:
              required:
                external_id: {{ field: userId }}
                product_id: {{ field: properties.order_id }}
                currency: {{ field: properties.currency }}
                price: {{ field: properties.total }}
                time: {{ field: timestamp }}
              user:
                last_order_total: {{ field: properties.total }}
          - type: custom
            mappings:
              required:
                external_id: {{ field: userId }}
                name: {{ field: event }}
                time: {{ field: timestamp }}
              properties:
                order_id: {{ field: properties.order_id }}
        {FAST_RETRIES}
        """,
        [track(1), track(2), track(3), track(4, event="Cart Viewed")],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3, "archived": 1}]
    assert [p["external_id"] for p in fake.purchases] == ["user-0001", "user-0003"]
    assert fake.purchases[0]["time"] == "2026-11-26T09:00:00.000Z"
    assert [a["last_order_total"] for a in fake.attributes] == [11.5, 13.5]
    assert [e["name"] for e in fake.events] == ["Cart Viewed"]
    recorded = outcomes(tmp_path)
    assert recorded["msg-2"][0] == "archived" and "blacklisted" in (recorded["msg-2"][1] or "")
    assert "braze-key" not in stderr + json.dumps(summary)


def test_replay_into_slack_honours_retry_after_then_delivers(
    tmp_path, module_fake_server, monkeypatch
):
    fake = FakeSlack({"/services/T1/B1/good": "ok"})
    fake.outages.append(Reply(429, "rate_limited", {"Retry-After": "1"}))
    server = serve(module_fake_server, fake)
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/T1/B1/good")
    events_file = write_project(
        tmp_path,
        f"""\
        alerts:
          type: slack
          config: {{ webhook_url: "${{SLACK_URL}}", base_url: "{server.url}" }}
        """,
        """\
        source: web
        destination: alerts
        event_types:
          - type: custom
            mappings:
              required: { name: { field: event } }
              properties: { order: { field: properties.order_id } }
        delivery: { max_attempts: 3, backoff: { initial: 10ms, max: 20ms } }
        """,
        [track(1)],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 0, stderr
    assert summary["syncs"] == [{"sync": "sync", "delivered": 1}]
    assert fake.messages == [{"text": "*Order Completed*\norder: o-1"}]
    attempts = store_rows(
        tmp_path / ".streamctl" / "state.db",
        "SELECT status, status_code, retry_after, at FROM attempts ORDER BY id",
    )
    assert [(status, code, wait) for status, code, wait, _ in attempts] == [
        ("retry", 429, 1.0),
        ("delivered", 200, None),
    ]
    assert attempts[1][3] - attempts[0][3] >= 1.0  # the second attempt waited as Slack asked
