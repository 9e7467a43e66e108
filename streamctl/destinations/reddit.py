"""Reddit Conversions API v2.0: conversion events for a Reddit ads account (pixel).

Reddit's own reference (https://ads-api.reddit.com/docs/v2/#tag/Conversions) is
rendered by script and could not be read from the stored copies available here. The
facts below come from the two open integrations that implement it:

- Segment action-destinations (`segmentio/action-destinations`,
  `packages/destination-actions/src/destinations/reddit-conversions-api/`, a partner
  destination): `utils-v2.ts` — `POST https://ads-api.reddit.com/api/v2.0/conversions/events/{ad_account_id}`
  with `Authorization: Bearer <conversion token>` and `{"events": [...]}`; each event
  `{event_at (ISO 8601), event_type: {tracking_type, custom_event_name}, click_id,
  event_metadata: {currency, item_count, value_decimal, conversion_id, products:
  [{id, name, category}]}, user: {email, external_id, ip_address, phone_number,
  user_agent, uuid, idfa, aaid, data_processing_options: {country, region, modes},
  screen_dimensions: {width, height}}}`; hashing: the email canonicalised (trimmed,
  lowercased, the local part's dots and +tag dropped), external_id and ip_address
  trimmed, the phone as `+digits` without an extension, advertising ids as they come,
  all SHA-256 hex. `types-v2.ts` for the shapes.
- RudderStack rudder-transformer (`rudderlabs/rudder-transformer`,
  `src/cdk/v2/destinations/reddit/`): `config.js` (`maxBatchSize = 1000`, the endpoint),
  `procWorkflow.yaml` (tracking types `PageVisit`, `ViewContent`, `Search`,
  `AddToCart`, `AddToWishlist`, `Lead`, `Purchase`, `SignUp`, `Custom`;
  `conversion_id` <- messageId for deduplication with the Reddit Pixel),
  `docs/businesslogic.md` (events older than 168 hours (7 days) or more than 5 minutes
  ahead are refused; a 400 answers `{"invalid_events": [{"error_message",
  "event_index"}]}`).
- `test_mode` (a top-level boolean that has Reddit check events without recording them)
  appears in third-party examples of the v2.0 request, not in either integration.

Outcomes: 2xx delivered; a 400 naming `invalid_events` fails those events with Reddit's
message, and the others of the request are RETRY at once (Reddit's answer does not say
whether it kept them; resending is safe because `conversion_id` deduplicates); a 400
naming none is bisected; 401/403 fail without bisecting; 429 and 5xx are retried.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from streamctl.core.events import Event
from streamctl.core.timestamps import TimestampError, parse_timestamp
from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    ConfigField,
    Destination,
    FieldSpec,
    HttpRequest,
    ItemResult,
    ItemStatus,
    MappedEvent,
    Payload,
    excerpt,
)
from streamctl.destinations.conversions import (
    context_defaults,
    conversion_event_types,
    event_age_problem,
    money_problems,
    unknown_keys,
    user_with_defaults,
)
from streamctl.destinations.vendor import (
    base_url,
    converted_or_kept,
    int_list,
    json_object,
    to_iso8601,
    whole_batch_outcome,
)

HOST = "https://ads-api.reddit.com"
MAX_EVENTS = 1000
MAX_AGE_DAYS = 7
MAX_AHEAD_SECONDS = 300
RESENT_WITH_INVALID = "reddit: not confirmed; the request was refused for other events, resend"

TRACKING_TYPES = {
    "purchase": "Purchase",
    "lead": "Lead",
    "sign_up": "SignUp",
    "add_to_cart": "AddToCart",
    "page_view": "PageVisit",
}
KNOWN_TRACKING_TYPES = frozenset(
    {
        "PageVisit",
        "ViewContent",
        "Search",
        "AddToCart",
        "AddToWishlist",
        "Lead",
        "Purchase",
        "SignUp",
        "Custom",
    }
)
# user fields Reddit wants hashed, and how each is normalised.
REDDIT_USER: Mapping[str, str] = {
    "email": "email_canonical",
    "phone_number": "phone_e164",
    "external_id": "trimmed",
    "ip_address": "trimmed",
    "idfa": "trimmed",
    "aaid": "trimmed",
}
# user key -> the context_defaults key it defaults to
USER_DEFAULTS = {
    "email": "email",
    "phone_number": "phone",
    "external_id": "user_id",
    "ip_address": "ip",
    "user_agent": "user_agent",
}
USER_FIELDS = frozenset(REDDIT_USER) | {
    "user_agent", "uuid", "opt_out", "screen_dimensions", "data_processing_options",
}  # fmt: skip
EVENT_FIELDS = (
    FieldSpec(
        "conversion_id", "string", "deduplication with the Reddit Pixel; defaults to messageId"
    ),
    FieldSpec("event_at", "any", "ISO 8601 or epoch; sent as ISO 8601; defaults to timestamp"),
    FieldSpec("click_id", "string", "the rdt_cid of the ad click"),
)
METADATA_FIELDS = (
    FieldSpec("value_decimal", "number", "the conversion's value, e.g. 42.5"),
    FieldSpec("currency", "string", "ISO 4217"),
    FieldSpec("item_count", "integer"),
    FieldSpec("products", "array", "[{id, name, category}]"),
)


class RedditDestination(Destination):
    """Reddit Conversions API v2.0."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="reddit",
        description="Reddit Conversions API v2.0: conversion events with hashed user data.",
        docs="https://ads-api.reddit.com/docs/v2/#tag/Conversions",
        config=(
            ConfigField(
                "account_id",
                required=True,
                description="the Reddit ads account (pixel) id, e.g. t2_abc123",
            ),
            ConfigField(
                "access_token",
                required=True,
                secret=True,
                description="conversion access token (Bearer)",
            ),
            ConfigField(
                "test_mode",
                "boolean",
                default=False,
                description="test_mode: true in the request (Reddit checks, records nothing)",
            ),
            ConfigField(
                "base_url", description="replaces https://ads-api.reddit.com (proxy, tests)"
            ),
        ),
        event_types=conversion_event_types(
            TRACKING_TYPES,
            EVENT_FIELDS + METADATA_FIELDS,
            FieldSpec("tracking_type", "string", "ViewContent, Search, AddToWishlist or Custom"),
            "ViewContent, Search, AddToWishlist by tracking_type, or a Custom event by name",
            money=(
                FieldSpec("value_decimal", "number", "order value, e.g. 42.5"),
                FieldSpec("currency", "string", "ISO 4217"),
            ),
            custom_optional=(
                FieldSpec("custom_event_name", "string", "the name of a Custom event"),
            ),
            user_keys=USER_FIELDS,
        ),
        batch_size=100,
        max_batch_size=MAX_EVENTS,
        rate_limit=None,  # no documented rate; 429s pause the sync
        identity="user: email, phone_number, external_id, ip_address, idfa/aaid, uuid, or a click_id",
    )
    embeds_payloads = True  # the body is the payloads serialised as they are

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = dict(mapped.required)
        found = context_defaults(event)
        tracking_type = fields.pop("tracking_type", None) or TRACKING_TYPES.get(event_type)
        kind: Payload = {"tracking_type": tracking_type}
        if fields.get("custom_event_name") is not None:
            kind["custom_event_name"] = fields.pop("custom_event_name")
        payload: Payload = {"event_at": fields.pop("event_at", None) or event.get("timestamp")}
        if payload["event_at"] is not None:
            payload["event_at"] = converted_or_kept(payload["event_at"], to_iso8601)
        payload["event_type"] = kind
        if fields.get("click_id") is not None:
            payload["click_id"] = fields.pop("click_id")
        metadata = {key: value for key, value in fields.items() if value is not None}
        metadata.update({k: v for k, v in mapped.properties.items() if v is not None})
        if event.get("messageId") is not None:
            metadata.setdefault("conversion_id", str(event["messageId"]))
        payload["user"] = user_with_defaults(
            found, USER_DEFAULTS, mapped.user, REDDIT_USER, "reddit", as_list=False
        )
        if metadata:
            payload["event_metadata"] = metadata
        return payload

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems: list[str] = []
        kind = payload.get("event_type") or {}
        tracking_type = kind.get("tracking_type")
        if tracking_type not in KNOWN_TRACKING_TYPES:
            problems.append(
                f"`tracking_type` {tracking_type!r} is not one of {', '.join(sorted(KNOWN_TRACKING_TYPES))}"
            )
        if tracking_type == "Custom" and not kind.get("custom_event_name"):
            problems.append("Custom events need `custom_event_name`")
        problems.extend(_time_problems(payload.get("event_at")))
        user = payload.get("user") or {}
        unknown = unknown_keys(user, USER_FIELDS, "user")
        if unknown:
            problems.append(unknown)
        if not (set(user) & (set(REDDIT_USER) | {"uuid"}) or payload.get("click_id")):
            problems.append(
                "Reddit matches on email, phone, external_id, ip_address, idfa/aaid, uuid or click_id; the event has none"
            )
        if tracking_type == "Purchase":
            metadata = payload.get("event_metadata") or {}
            problems.extend(
                money_problems({**metadata, "value": metadata.get("value_decimal")}, "Purchase")
            )
        return "reddit: " + "; ".join(problems) if problems else None

    # -- sending -----------------------------------------------------------------

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        body: dict[str, Any] = {"events": list(payloads)}
        if self.config.get("test_mode"):
            body["test_mode"] = True
        return HttpRequest(
            "POST",
            f"{base_url(self.config, HOST)}/api/v2.0/conversions/events/{self.config['account_id']}",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.config['access_token']}",
            },
            json=body,
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        n = len(payloads)
        if 200 <= code < 300:
            return BatchResult.same(n, ItemResult(ItemStatus.DELIVERED, code))
        body = json_object(response) or {}
        invalid = _invalid_events(body, n)
        if code == 400 and invalid:
            return BatchResult(
                tuple(
                    ItemResult(
                        ItemStatus.FAILED, code, f"reddit: {invalid[i]}", response=excerpt(response)
                    )
                    if i in invalid
                    else ItemResult(
                        ItemStatus.RETRY, code, RESENT_WITH_INVALID, 0.0, throttle_scope="item"
                    )
                    for i in range(n)
                )
            )
        message = f"reddit: HTTP {code} {body.get('message') or body.get('error') or ''}".rstrip()
        return whole_batch_outcome(response, n, message, split=code not in (401, 403))


def _time_problems(event_at: Any) -> list[str]:
    try:
        seconds = int(parse_timestamp(event_at).timestamp())
    except TimestampError:
        return [
            f"`event_at` {event_at!r} is not a timestamp (map one, or send events with a timestamp)"
        ]
    too_old = event_age_problem(seconds, MAX_AGE_DAYS)
    if too_old:
        return [too_old]
    if seconds - time.time() > MAX_AHEAD_SECONDS:
        return ["the event is more than 5 minutes in the future; Reddit refuses it"]
    return []


def _invalid_events(body: Mapping[str, Any], n: int) -> dict[int, str]:
    """event index -> Reddit's message, from `invalid_events` (indexes outside the batch ignored)."""
    found: dict[int, str] = {}
    entries = body.get("invalid_events")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        [index] = int_list([entry.get("event_index")]) or [-1]
        if 0 <= index < n:
            found[index] = str(entry.get("error_message") or "invalid event")
    return found
