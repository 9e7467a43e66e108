"""Slack incoming webhooks against a fake Slack on 127.0.0.1."""

from __future__ import annotations

import pytest

from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.registry import CATALOG
from streamctl.destinations.slack import SlackDestination
from tests.fakes.http import FakeServer, Reply
from tests.fakes.vendors_a import FakeSlack, send_batch, serve

HOOK = "/services/T0001/B0001/s3cr3tToken"
ARCHIVED = "/services/T0001/B0002/archivedToken"
PROHIBITED = "/services/T0001/B0003/prohibitedToken"
EVENT = {"type": "track", "event": "Order Completed", "messageId": "m1", "userId": "u1"}


@pytest.fixture
def slack(module_fake_server):
    fake = FakeSlack({HOOK: "ok", ARCHIVED: "archived", PROHIBITED: "prohibited"})
    server = serve(module_fake_server, fake)
    return fake, server


def destination(server: FakeServer, path: str = HOOK) -> SlackDestination:
    # The configured URL is Slack's; base_url points its host at the fake, keeping the path.
    return SlackDestination(
        "alerts", {"webhook_url": f"https://hooks.slack.com{path}", "base_url": server.url}
    )


def test_registered_with_message_and_custom_types():
    entry = CATALOG["slack"].catalog
    assert entry.secret_fields == frozenset({"webhook_url"})
    message = entry.event_type("message")
    assert message is not None and [f.name for f in message.required] == ["text"]
    assert entry.event_type("custom") is not None
    assert entry.batch_size == 1 and entry.rate_limit == 1.0


def test_message_is_posted_to_the_webhook_path(slack):
    fake, server = slack
    dest = destination(server)
    payload = dest.build_payload(
        "message",
        MappedEvent(
            {
                "text": "Order *42* completed",
                "username": "shop-bot",
                "blocks": [{"type": "divider"}],
            }
        ),
        EVENT,
    )
    assert dest.check_payload("message", payload) is None
    result = send_batch(dest, "message", [payload])
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED]
    assert fake.problems == []
    assert fake.messages == [
        {"text": "Order *42* completed", "username": "shop-bot", "blocks": [{"type": "divider"}]}
    ]
    assert server.requests[0].path == HOOK
    assert server.requests[0].headers["content-type"].startswith("application/json")


def test_custom_event_renders_name_user_fields_and_properties(slack):
    fake, server = slack
    dest = destination(server)
    mapped = MappedEvent(
        {"name": "Order Completed"},
        user={"email": "a@b.c"},
        properties={"total": 9.5, "tags": ["x"]},
    )
    payload = dest.build_payload("custom", mapped, EVENT)
    assert payload == {"text": '*Order Completed*\nemail: a@b.c\ntotal: 9.5\ntags: ["x"]'}
    assert send_batch(dest, "custom", [payload]).items[0].status is ItemStatus.DELIVERED
    assert fake.messages[0]["text"].startswith("*Order Completed*")


@pytest.mark.parametrize(
    ("path", "code", "answer"),
    [
        (ARCHIVED, 410, "channel_is_archived"),
        (PROHIBITED, 403, "action_prohibited"),
        ("/services/T9/B9/gone", 404, "no_service"),
    ],
)
def test_permanent_webhook_errors_fail_with_slack_s_reason(slack, path, code, answer):
    _fake, server = slack
    dest = destination(server, path)
    result = send_batch(dest, "message", [{"text": "hello"}])
    (item,) = result.items
    assert item.status is ItemStatus.FAILED
    assert item.status_code == code
    assert answer in (item.error or "")
    assert item.retry_after is None
    assert not result.split


def test_invalid_payload_is_permanent(slack):
    _fake, server = slack
    result = send_batch(destination(server), "message", [{"text": "x", "blocks": "not-a-list"}])
    (item,) = result.items
    assert (item.status, item.status_code) == (ItemStatus.FAILED, 400)
    assert "invalid_blocks_format" in (item.error or "")


def test_rate_limit_retries_after_slack_s_delay(slack):
    fake, server = slack
    fake.outages.append(Reply(429, "rate_limited", {"Retry-After": "7"}))
    dest = destination(server)
    (item,) = send_batch(dest, "message", [{"text": "one"}]).items
    assert (item.status, item.status_code, item.retry_after) == (ItemStatus.RETRY, 429, 7.0)
    assert fake.messages == []
    (again,) = send_batch(dest, "message", [{"text": "one"}]).items
    assert again.status is ItemStatus.DELIVERED
    assert fake.messages == [{"text": "one"}]


def test_server_error_is_retried(slack):
    fake, server = slack
    fake.outages.append(Reply(500, "rollup_error"))
    (item,) = send_batch(destination(server), "message", [{"text": "x"}]).items
    assert item.status is ItemStatus.RETRY
    assert "rollup_error" in (item.error or "")


def test_unreachable_webhook_is_retried():
    with FakeServer() as server:
        url = server.url
    dest = SlackDestination(
        "alerts", {"webhook_url": "https://hooks.slack.com" + HOOK, "base_url": url}
    )
    (item,) = send_batch(dest, "message", [{"text": "x"}]).items
    assert item.status is ItemStatus.RETRY
    assert "connection error" in (item.error or "")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"text": "   "}, "empty"),
        ({"text": "x", "blocks": [{"type": "divider"}] * 51}, "at most 50"),
        ({"text": "x" * 40_001}, "40000"),
    ],
)
def test_check_payload_refuses_what_slack_would(payload, message):
    dest = SlackDestination("alerts", {"webhook_url": "https://hooks.slack.com" + HOOK})
    problem = dest.check_payload("message", payload)
    assert problem is not None and message in problem


def test_webhook_url_never_appears_in_errors(slack):
    _fake, server = slack
    (item,) = send_batch(destination(server, ARCHIVED), "message", [{"text": "x"}]).items
    assert "archivedToken" not in (item.error or "") + (item.response or "")
