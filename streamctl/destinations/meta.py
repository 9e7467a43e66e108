"""Meta Conversions API: server events for a pixel (dataset), matched to people by hashed identifiers.

Follows Meta's documentation (read through stored copies of developers.facebook.com):

- Using the API, https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api
  — `POST https://graph.facebook.com/{API_VERSION}/{PIXEL_ID}/events` with `data` (an
  array of server events) and `access_token`; "You can send up to 1,000 events in
  `data`"; "If any event you send in a batch is invalid, we reject the entire batch";
  "If any `event_time` in `data` is greater than 7 days in the past, we return an error
  for the entire request" (62 days for `physical_store`); `test_event_code` routes the
  events to Events Manager's Test Events tab. Success: `{"events_received": N,
  "messages": [], "fbtrace_id": "..."}`.
- Server event parameters, .../conversions-api/parameters/server-event — `event_name`,
  `event_time` (Unix seconds), `user_data`, `custom_data`, `event_source_url`,
  `opt_out`, `event_id` ("used to deduplicate events sent by both Meta Pixel and
  Conversions API"), `action_source` (email, website, app, phone_call, chat,
  physical_store, system_generated, business_messaging, other); website events
  require `event_source_url` and `client_user_agent`.
- Customer information parameters, .../conversions-api/parameters/customer-information-parameters
  — `em`, `ph`, `fn`, `ln`, `db`, `ge`, `ct`, `st`, `zp`, `country` "Hashing required",
  `external_id` "Hashing recommended" (string or list), `client_ip_address`,
  `client_user_agent`, `fbc`, `fbp`, `subscription_id`, `fb_login_id`, `lead_id`, ...
  "Do not hash"; at least one must be sent. Normalisation: `hashing.py`.
- Custom data parameters, .../conversions-api/parameters/custom-data — `value` and
  `currency` (required for Purchase), `content_ids`, `contents`, `content_type`,
  `num_items`, `order_id`, `predicted_ltv`, `search_string`, `status`, custom keys.
- Standard events, https://developers.facebook.com/docs/meta-pixel/reference —
  Purchase, Lead, CompleteRegistration, AddToCart, PageView (and ViewContent,
  InitiateCheckout, Search, Subscribe, ...: send them with `custom`).
- Graph API error handling, https://developers.facebook.com/docs/graph-api/guides/error-handling
  — `{"error": {"message", "type", "code", "error_subcode", "error_user_title",
  "error_user_msg", "is_transient", "fbtrace_id"}}`; codes 1 and 2 are temporary
  (retry), 4, 17, 32, 341, 613 and 80000-80014 are throttling (wait, retry), 190 is an
  expired or invalid access token, 10 and 200-299 missing permissions.
- Rate limiting, https://developers.facebook.com/docs/graph-api/overview/rate-limiting —
  the `X-Business-Use-Case-Usage` header's `estimated_time_to_regain_access` (minutes)
  says how long a throttled app waits.

Outcomes. Meta answers a batch as a whole: no per-event errors. A refusal of the events
(code 100 and other parameter errors) is FAILED with `split`, so the engine bisects the
batch and only the bad event is archived; a bad token or missing permission is FAILED
without split (no half can fix it); throttling and temporary errors are RETRY.

Mapping: `required` holds the event's fields (`event_name` for `custom`; the custom_data
fields such as `value` and `currency`), `user` is `user_data` (Meta's keys; plain
email, phone, names, ... are hashed here, `em`/`ph`/... sent as arrays), `properties`
are extra `custom_data`. Defaults when not mapped: `event_id` <- messageId,
`event_time` <- timestamp, `action_source` <- the destination's `action_source`,
`event_source_url` <- context.page.url, `client_ip_address` <- context.ip,
`client_user_agent` <- context.userAgent, `external_id` <- userId, `em` <- the traits'
email.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx
import orjson

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
from streamctl.destinations.vendor import (
    base_url,
    json_object,
    retry_after_or,
    whole_batch_outcome,
)

GRAPH_HOST = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v24.0"
MAX_EVENTS = 1000
THROTTLE_WAIT = 60.0  # seconds, when a throttled answer says nothing about how long
ACTION_SOURCES = (
    "website",
    "app",
    "email",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
)
MAX_AGE_DAYS = 7
MAX_AGE_DAYS_PHYSICAL_STORE = 62

# Graph API error codes (Handling Errors): what to do with the events of the request.
TRANSIENT_CODES = frozenset({1, 2})
THROTTLING_CODES = frozenset({4, 17, 32, 341, 613, *range(80000, 80015)})
ACCESS_CODES = frozenset({10, 102, 190, *range(200, 300)})

EVENT_NAMES = {
    "purchase": "Purchase",
    "lead": "Lead",
    "complete_registration": "CompleteRegistration",
    "add_to_cart": "AddToCart",
    "page_view": "PageView",
}
SERVER_EVENT_FIELDS = (
    FieldSpec(
        "event_id", "string", "deduplication with the pixel's eventID; defaults to messageId"
    ),
    FieldSpec(
        "event_time", "any", "ISO 8601 or epoch; sent as Unix seconds; defaults to timestamp"
    ),
    FieldSpec("action_source", "string", "where it happened: " + ", ".join(ACTION_SOURCES)),
    FieldSpec("event_source_url", "string", "the page's URL; defaults to context.page.url"),
    FieldSpec("opt_out", "boolean", "true: use for attribution only, not ad delivery"),
    FieldSpec("referrer_url", "string"),
    FieldSpec("data_processing_options", "array", 'e.g. ["LDU"] (Limited Data Use)'),
    FieldSpec("data_processing_options_country", "integer"),
    FieldSpec("data_processing_options_state", "integer"),
)
CUSTOM_DATA_FIELDS = (
    FieldSpec("value", "number", "monetary value"),
    FieldSpec("currency", "string", "ISO 4217, e.g. USD"),
    FieldSpec("content_ids", "array"),
    FieldSpec("contents", "array", "[{id, quantity, item_price}]"),
    FieldSpec("content_type", "string", "product | product_group"),
    FieldSpec("content_name", "string"),
    FieldSpec("content_category", "string"),
    FieldSpec("num_items", "integer"),
    FieldSpec("order_id", "string"),
    FieldSpec("predicted_ltv", "number"),
    FieldSpec("search_string", "string"),
    FieldSpec("status", "string"),
)
UNHASHED_USER_DATA = frozenset(
    {
        "client_ip_address",
        "client_user_agent",
        "fbc",
        "fbp",
        "subscription_id",
        "fb_login_id",
        "lead_id",
        "anon_id",
        "madid",
        "page_id",
        "page_scoped_user_id",
        "ctwa_clid",
        "ig_account_id",
        "ig_sid",
    }
)


class MetaDestination(ServerEventsDestination):
    """Meta (Facebook, Instagram) Conversions API."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="meta",
        description="Meta Conversions API: server events for a pixel, with hashed user data.",
        docs="https://developers.facebook.com/docs/marketing-api/conversions-api",
        config=(
            ConfigField("pixel_id", required=True, description="the pixel (dataset) id"),
            ConfigField(
                "access_token",
                required=True,
                secret=True,
                description="Conversions API access token",
            ),
            ConfigField(
                "action_source",
                default="website",
                choices=ACTION_SOURCES,
                description="default action_source of events that do not map one",
            ),
            ConfigField(
                "test_event_code",
                description="send to Events Manager's Test Events (e.g. TEST12345); remove for production",
            ),
            ConfigField(
                "api_version", default=DEFAULT_API_VERSION, description="Graph API version"
            ),
            ConfigField(
                "base_url", description="replaces https://graph.facebook.com (proxy, tests)"
            ),
        ),
        event_types=conversion_event_types(
            EVENT_NAMES,
            SERVER_EVENT_FIELDS + CUSTOM_DATA_FIELDS,
            FieldSpec("event_name", "string", "e.g. ViewContent or DemoRequested"),
            "any standard (ViewContent, Search, ...) or custom event by name",
            user_keys=frozenset(META_USER_DATA) | UNHASHED_USER_DATA,
        ),
        batch_size=100,
        max_batch_size=MAX_EVENTS,
        rate_limit=None,  # Graph API limits are per app and adaptive: the 429s and codes tell
        identity="user_data: at least one customer information parameter (defaults: ip, user agent, userId)",
    )
    VENDOR = "meta"
    EVENT_NAMES = EVENT_NAMES
    ACTION_SOURCES = ACTION_SOURCES
    WEB_SOURCE = "website"
    USER_KINDS = META_USER_DATA
    PLAIN_USER_KEYS = UNHASHED_USER_DATA
    WEB_REQUIRED_USER_KEYS = ("client_user_agent",)
    TOP_LEVEL = frozenset(spec.name for spec in SERVER_EVENT_FIELDS)
    PURCHASE_EVENT = "Purchase"
    MAX_AGE_DAYS = MAX_AGE_DAYS

    def max_age_days(self, action_source: Any) -> int:
        return MAX_AGE_DAYS_PHYSICAL_STORE if action_source == "physical_store" else MAX_AGE_DAYS

    # -- sending -----------------------------------------------------------------

    def events_url(self) -> str:
        version = str(self.config.get("api_version") or DEFAULT_API_VERSION)
        return f"{base_url(self.config, GRAPH_HOST)}/{version}/{self.config['pixel_id']}/events"

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        body: dict[str, Any] = {
            "data": list(payloads),
            "access_token": str(self.config["access_token"]),
        }
        if self.config.get("test_event_code"):
            body["test_event_code"] = str(self.config["test_event_code"])
        return HttpRequest(
            "POST", self.events_url(), headers={"Content-Type": "application/json"}, json=body
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        n = len(payloads)
        if 200 <= code < 300:
            return BatchResult.same(n, ItemResult(ItemStatus.DELIVERED, code))
        error = (json_object(response) or {}).get("error")
        error = error if isinstance(error, dict) else {}
        graph_code = error.get("code")
        message = _error_message(code, error)
        if graph_code in THROTTLING_CODES or code == 429:
            wait = retry_after_or(response, _regain_access_wait(response), THROTTLE_WAIT)
            return BatchResult.same(
                n, ItemResult(ItemStatus.RETRY, code, message, wait, excerpt(response))
            )
        if error.get("is_transient") is True or graph_code in TRANSIENT_CODES or code >= 500:
            retry = ItemResult(ItemStatus.RETRY, code, message, response=excerpt(response))
            return BatchResult.same(n, retry)
        # A bad token or missing permission fails every event alike: bisecting cannot help.
        return whole_batch_outcome(response, n, message, split=graph_code not in ACCESS_CODES)


def _error_message(status: int, error: Mapping[str, Any]) -> str:
    """`meta: HTTP 400 (#100/2804008) Title: what Meta says`, from a Graph API error object."""
    words = ["meta:", f"HTTP {status}"]
    if error.get("code") is not None:
        subcode = f"/{error['error_subcode']}" if error.get("error_subcode") else ""
        words.append(f"(#{error['code']}{subcode})")
    if error.get("error_user_title"):
        words.append(f"{error['error_user_title']}:")
    words.append(str(error.get("error_user_msg") or error.get("message") or "request refused"))
    return " ".join(words)


def _regain_access_wait(response: httpx.Response) -> float | None:
    """Seconds until a throttled app may call again, from X-Business-Use-Case-Usage (minutes)."""
    header = response.headers.get("x-business-use-case-usage")
    if not header:
        return None
    try:
        usage = orjson.loads(header)
    except orjson.JSONDecodeError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (usage.values() if isinstance(usage, dict) else ())
        if isinstance(entries, list)
        for entry in entries
        if isinstance(entry, dict)
    ]
    waits = [m for m in minutes if isinstance(m, (int, float)) and m > 0]
    return max(waits) * 60.0 if waits else None
