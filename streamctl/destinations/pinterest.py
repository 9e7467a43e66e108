"""Pinterest Conversions API (API v5): web, app and offline events for an ad account.

Follows Pinterest's API v5 reference, read through its OpenAPI description as generated
into the clients of `oapicf/pinterest-sdk` (`clients/scala-akka/generated/docs/`:
`ConversionEventsApi.md`, `ConversionEventsDataInner.md`, `ConversionEventsUserData.md`,
`ConversionEventsDataInnerCustomData.md`, `ConversionApiResponse.md`,
`ConversionApiResponseEventsInner.md`), whose text is Pinterest's
(https://developers.pinterest.com/docs/api/v5/events-create):

- `POST https://api.pinterest.com/v5/ad_accounts/{ad_account_id}/events` with
  `Authorization: Bearer <access_token>` (a conversion token from Ads Manager) and
  `{"data": [...]}`; `?test=true` "mark[s] the request as a test request. The events
  will not be recorded but the API will still return the same response messages";
  "This endpoint has a rate limit of 5,000 calls per minute per ad account".
- Each event: `event_name` (add_payment_info, add_to_cart, add_to_wishlist,
  app_install, checkout, custom, initiate_checkout, lead, page_visit, search, signup,
  subscribe, view_category, view_content, watch_video), `action_source` (app_android,
  app_ios, web, offline), `event_time` (Unix seconds), `event_id` (required, dedupes
  with the Pinterest tag), `event_source_url`, `opt_out`, `partner_name`, `app_*` and
  `device_*` fields, `language`, `user_data`, `custom_data`.
- `user_data`: "at least one of 1) em, 2) hashed_maids or 3) pair client_ip_address +
  client_user_agent"; `em`, `ph` ("only digits with country code ... Remove any
  symbols, letters, spaces and leading zeros"), `ge` (f, m or n), `db`, `ln`, `fn`,
  `ct`, `st`, `zp`, `country`, `external_id`, `hashed_maids` are arrays of SHA-256;
  `client_ip_address`, `client_user_agent`, `click_id` (the _epik cookie),
  `partner_id` are sent as they are.
- `custom_data`: `currency`, `value` and `predicted_ltv` ("Accepted as a string"),
  `content_ids`, `contents`, `content_name`, `content_category`, `content_brand`,
  `num_items`, `order_id`, `search_string`, `opt_out_type`.
- Answers: 200 and 422 ("Not all events were successfully processed") carry
  `{"num_events_received", "num_events_processed", "events": [{"status": "processed" |
  "failed", "error_message", "warning_message"}]}` in request order — per-event
  outcomes; 400 invalid request; 401, 403 not authorised; 429 rate limited; 503 not
  accepting traffic.
- 1,000 events per request: RudderStack's Pinterest integration
  (`rudderlabs/rudder-transformer`, `src/v0/destinations/pinterest_tag/config.js`,
  `MAX_BATCH_SIZE = 1000`, citing Pinterest's conversions docs); the v5 reference read
  here states no batch limit and no age limit for `event_time` (none is checked).

Outcomes: each event gets its own status from `events` (failed ones archived with
Pinterest's `error_message`); a 400 naming no event is bisected; 401/403 fail without
bisecting; 429 and 5xx retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    ConfigField,
    FieldSpec,
    HttpRequest,
    ItemResult,
    ItemStatus,
    Payload,
    excerpt,
)
from streamctl.destinations.conversions import conversion_event_types
from streamctl.destinations.hashing import META_USER_DATA
from streamctl.destinations.server_events import ServerEventsDestination
from streamctl.destinations.vendor import base_url, json_object, whole_batch_outcome

HOST = "https://api.pinterest.com"
MAX_EVENTS = 1000
CALLS_PER_MINUTE = 5000
ACTION_SOURCES = ("web", "app_android", "app_ios", "offline")

EVENT_NAMES = {
    "purchase": "checkout",
    "lead": "lead",
    "sign_up": "signup",
    "add_to_cart": "add_to_cart",
    "page_view": "page_visit",
}
KNOWN_EVENT_NAMES = frozenset(
    {
        "add_payment_info", "add_to_cart", "add_to_wishlist", "app_install", "checkout",
        "custom", "initiate_checkout", "lead", "page_visit", "search", "signup",
        "subscribe", "view_category", "view_content", "watch_video",
    }
)  # fmt: skip
# Pinterest's user_data: Meta's keys and rules, gender also `n`, plus hashed device ids.
PINTEREST_USER_DATA: Mapping[str, str] = {
    **META_USER_DATA,
    "ge": "gender_fmn",
    "hashed_maids": "external_id",
}
PLAIN_USER_KEYS = frozenset({"client_ip_address", "client_user_agent", "click_id", "partner_id"})
EVENT_FIELDS = (
    FieldSpec("event_id", "string", "deduplication with the Pinterest tag; defaults to messageId"),
    FieldSpec(
        "event_time", "any", "ISO 8601 or epoch; sent as Unix seconds; defaults to timestamp"
    ),
    FieldSpec("action_source", "string", ", ".join(ACTION_SOURCES)),
    FieldSpec("event_source_url", "string", "the page's URL; defaults to context.page.url"),
    FieldSpec("opt_out", "boolean"),
    FieldSpec("partner_name", "string", 'e.g. "ss-partnername"'),
    FieldSpec("language", "string", "ISO 639-1"),
    FieldSpec("app_id", "string"),
    FieldSpec("app_name", "string"),
    FieldSpec("app_version", "string"),
    FieldSpec("device_brand", "string"),
    FieldSpec("device_model", "string"),
    FieldSpec("device_type", "string"),
    FieldSpec("os_version", "string"),
    FieldSpec("wifi", "boolean"),
)
CUSTOM_DATA_FIELDS = (
    FieldSpec("value", "number", "sent as text, as Pinterest takes it"),
    FieldSpec("currency", "string", "ISO 4217"),
    FieldSpec("content_ids", "array"),
    FieldSpec("contents", "array", "[{item_price, quantity, ...}]"),
    FieldSpec("content_name", "string"),
    FieldSpec("content_category", "string"),
    FieldSpec("content_brand", "string"),
    FieldSpec("num_items", "integer"),
    FieldSpec("order_id", "string"),
    FieldSpec("search_string", "string"),
    FieldSpec("predicted_ltv", "number", "sent as text"),
    FieldSpec("opt_out_type", "string", "e.g. LDP"),
)
_TEXT_AMOUNTS = ("value", "predicted_ltv")


class PinterestDestination(ServerEventsDestination):
    """Pinterest Conversions API (v5)."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="pinterest",
        description="Pinterest Conversions API: web, app and offline events, per-event outcomes.",
        docs="https://developers.pinterest.com/docs/api/v5/events-create",
        config=(
            ConfigField(
                "ad_account_id", required=True, description="the ad account the events belong to"
            ),
            ConfigField(
                "access_token",
                required=True,
                secret=True,
                description="conversion access token (Bearer)",
            ),
            ConfigField(
                "action_source",
                default="web",
                choices=ACTION_SOURCES,
                description="default action_source of events that do not map one",
            ),
            ConfigField(
                "test",
                "boolean",
                default=False,
                description="?test=true: Pinterest checks the events and records nothing",
            ),
            ConfigField(
                "base_url", description="replaces https://api.pinterest.com (proxy, tests)"
            ),
        ),
        event_types=conversion_event_types(
            EVENT_NAMES,
            EVENT_FIELDS + CUSTOM_DATA_FIELDS,
            FieldSpec("event_name", "string", "e.g. view_content or custom"),
            "another Pinterest event (view_content, search, custom, ...)",
            user_keys=frozenset(PINTEREST_USER_DATA) | PLAIN_USER_KEYS,
        ),
        batch_size=100,
        max_batch_size=MAX_EVENTS,
        # 5,000 calls per minute per ad account, at the default 100 events per call.
        rate_limit=CALLS_PER_MINUTE / 60 * 100,
        identity="user_data: em, hashed_maids, or client_ip_address + client_user_agent",
    )
    VENDOR = "pinterest"
    EVENT_NAMES = EVENT_NAMES
    KNOWN_EVENT_NAMES = KNOWN_EVENT_NAMES
    ACTION_SOURCES = ACTION_SOURCES
    WEB_SOURCE = "web"
    USER_KINDS = PINTEREST_USER_DATA
    PLAIN_USER_KEYS = PLAIN_USER_KEYS
    TOP_LEVEL = frozenset(spec.name for spec in EVENT_FIELDS)
    PURCHASE_EVENT = "checkout"
    MAX_AGE_DAYS = None
    MATCH_KEYS = ("em", "hashed_maids")
    MATCH_NAME = "Pinterest"

    def shape_custom_data(self, custom_data: Payload) -> Payload:
        for key in _TEXT_AMOUNTS:
            value = custom_data.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                custom_data[key] = str(value)
        return custom_data

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problem = super().check_payload(event_type, payload)
        if payload.get("event_id"):
            return problem
        missing = "`event_id` is required (map one, or send events with a messageId)"
        return f"{problem}; {missing}" if problem else f"pinterest: {missing}"

    # -- sending -----------------------------------------------------------------

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        url = f"{base_url(self.config, HOST)}/v5/ad_accounts/{self.config['ad_account_id']}/events"
        if self.config.get("test"):
            url += "?test=true"
        return HttpRequest(
            "POST",
            url,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.config['access_token']}",
            },
            json={"data": list(payloads)},
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        n = len(payloads)
        body = json_object(response) or {}
        events = body.get("events")
        if code in (200, 422) and isinstance(events, list) and len(events) == n:
            return BatchResult(tuple(_event_outcome(code, answer, response) for answer in events))
        if 200 <= code < 300:
            return BatchResult.same(n, ItemResult(ItemStatus.DELIVERED, code))
        message = f"pinterest: HTTP {code} {body.get('message') or ''}".rstrip()
        if body.get("code") is not None:
            message += f" (code {body['code']})"
        return whole_batch_outcome(response, n, message, split=code not in (401, 403))


def _event_outcome(code: int, answer: Any, response: httpx.Response) -> ItemResult:
    """One event's outcome from its entry in Pinterest's `events` answer."""
    answer = answer if isinstance(answer, dict) else {}
    if answer.get("status") == "processed":
        return ItemResult(ItemStatus.DELIVERED, code)
    reason = answer.get("error_message") or "not processed"
    return ItemResult(ItemStatus.FAILED, code, f"pinterest: {reason}", response=excerpt(response))
