"""TikTok Events API 2.0: web, app, offline and CRM events for a pixel or event set.

TikTok's own reference (business-api.tiktok.com/portal/docs, ids 1771100865818625,
1771100779668482, 1771101186666498) is rendered by script and could not be read from
here. The facts below come from the two open integrations that implement it, and from a
vendor's connector guide:

- Segment action-destinations, `packages/destination-actions/src/destinations/tiktok-conversions`
  (`index.ts`, `reportWebEvent/utils.ts`, `reportWebEvent/formatter.ts`):
  `POST https://business-api.tiktok.com/open_api/v1.3/event/track/` with the header
  `Access-Token`; body `{event_source: web|app|offline|crm, event_source_id: <pixel
  code or event set id>, test_event_code?, data: [{event, event_time (Unix seconds),
  event_id, user: {email, phone, external_id, ttclid, ttp, ip, user_agent, locale},
  properties: {contents, content_type, currency, value, query, description,
  order_id, shop_id, content_ids, num_items, predicted_ltv, search_string}, page:
  {url, referrer}, limited_data_use}]}`; email lowercased and SHA-256-hashed, the
  phone in E.164 *with* its '+' then hashed, external_id trimmed, lowercased, hashed;
  each sent as an array.
- RudderStack rudder-transformer, `src/v0/destinations/tiktok_ads` (`config.js`:
  "tiktok docs for max batch size for events 2.0 ... maxBatchSizeV2 = 1000";
  `networkHandler.js`: response `code` 0 and 20001 are success, 40100 is throttling,
  40001 and 40002 are refusals not to retry, 40700 a server error to retry;
  `docs/businesslogic.md`: event names `Purchase`, `Lead`, `CompleteRegistration`,
  `AddToCart`, `ViewContent`, ... and `event_id` from messageId for deduplication
  with the pixel).
- Tealium's TikTok Events connector guide,
  https://docs.tealium.com/server-side-connectors/tiktok-events-connector/ (API v1.3,
  Events 2.0, the same endpoint).

TikTok answers HTTP 200 with a JSON `code` (0: accepted) for most outcomes, and no
per-event errors are documented in the sources read: a refusal of the request's events
is FAILED with `split` (the engine bisects so only the bad event is archived); an
access refusal fails without split; throttling (40100, HTTP 429) and server errors
(40700, 5xxxx codes, HTTP 5xx) are RETRY.

Mapping: `required` holds the event's fields (`event` for `custom`, `value`,
`currency`, ... which go to `properties`; `page_url`/`referrer` to `page`); `user` is
`user` (plain `email`, `phone`, `external_id` hashed here); `properties` are extra
`properties`. Defaults: `event_id` <- messageId, `event_time` <- timestamp, `ip` <-
context.ip, `user_agent` <- context.userAgent, `locale` <- context.locale,
`external_id` <- userId, `email`/`phone` <- the traits', `page_url` <-
context.page.url, `referrer` <- context.page.referrer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from streamctl.core.events import Event
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
    event_time_problem,
    money_problems,
    time_and_id_defaults,
    unknown_keys,
    user_with_defaults,
)
from streamctl.destinations.vendor import (
    base_url,
    json_object,
    retry_after_or,
    whole_batch_outcome,
)

HOST = "https://business-api.tiktok.com"
TRACK_PATH = "/open_api/v1.3/event/track/"
MAX_EVENTS = 1000
THROTTLE_WAIT = 1.0  # seconds: TikTok's limits are per second (QPS)
EVENT_SOURCES = ("web", "app", "offline", "crm")

ACCEPTED_CODES = frozenset({0, 20001})
THROTTLED_CODES = frozenset({40100})
ACCESS_CODES = frozenset({40001, 40104, 40105})  # no permission, missing or invalid token
SERVER_CODES = frozenset({40700})

# user fields TikTok wants hashed, and how each is normalised (E.164 with '+').
TIKTOK_USER: Mapping[str, str] = {
    "email": "email",
    "phone": "phone_e164",
    "external_id": "external_id",
}
USER_FIELDS = frozenset(TIKTOK_USER) | {
    "ttclid", "ttp", "ip", "user_agent", "locale", "idfa", "idfv", "gaid",
}  # fmt: skip

EVENT_NAMES = {
    "purchase": "Purchase",
    "lead": "Lead",
    "complete_registration": "CompleteRegistration",
    "add_to_cart": "AddToCart",
}
EVENT_FIELDS = (
    FieldSpec(
        "event_id", "string", "deduplication with the pixel's event_id; defaults to messageId"
    ),
    FieldSpec(
        "event_time", "any", "ISO 8601 or epoch; sent as Unix seconds; defaults to timestamp"
    ),
    FieldSpec("limited_data_use", "boolean", "Limited Data Use (US state privacy laws)"),
    FieldSpec("page_url", "string", "page.url; defaults to context.page.url"),
    FieldSpec("referrer", "string", "page.referrer; defaults to context.page.referrer"),
)
_PAGE = {"page_url": "url", "referrer": "referrer"}
# user key -> the context_defaults key it defaults to
USER_DEFAULTS = {
    "ip": "ip",
    "user_agent": "user_agent",
    "locale": "locale",
    "external_id": "user_id",
    "email": "email",
    "phone": "phone",
}
_TOP_LEVEL = frozenset({"event", "event_id", "event_time", "limited_data_use"})
PROPERTY_FIELDS = (
    FieldSpec("value", "number"),
    FieldSpec("currency", "string", "ISO 4217"),
    FieldSpec(
        "contents",
        "array",
        "[{content_id, content_name, content_category, price, quantity, brand}]",
    ),
    FieldSpec("content_type", "string", "product | product_group"),
    FieldSpec("content_ids", "array"),
    FieldSpec("order_id", "string"),
    FieldSpec("shop_id", "string"),
    FieldSpec("num_items", "integer"),
    FieldSpec("query", "string"),
    FieldSpec("search_string", "string"),
    FieldSpec("description", "string"),
    FieldSpec("predicted_ltv", "number"),
)


class TikTokDestination(Destination):
    """TikTok Events API 2.0."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="tiktok",
        description="TikTok Events API 2.0: web, app, offline and CRM events, hashed user data.",
        docs="https://business-api.tiktok.com/portal/docs?id=1771100865818625",
        config=(
            ConfigField(
                "event_source_id",
                required=True,
                description="the pixel code (web), TikTok app id (app) or event set id",
            ),
            ConfigField(
                "access_token", required=True, secret=True, description="Events API access token"
            ),
            ConfigField(
                "event_source",
                default="web",
                choices=EVENT_SOURCES,
                description="web | app | offline | crm",
            ),
            ConfigField(
                "test_event_code",
                description="send to Events Manager's Test Events; remove for production",
            ),
            ConfigField(
                "base_url", description="replaces https://business-api.tiktok.com (proxy, tests)"
            ),
        ),
        event_types=conversion_event_types(
            EVENT_NAMES,
            EVENT_FIELDS + PROPERTY_FIELDS,
            FieldSpec("event", "string", "e.g. ViewContent"),
            "any standard (ViewContent, PlaceAnOrder, Search, ...) or custom event by name",
            user_keys=USER_FIELDS,
        ),
        batch_size=100,
        max_batch_size=MAX_EVENTS,
        rate_limit=None,  # per-app QPS limits, answered with code 40100
        identity="user: email, phone, external_id, ttclid, ttp or ip + user_agent (defaults: ip, user agent, userId)",
    )
    embeds_payloads = True  # the body is the payloads serialised as they are

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = dict(mapped.required)
        found = context_defaults(event)
        payload: Payload = {"event": fields.pop("event", None) or EVENT_NAMES.get(event_type)}
        page = {"url": found.get("page_url"), "referrer": found.get("referrer")}
        properties: Payload = {}
        for key, value in fields.items():
            if key in _PAGE:
                page[_PAGE[key]] = value
            elif value is not None:
                (payload if key in _TOP_LEVEL else properties)[key] = value
        properties.update({k: v for k, v in mapped.properties.items() if v is not None})
        time_and_id_defaults(payload, event, "tiktok")
        payload["user"] = user_with_defaults(
            found, USER_DEFAULTS, mapped.user, TIKTOK_USER, "tiktok"
        )
        if properties:
            payload["properties"] = properties
        page = {key: value for key, value in page.items() if value is not None}
        if page:
            payload["page"] = page
        return payload

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems: list[str] = []
        if not isinstance(payload.get("event"), str) or not payload["event"]:
            problems.append(f"`event` must be a non-empty string, got {payload.get('event')!r}")
        if no_time := event_time_problem(payload):
            problems.append(no_time)
        user = payload.get("user") or {}
        unknown = unknown_keys(user, USER_FIELDS, "user")
        if unknown:
            problems.append(unknown)
        if not user:
            problems.append(
                "`user` is empty; TikTok matches on email, phone, external_id, ttclid, ttp or ip"
            )
        if event_type == "purchase":
            problems.extend(money_problems(payload.get("properties") or {}, "Purchase"))
        return "tiktok: " + "; ".join(problems) if problems else None

    # -- sending -----------------------------------------------------------------

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        body: dict[str, Any] = {
            "event_source": str(self.config.get("event_source") or "web"),
            "event_source_id": str(self.config["event_source_id"]),
            "data": list(payloads),
        }
        if self.config.get("test_event_code"):
            body["test_event_code"] = str(self.config["test_event_code"])
        return HttpRequest(
            "POST",
            base_url(self.config, HOST) + TRACK_PATH,
            headers={
                "Content-Type": "application/json",
                "Access-Token": str(self.config["access_token"]),
            },
            json=body,
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        status = response.status_code
        n = len(payloads)
        body = json_object(response) or {}
        code = body.get("code")
        if 200 <= status < 300 and code in ACCEPTED_CODES:
            return BatchResult.same(
                n, ItemResult(ItemStatus.DELIVERED, status, response=excerpt(response))
            )
        message = f"tiktok: HTTP {status}" + (f" code {code}" if code is not None else "")
        message += f" {body.get('message') or ''}".rstrip()
        if code in THROTTLED_CODES or status == 429:
            wait = retry_after_or(response, THROTTLE_WAIT)
            return BatchResult.same(
                n, ItemResult(ItemStatus.RETRY, status, message, wait, excerpt(response))
            )
        is_server_code = isinstance(code, int) and (code in SERVER_CODES or code >= 50000)
        if status >= 500 or is_server_code:
            return BatchResult.same(
                n, ItemResult(ItemStatus.RETRY, status, message, response=excerpt(response))
            )
        if 200 <= status < 300:
            # A refusal inside a 200: the status code alone would call it delivered.
            failed = ItemResult(ItemStatus.FAILED, status, message, response=excerpt(response))
            return BatchResult.same(n, failed, split=code not in ACCESS_CODES)
        return whole_batch_outcome(
            response, n, message, split=code not in ACCESS_CODES and status not in (401, 403)
        )
