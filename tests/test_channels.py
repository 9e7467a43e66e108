"""Alert channels against real receivers on 127.0.0.1: Slack-, webhook-, PagerDuty-like HTTP
servers and an SMTP server that demands STARTTLS and login."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from streamctl.channels import (
    AlertNotice,
    ChannelError,
    build_channel,
)
from streamctl.core.errors import ConfigError
from streamctl.core.model import AlertChannel
from streamctl.core.units import format_duration
from tests.fakes.http import FakeServer, Reply
from tests.fakes.smtp import FakeSMTP

FIRING = AlertNotice(
    rule="braze delivery",
    sync="purchases-to-braze",
    state="firing",
    when="error_rate",
    value=0.25,
    comparison="above",
    threshold=0.05,
    window=300.0,
    severity="critical",
    since=1_780_000_000.0,
    at=1_780_000_000.0,
)
RESOLVED = AlertNotice(
    **{**FIRING.__dict__, "state": "resolved", "value": 0.0, "at": 1_780_000_600.0}
)


def send(config: AlertChannel, notice: AlertNotice, timeout: float = 5.0) -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as client:
            await build_channel(config, client, timeout=timeout).send(notice)

    asyncio.run(go())


def test_slack_posts_text_and_a_severity_coloured_attachment(fake_server: FakeServer) -> None:
    fake_server.answer = lambda _req: Reply(200, "ok")
    config = AlertChannel(
        "oncall", "slack", {"webhook_url": f"{fake_server.url}/services/T0/B0/xyz"}
    )

    send(config, FIRING)
    send(config, RESOLVED)

    first, second = fake_server.requests
    assert first.path == "/services/T0/B0/xyz"
    assert first.headers["content-type"] == "application/json"
    firing, resolved = first.json(), second.json()
    assert firing["text"].startswith("[FIRING] braze delivery (critical)")
    assert "25.0%" in firing["text"] and "purchases-to-braze" in firing["text"]
    assert firing["attachments"][0]["color"] == "#d00000"
    assert resolved["text"].startswith("[RESOLVED] braze delivery")
    assert resolved["attachments"][0]["color"] == "#2eb886"


def test_webhook_sends_the_documented_body_with_custom_headers(fake_server: FakeServer) -> None:
    config = AlertChannel(
        "ops", "webhook", {"url": f"{fake_server.url}/hook", "headers": {"X-Token": "tok-123"}}
    )

    send(config, FIRING)

    (request,) = fake_server.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["x-token"] == "tok-123"
    assert request.json() == {
        "rule": "braze delivery",
        "sync": "purchases-to-braze",
        "state": "firing",
        "when": "error_rate",
        "value": 0.25,
        "comparison": "above",
        "threshold": 0.05,
        "window": "5m",
        "window_seconds": 300.0,
        "severity": "critical",
        "since": "2026-05-28T20:26:40Z",
        "at": "2026-05-28T20:26:40Z",
        "summary": FIRING.summary,
    }


def test_pagerduty_triggers_then_resolves_with_one_dedup_key(fake_server: FakeServer) -> None:
    fake_server.answer = lambda req: Reply(
        202,
        {"status": "success", "message": "Event processed", "dedup_key": req.json()["dedup_key"]},
    )
    config = AlertChannel(
        "pager", "pagerduty", {"routing_key": "R0UT1NGKEY", "base_url": fake_server.url}
    )

    send(config, FIRING)
    send(config, RESOLVED)

    trigger, resolve = (r.json() for r in fake_server.requests)
    assert {r.path for r in fake_server.requests} == {"/v2/enqueue"}
    assert trigger["routing_key"] == resolve["routing_key"] == "R0UT1NGKEY"
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert (
        trigger["dedup_key"]
        == resolve["dedup_key"]
        == "streamctl/braze delivery/purchases-to-braze"
    )
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "streamctl/purchases-to-braze"
    assert trigger["payload"]["summary"] == FIRING.summary
    assert "payload" not in resolve


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (429, True), (400, False), (403, False)]
)
def test_http_failures_are_classified_and_never_show_the_url(
    fake_server: FakeServer, status: int, retryable: bool
) -> None:
    fake_server.answer = lambda _req: Reply(status, "no_service")
    config = AlertChannel(
        "oncall", "slack", {"webhook_url": f"{fake_server.url}/services/SECRETPATH"}
    )

    with pytest.raises(ChannelError) as caught:
        send(config, FIRING)

    assert caught.value.retryable is retryable
    assert str(caught.value) == f"slack channel 'oncall': HTTP {status}"


def test_an_unreachable_receiver_is_a_retryable_failure_without_the_url() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = AlertChannel("ops", "webhook", {"url": f"http://127.0.0.1:{port}/hook?token=SECRET"})

    with pytest.raises(ChannelError) as caught:
        send(config, FIRING)

    assert caught.value.retryable
    assert "SECRET" not in str(caught.value) and str(port) not in str(caught.value)


def mail_channel(smtp: FakeSMTP, settings: dict[str, Any]) -> AlertChannel:
    """The email channel 'mail' of the test's SMTP server, with `settings` over a sender
    and a recipient of its own."""
    defaults = {
        "host": "127.0.0.1",
        "port": smtp.port,
        "from": "a@example.com",
        "to": ["b@example.com"],
    }
    return AlertChannel("mail", "email", {**defaults, **settings})


def test_email_uses_starttls_and_login(tmp_path, monkeypatch) -> None:
    with FakeSMTP(tmp_path, username="alerts", password="pa55word") as smtp:
        monkeypatch.setenv("SSL_CERT_FILE", str(smtp.ca_file))  # trust the test's own CA
        config = mail_channel(
            smtp,
            {
                "username": "alerts",
                "password": "pa55word",
                "from": "streamctl@example.com",
                "to": ["oncall@example.com", "data@example.com"],
                "starttls": True,
            },
        )
        send(config, FIRING)
        (message,) = smtp.messages
        assert smtp.logins == ["alerts"]

    assert message["Subject"] == FIRING.summary
    assert message["From"] == "streamctl@example.com"
    assert message["To"] == "oncall@example.com, data@example.com"
    body = message.get_content()
    assert "state: firing" in body and "sync: purchases-to-braze" in body


def test_email_with_a_wrong_password_fails_for_good_without_showing_it(
    tmp_path, monkeypatch
) -> None:
    with FakeSMTP(tmp_path, username="alerts", password="pa55word") as smtp:
        monkeypatch.setenv("SSL_CERT_FILE", str(smtp.ca_file))
        config = mail_channel(
            smtp, {"username": "alerts", "password": "WRONG-pass", "to": "oncall@example.com"}
        )
        with pytest.raises(ChannelError) as caught:
            send(config, FIRING)
        assert smtp.messages == []

    assert not caught.value.retryable
    assert "WRONG-pass" not in str(caught.value)


def test_email_refuses_an_untrusted_certificate(tmp_path) -> None:
    with FakeSMTP(tmp_path, username="alerts", password="pa55word") as smtp:
        config = mail_channel(smtp, {})
        with pytest.raises(ChannelError, match="email channel 'mail'"):
            send(config, FIRING)
        assert smtp.messages == []


def test_an_unknown_channel_type_is_a_config_error() -> None:
    async def build() -> None:
        async with httpx.AsyncClient() as client:
            build_channel(AlertChannel("pager", "opsgenie", {}), client)  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match=r"alerts\.channels\.pager: unknown type 'opsgenie'"):
        asyncio.run(build())


def test_durations_read_like_the_yaml() -> None:
    assert [format_duration(s) for s in (300, 90, 7200, 86400, 1.5)] == [
        "5m",
        "90s",
        "2h",
        "1d",
        "1.5s",
    ]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # on purpose
def test_email_without_starttls_logs_in_over_a_plain_connection(tmp_path) -> None:
    with FakeSMTP(tmp_path, username="alerts", password="pa55word", tls=False) as smtp:
        config = mail_channel(
            smtp, {"username": "alerts", "password": "pa55word", "starttls": False}
        )
        send(config, FIRING)
        assert smtp.logins == ["alerts"] and len(smtp.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # on purpose
def test_email_refuses_to_go_on_when_the_server_offers_no_starttls(tmp_path) -> None:
    with FakeSMTP(tmp_path, username="alerts", password="pa55word", tls=False) as smtp:
        config = mail_channel(smtp, {"username": "alerts", "password": "pa55word"})
        with pytest.raises(ChannelError) as caught:
            send(config, FIRING)
        assert smtp.logins == [] and smtp.messages == []  # the password never went out in clear

    assert not caught.value.retryable
    assert "STARTTLS" in str(caught.value)
