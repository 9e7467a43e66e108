"""Slack incoming webhooks: one message per event, its text a Liquid template of the sync.

Follows Slack's documentation:

- Sending messages using incoming webhooks, https://api.slack.com/messaging/webhooks
  (POST a JSON body with `text`, optionally `blocks`/`attachments`; the answer is
  HTTP 200 with the body `ok`).
- Improving error conditions for incoming webhooks,
  https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks
  (400 `invalid_payload` / `user_not_found`, 403 `action_prohibited`,
  404 `channel_not_found`, 410 `channel_is_archived`, 500 `rollup_error`), plus the
  strings webhooks answer today (403 `invalid_token`, `posting_to_general_channel_denied`,
  404 `no_service`, `no_team`, 400 `no_text`, `invalid_blocks`).
- Rate limits, https://api.slack.com/docs/rate-limits#rate-limits__limits-when-posting-messages
  (incoming webhooks: one message per second per webhook, short bursts allowed;
  over it, HTTP 429 with `Retry-After`).
- Block Kit reference, https://api.slack.com/reference/block-kit/blocks (at most
  50 blocks per message); `text` is truncated by Slack beyond 40,000 characters.

The message text comes from the sync's mapping, usually a template:

    event_types:
      - type: message
        mappings:
          required:
            text: { template: "New order {{ row.properties.order_id }} for {{ row.properties.total }}" }

`base_url` replaces the scheme and host of `webhook_url` (for a proxy or a test server);
the webhook's path, which carries its secret, is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import orjson

from streamctl.core.events import Event
from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    ConfigField,
    Destination,
    EventTypeSpec,
    FieldSpec,
    HttpRequest,
    ItemResult,
    ItemStatus,
    MappedEvent,
    Payload,
)
from streamctl.destinations.vendor import whole_batch_outcome

MAX_BLOCKS = 50
MAX_TEXT = 40_000

# What each error string of an incoming webhook means, for the archived event's error.
SLACK_ERRORS: dict[str, str] = {
    "invalid_payload": "Slack could not read the message body (check blocks/attachments)",
    "user_not_found": "the user named in the message does not exist",
    "no_text": "the message has no text",
    "invalid_blocks": "a block is malformed",
    "invalid_blocks_format": "`blocks` is not an array of blocks",
    "too_many_attachments": "the message has too many attachments",
    "action_prohibited": "a workspace admin restricts posting with this webhook",
    "invalid_token": "the webhook's token is invalid or revoked",
    "posting_to_general_channel_denied": "only admins may post to #general",
    "channel_not_found": "the webhook's channel no longer exists",
    "no_service": "the webhook is disabled, removed or invalid",
    "no_team": "the webhook's workspace no longer exists",
    "team_disabled": "the webhook's workspace is disabled",
    "channel_is_archived": "the webhook's channel is archived",
    "rollup_error": "Slack had an internal error",
}

_MESSAGE_OPTIONAL = (
    FieldSpec("blocks", "array", "Block Kit blocks (text becomes the notification fallback)"),
    FieldSpec("attachments", "array", "legacy secondary attachments"),
    FieldSpec("thread_ts", "string", "reply in this thread"),
    FieldSpec("username", "string", "display name (legacy webhooks only)"),
    FieldSpec("icon_emoji", "string", "e.g. :rocket: (legacy webhooks only)"),
    FieldSpec("icon_url", "string", "avatar image URL (legacy webhooks only)"),
    FieldSpec("channel", "string", "channel override (legacy webhooks only)"),
    FieldSpec("mrkdwn", "boolean", "format `text` as mrkdwn (default true)"),
    FieldSpec("unfurl_links", "boolean", "unfurl links in the text"),
    FieldSpec("unfurl_media", "boolean", "unfurl media in the text"),
)


class SlackDestination(Destination):
    """Posts one Slack message per event to an incoming webhook."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="slack",
        description="Slack incoming webhook: one message per event, text from a Liquid template.",
        docs="https://api.slack.com/messaging/webhooks",
        config=(
            ConfigField(
                "webhook_url",
                required=True,
                secret=True,
                description="https://hooks.slack.com/services/T.../B.../...",
            ),
            ConfigField(
                "base_url", description="replaces the webhook's scheme and host (proxy, tests)"
            ),
        ),
        event_types=(
            EventTypeSpec(
                "message",
                "a message whose text (and optional blocks) the sync's mapping builds",
                required=(
                    FieldSpec("text", "string", "message text (mrkdwn), usually a template"),
                ),
                optional=_MESSAGE_OPTIONAL,
                user_fields=False,
                properties=False,
            ),
            EventTypeSpec(
                "custom",
                "a named event: the name in bold, then each user field and property on its own line",
                required=(FieldSpec("name", "string", "the headline, e.g. the event name"),),
                optional=_MESSAGE_OPTIONAL,
            ),
        ),
        batch_size=1,
        max_batch_size=1,
        rate_limit=1.0,
        identity="none",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        if event_type != "custom":
            return dict(mapped.required)
        fields = dict(mapped.required)
        name = fields.pop("name", "")
        lines = [f"*{name}*"]
        lines += [
            f"{key}: {_inline(value)}"
            for key, value in {**mapped.user, **mapped.properties}.items()
        ]
        return {"text": "\n".join(lines), **fields}

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        text = payload.get("text")
        if (not isinstance(text, str) or not text.strip()) and not payload.get("blocks"):
            return "slack: `text` is empty; Slack refuses a message without text (no_text)"
        blocks = payload.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            return f"slack: `blocks` must be an array, got {type(blocks).__name__}"
        if isinstance(blocks, list) and len(blocks) > MAX_BLOCKS:
            return f"slack: {len(blocks)} blocks; Slack accepts at most {MAX_BLOCKS} per message"
        if isinstance(text, str) and len(text) > MAX_TEXT:
            return f"slack: `text` has {len(text)} characters; Slack truncates beyond {MAX_TEXT}"
        return None

    # -- sending -----------------------------------------------------------------

    def webhook_url(self) -> str:
        url = str(self.config["webhook_url"])
        override = self.config.get("base_url")
        if not override:
            return url
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return str(override).rstrip("/") + path

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        # Batch size 1: an incoming webhook takes exactly one message per request.
        (payload,) = payloads
        return HttpRequest(
            "POST",
            self.webhook_url(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            json=payload,
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        answer = response.text.strip()
        if 200 <= code < 300:
            return BatchResult.same(len(payloads), ItemResult(ItemStatus.DELIVERED, code))
        meaning = SLACK_ERRORS.get(answer, "")
        error = f"slack: HTTP {code} {answer or '(empty body)'}" + (
            f": {meaning}" if meaning else ""
        )
        return whole_batch_outcome(response, len(payloads), error)


def _inline(value: Any) -> str:
    """A property value on one line of a message: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()
