"""Alert channels: where a rule's firing and recovery notices go (SPEC §7).

    channel = build_channel(project.alerts.channels["oncall"], client)
    await channel.send(notice)          # raises ChannelError; the caller retries

`CHANNELS` is the one table of channel types: the loader checks a channel's keys
against its class's `required`/`optional`, masks its `secret` ones, and the JSON
schema's list of types is read from it (`streamctl.config.schema`). A new type is a
class here and one line in `CHANNELS`.

| type | sends |
| --- | --- |
| `slack` | incoming webhook: `text` plus an attachment coloured by severity |
| `webhook` | `POST url` with `headers`; the body is `AlertNotice.as_json()` |
| `pagerduty` | Events API v2 `POST {base_url}/v2/enqueue`, trigger/resolve, stable `dedup_key` |
| `email` | SMTP, STARTTLS and login (`smtplib`, in a worker thread) |

Credentials (webhook URLs, routing keys, passwords, header values) never reach an
error message: errors name the channel and its type, the status code or the kind of
network failure, never the URL.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, ClassVar, Literal

import httpx

from streamctl.core.errors import ConfigError, DeliveryError, Problem
from streamctl.core.model import AlertChannel
from streamctl.core.timestamps import iso
from streamctl.core.units import format_duration

NoticeState = Literal["firing", "resolved"]

PAGERDUTY_BASE_URL = "https://events.pagerduty.com"

_SLACK_COLOURS = {"critical": "#d00000", "warning": "#daa038", "resolved": "#2eb886"}
_PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning"}


@dataclass(frozen=True)
class AlertNotice:
    """One transition of one rule for one sync: what every channel is told."""

    rule: str
    sync: str
    state: NoticeState
    when: str  # the metric: error_rate, failures, archived, latency_p95, no_events
    value: float | None  # the metric's value at the transition (None: no data in the window)
    comparison: Literal["above", "below"]
    threshold: float
    window: float  # seconds
    severity: Literal["critical", "warning"]
    since: float  # epoch seconds: when the rule started firing (for both states)
    at: float  # epoch seconds: when this transition was seen

    @property
    def dedup_key(self) -> str:
        """Stable per rule and sync, so PagerDuty's resolve closes the trigger's incident."""
        return f"streamctl/{self.rule}/{self.sync}"

    @property
    def summary(self) -> str:
        verb = "FIRING" if self.state == "firing" else "RESOLVED"
        value = "no data" if self.value is None else format_value(self.when, self.value)
        bound = format_value(self.when, self.threshold)
        return (
            f"[{verb}] {self.rule} ({self.severity}): {self.when} of {self.sync} is {value} "
            f"({self.comparison} {bound} fires) over {format_duration(self.window)}"
        )

    def as_json(self) -> dict[str, Any]:
        """The `webhook` channel's body; its keys are a stable, documented contract."""
        return {
            "rule": self.rule,
            "sync": self.sync,
            "state": self.state,
            "when": self.when,
            "value": self.value,
            "comparison": self.comparison,
            "threshold": self.threshold,
            "window": format_duration(self.window),
            "window_seconds": self.window,
            "severity": self.severity,
            "since": iso(self.since, "seconds"),
            "at": iso(self.at, "seconds"),
            "summary": self.summary,
        }


class ChannelError(DeliveryError):
    """A channel refused or could not take a notice. `retryable` tells the caller to try again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


class Channel(ABC):
    """A configured alert channel. Subclasses turn a notice into one request and
    declare their settings: required and optional keys, and which are secret."""

    type: ClassVar[str]
    required: ClassVar[frozenset[str]]
    optional: ClassVar[frozenset[str]] = frozenset()
    secret: ClassVar[frozenset[str]]

    def __init__(self, config: AlertChannel, client: httpx.AsyncClient, timeout: float) -> None:
        self.name = config.name
        self.config = config.config
        self.client = client
        self.timeout = timeout

    @abstractmethod
    async def send(self, notice: AlertNotice) -> None:
        """Deliver one notice or raise ChannelError."""

    def _fail(self, what: str, *, retryable: bool) -> ChannelError:
        return ChannelError(f"{self.type} channel {self.name!r}: {what}", retryable=retryable)


class HTTPChannel(Channel):
    """A channel that POSTs JSON; classifies answers like delivery does (SPEC §5)."""

    async def _post(self, url: str, body: Any, headers: Mapping[str, str] | None = None) -> None:
        try:
            response = await self.client.post(
                url, json=body, headers=dict(headers or {}), timeout=self.timeout
            )
        except httpx.TimeoutException:
            raise self._fail("timed out", retryable=True) from None
        except httpx.HTTPError as exc:
            # The exception's text may carry the URL, a credential for slack/webhook.
            raise self._fail(f"request failed ({type(exc).__name__})", retryable=True) from None
        if response.is_success:
            return
        status = response.status_code
        retryable = status in (408, 423, 429) or status >= 500
        raise self._fail(f"HTTP {status}", retryable=retryable)


class SlackChannel(HTTPChannel):
    type = "slack"
    required = frozenset({"webhook_url"})
    secret = frozenset({"webhook_url"})

    async def send(self, notice: AlertNotice) -> None:
        await self._post(str(self.config["webhook_url"]), slack_message(notice))


class WebhookChannel(HTTPChannel):
    type = "webhook"
    required = frozenset({"url"})
    optional = frozenset({"headers"})
    secret = frozenset({"url", "headers"})  # a webhook URL often carries its token (Slack's do)

    async def send(self, notice: AlertNotice) -> None:
        headers = {str(k): str(v) for k, v in dict(self.config.get("headers") or {}).items()}
        await self._post(str(self.config["url"]), notice.as_json(), headers)


class PagerDutyChannel(HTTPChannel):
    type = "pagerduty"
    required = frozenset({"routing_key"})
    optional = frozenset({"base_url"})
    secret = frozenset({"routing_key"})

    async def send(self, notice: AlertNotice) -> None:
        base_url = str(self.config.get("base_url") or PAGERDUTY_BASE_URL).rstrip("/")
        body = pagerduty_event(notice, str(self.config["routing_key"]))
        await self._post(f"{base_url}/v2/enqueue", body)


class EmailChannel(Channel):
    """SMTP with STARTTLS (default on) and login; smtplib runs in a worker thread."""

    type = "email"
    required = frozenset({"host", "from", "to"})
    optional = frozenset({"port", "username", "password", "starttls"})
    secret = frozenset({"password"})

    async def send(self, notice: AlertNotice) -> None:
        message = email_message(notice, sender=str(self.config["from"]), to=self._recipients())
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except smtplib.SMTPAuthenticationError:
            raise self._fail("login refused", retryable=False) from None
        except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS on a server that needs it
            raise self._fail(str(exc), retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            # 4xx replies are transient by the SMTP standard; 5xx are final.
            raise self._fail(
                f"SMTP {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500
            ) from None
        except smtplib.SMTPRecipientsRefused:
            raise self._fail("every recipient was refused", retryable=False) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise self._fail(f"SMTP failed ({type(exc).__name__})", retryable=True) from None

    def _recipients(self) -> list[str]:
        to = self.config["to"]
        return [to] if isinstance(to, str) else [str(address) for address in to]

    def _send_blocking(self, message: EmailMessage) -> None:
        host = str(self.config["host"])
        port = int(self.config.get("port") or 587)
        with smtplib.SMTP(host, port, timeout=self.timeout) as smtp:
            smtp.ehlo()
            if self.config.get("starttls", True):
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            username = self.config.get("username")
            if username:
                smtp.login(str(username), str(self.config.get("password") or ""))
            smtp.send_message(message)

    def _tls_context(self) -> ssl.SSLContext:
        # The system's CAs; a relay with a private CA is trusted through SSL_CERT_FILE.
        return ssl.create_default_context()


CHANNELS: Mapping[str, type[Channel]] = {
    SlackChannel.type: SlackChannel,
    WebhookChannel.type: WebhookChannel,
    PagerDutyChannel.type: PagerDutyChannel,
    EmailChannel.type: EmailChannel,
}


def build_channel(
    config: AlertChannel, client: httpx.AsyncClient, *, timeout: float = 10.0
) -> Channel:
    """The channel for one `alerts.channels` entry (the loader has checked its keys)."""
    kind = CHANNELS.get(config.type)
    if kind is None:
        message = f"alerts.channels.{config.name}: unknown type {config.type!r}"
        raise ConfigError([Problem("streamctl.yaml", 1, 1, message)])
    return kind(config, client, timeout)


def slack_message(notice: AlertNotice) -> dict[str, Any]:
    """An incoming-webhook message: `text` for notifications, an attachment for the details."""
    colour = _SLACK_COLOURS["resolved" if notice.state == "resolved" else notice.severity]
    fields = [
        ("Rule", notice.rule),
        ("Sync", notice.sync),
        ("Severity", notice.severity),
        ("Value", "no data" if notice.value is None else format_value(notice.when, notice.value)),
        ("Threshold", f"{notice.comparison} {format_value(notice.when, notice.threshold)}"),
        ("Since", iso(notice.since, "seconds")),
    ]
    return {
        "text": notice.summary,
        "attachments": [
            {
                "color": colour,
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": notice.summary}},
                    {
                        "type": "section",
                        "fields": [
                            {"type": "mrkdwn", "text": f"*{name}*\n{value}"}
                            for name, value in fields
                        ],
                    },
                ],
            }
        ],
    }


def pagerduty_event(notice: AlertNotice, routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: trigger on firing, resolve on recovery, same dedup_key."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger" if notice.state == "firing" else "resolve",
        "dedup_key": notice.dedup_key,
    }
    if notice.state == "firing":
        event["payload"] = {
            "summary": notice.summary[:1024],  # PagerDuty's limit
            "source": f"streamctl/{notice.sync}",
            "severity": _PAGERDUTY_SEVERITY[notice.severity],
            "timestamp": iso(notice.since, "seconds"),
            "component": notice.sync,
            "class": notice.when,
            "custom_details": notice.as_json(),
        }
    return event


def email_message(notice: AlertNotice, *, sender: str, to: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = notice.summary
    message["From"] = sender
    message["To"] = ", ".join(to)
    lines = [f"{key}: {value}" for key, value in notice.as_json().items() if key != "summary"]
    message.set_content(notice.summary + "\n\n" + "\n".join(lines) + "\n")
    return message


def format_value(when: str, value: float) -> str:
    if when == "error_rate":
        return f"{value:.1%}"
    if when == "latency_p95":
        return f"{value:.0f} ms"
    return f"{value:g}"
