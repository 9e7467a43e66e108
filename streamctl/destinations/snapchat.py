"""Snapchat Conversions API v3: web, app and offline events for a Snap Pixel or Snap App.

Follows Snap's documentation (read through stored copies of developers.snap.com):

- Using the API, https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI
  — `POST https://tr.snapchat.com/v3/{PIXEL_ID}/events?access_token={TOKEN}` (a Snap
  App ID in place of the pixel for app events); the body's `data` array holds events
  with `event_name`, `event_time` (Unix seconds), `event_id`, `action_source`,
  `event_source_url`, `user_data` (`em`, `ph` as arrays of SHA-256), `custom_data`
  (`currency`, `value`, `contents`, ...), `app_data` for app events.
- Parameters, https://developers.snap.com/api/marketing-api/Conversions-API/Parameters
  — `em`: "Trim any additional characters (such as spaces) and convert to lowercase
  before hashing" (`Person@Example.com` -> `542d2401...`); `ph`: "including the country
  code, remove any double 0 in front of the country code ... exclude any non-numeric
  characters" (`+44 844 412 4653` -> `448444124653` -> `dc008fda...`); both checked by
  the hashing tests. `fn`, `ln`, `ge`, `db`, `ct`, `st`, `zp`, `country`,
  `external_id` hashed as Meta's; `client_ip_address`, `client_user_agent`,
  `sc_click_id`, `sc_cookie1`, `madid`, `idfa`, `idfv` sent as they are.
- Introduction, https://developers.snap.com/api/marketing-api/Conversions-API/Introduction
  — "events can have a date (timestamp) of maximum 37 days back".
- Verify Set Up, https://developers.snap.com/api/marketing-api/Conversions-API/VerifySetUp
  — the Test Event Tool: `POST /v3/{asset_id}/events/validate?access_token=...`
  validates events without recording them (config `validate_only`).
- Event names and `action_source` values (WEB, MOBILE_APP, OFFLINE), the limit of
  2,000 events per request and the error body `{status, reason}`: Snap's pages as
  transcribed in API Evangelist's OpenAPI description of the API
  (`api-evangelist/snapchat`, `openapi/snapchat-conversion-events-api-openapi.yml`),
  and Segment's Snap Conversions destination (`segmentio/action-destinations`,
  `snap-conversions-api/reportConversionEvent/snap-capi-v3.ts`: identity is an email,
  phone, mobile ad id, or IP address and user agent together). Snap's own response
  reference could not be read; the classification below follows HTTP semantics.

Outcomes: 2xx delivered (unless its `status` says INVALID); 400 refuses the request's
events, so the batch is bisected until the bad event is alone and archived with Snap's
`reason`; 401 and 403 (token) fail without bisecting; 429 and 5xx are retried (after
`Retry-After` when given).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

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

HOST = "https://tr.snapchat.com"
MAX_EVENTS = 2000
MAX_AGE_DAYS = 37
ACTION_SOURCES = ("WEB", "MOBILE_APP", "OFFLINE")
REFUSED_STATUSES = frozenset({"INVALID", "FAILED", "ERROR"})

EVENT_NAMES = {
    "purchase": "PURCHASE",
    "sign_up": "SIGN_UP",
    "add_to_cart": "ADD_CART",
    "page_view": "PAGE_VIEW",
}
KNOWN_EVENT_NAMES = frozenset(
    {
        "PAGE_VIEW", "VIEW_CONTENT", "ADD_CART", "ADD_TO_WISHLIST", "SIGN_UP", "SEARCH",
        "PURCHASE", "ADD_BILLING", "COMPLETE_TUTORIAL", "SUBSCRIBE", "AD_CLICK", "AD_VIEW",
        "START_CHECKOUT", "RATE", "LIST_VIEW", "ADD_TO_CART", "LEVEL_COMPLETE",
        "ACHIEVEMENT_UNLOCKED", "SPEND_CREDITS", "SAVE", "SHARE", "INVITE", "LOGIN",
        "RESERVE", "START_TRIAL",
        *(f"CUSTOM_EVENT_{n}" for n in range(1, 6)),
    }
)  # fmt: skip
PLAIN_USER_KEYS = frozenset(
    {"client_ip_address", "client_user_agent", "sc_click_id", "sc_cookie1", "madid", "idfa", "idfv"}
)
EVENT_FIELDS = (
    FieldSpec("event_id", "string", "deduplication with the Snap Pixel; defaults to messageId"),
    FieldSpec(
        "event_time", "any", "ISO 8601 or epoch; sent as Unix seconds; defaults to timestamp"
    ),
    FieldSpec("action_source", "string", "WEB, MOBILE_APP or OFFLINE"),
    FieldSpec("event_source_url", "string", "the page's URL; defaults to context.page.url"),
    FieldSpec("app_data", "object", "app events: advertiser_tracking_enabled, extinfo, ..."),
    FieldSpec("data_processing_options", "array"),
)
CUSTOM_DATA_FIELDS = (
    FieldSpec("value", "number"),
    FieldSpec("currency", "string", "ISO 4217"),
    FieldSpec("contents", "array", "[{id, quantity, item_price, brand}]"),
    FieldSpec("content_ids", "array"),
    FieldSpec("content_category", "array"),
    FieldSpec("brands", "array"),
    FieldSpec("num_items", "integer"),
    FieldSpec("order_id", "string"),
    FieldSpec("search_string", "string"),
    FieldSpec("sign_up_method", "string"),
)


class SnapchatDestination(ServerEventsDestination):
    """Snapchat Conversions API v3."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="snapchat",
        description="Snapchat Conversions API v3: web, app and offline events, hashed user data.",
        docs="https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI",
        config=(
            ConfigField(
                "pixel_id",
                required=True,
                description="the Snap Pixel id (web, offline) or Snap App id (app events)",
            ),
            ConfigField(
                "access_token", required=True, secret=True, description="Conversions API token"
            ),
            ConfigField(
                "action_source",
                default="WEB",
                choices=ACTION_SOURCES,
                description="default action_source of events that do not map one",
            ),
            ConfigField(
                "validate_only",
                "boolean",
                default=False,
                description="send to /events/validate (Test Event Tool): checked, never recorded",
            ),
            ConfigField("base_url", description="replaces https://tr.snapchat.com (proxy, tests)"),
        ),
        event_types=conversion_event_types(
            EVENT_NAMES,
            EVENT_FIELDS + CUSTOM_DATA_FIELDS,
            FieldSpec("event_name", "string", "e.g. VIEW_CONTENT or CUSTOM_EVENT_1"),
            "any other Snap event (VIEW_CONTENT, START_CHECKOUT, CUSTOM_EVENT_1, ...)",
            user_keys=frozenset(META_USER_DATA) | PLAIN_USER_KEYS,
        ),
        batch_size=100,
        max_batch_size=MAX_EVENTS,
        rate_limit=None,  # no documented rate; 429s pause the sync
        identity="user_data: em, ph, madid/idfa, or client_ip_address + client_user_agent",
    )
    VENDOR = "snapchat"
    EVENT_NAMES = EVENT_NAMES
    KNOWN_EVENT_NAMES = KNOWN_EVENT_NAMES
    ACTION_SOURCES = ACTION_SOURCES
    WEB_SOURCE = "WEB"
    USER_KINDS = META_USER_DATA  # Snap normalises as Meta does (phone without '+')
    PLAIN_USER_KEYS = PLAIN_USER_KEYS
    TOP_LEVEL = frozenset(spec.name for spec in EVENT_FIELDS)
    PURCHASE_EVENT = "PURCHASE"
    MAX_AGE_DAYS = MAX_AGE_DAYS
    MATCH_KEYS = ("em", "ph", "madid", "idfa")
    MATCH_NAME = "Snap"

    # -- sending -----------------------------------------------------------------

    def events_url(self) -> str:
        path = "/events/validate" if self.config.get("validate_only") else "/events"
        return f"{base_url(self.config, HOST)}/v3/{self.config['pixel_id']}{path}"

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        # Snap takes the token only as the access_token query parameter; redaction masks
        # it wherever the URL is shown (preview, errors).
        url = str(
            httpx.URL(self.events_url(), params={"access_token": str(self.config["access_token"])})
        )
        return HttpRequest(
            "POST", url, headers={"Content-Type": "application/json"}, json={"data": list(payloads)}
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        n = len(payloads)
        body = json_object(response) or {}
        status = str(body.get("status") or "").upper()
        message = f"snapchat: HTTP {code}" + (f" {status}" if status else "")
        if body.get("reason"):
            message += f": {body['reason']}"
        if 200 <= code < 300:
            if status in REFUSED_STATUSES:
                failed = ItemResult(ItemStatus.FAILED, code, message, response=excerpt(response))
                return BatchResult.same(n, failed, split=True)
            return BatchResult.same(n, ItemResult(ItemStatus.DELIVERED, code))
        # A bad token fails every event alike: bisecting cannot help.
        return whole_batch_outcome(response, n, message, split=code not in (401, 403))
