"""Google Analytics 4 through the Measurement Protocol (web streams).

Follows Google's documentation:

- Measurement Protocol reference (transport, body, limits, reserved names):
  https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference
  `POST /mp/collect?measurement_id=G-XXXX&api_secret=SECRET` on www.google-analytics.com,
  or region1.google-analytics.com to have the data processed in the EU; body
  `{client_id, user_id?, timestamp_micros?, user_properties?, consent?,
  non_personalized_ads?, ip_override?, events: [{name, params, timestamp_micros?}]}`, at most 25 events per request, body under 130 kB, timestamps at
  most 72 hours in the past; an event's own `timestamp_micros` overrides the request's.
- Sending events: https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events
  (`session_id` and `engagement_time_msec` params make events show in realtime reports).
- Recommended events and their parameters (`purchase`, `refund`, `add_to_cart`, ...):
  https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference/events
- Event collection limits (name 40 characters, 25 params, param value 100 characters
  with page_location 1000 / page_referrer 420 / page_title 300, user property name 24 and
  value 36 characters, 200 items, 27 custom item params, user_id 256 characters):
  https://support.google.com/analytics/answer/9267744
- Event naming rules (letter first, then letters, digits, underscores):
  https://support.google.com/analytics/answer/13316687

GA4 answers 2xx even to payloads it then drops ("The Measurement Protocol doesn't return
an error code if the payload is malformed"), so every documented limit is checked in
`check_payload` before sending: a payload that breaks one is a `mapping_error` naming
the limit, instead of an event reported `delivered` that never shows in GA4.
With `validate: true`, each request first goes to GA4's validation server
(`/debug/mp/collect`, which records nothing; Validating events,
https://developers.google.com/analytics/devguides/collection/protocol/ga4/validating-events):
the events its `validationMessages` name ("Event at index: [i] ...") are archived with
GA4's message, a message naming no event fails the whole request, and only the rest go
to `/mp/collect`. It doubles the requests: meant for rollouts and staging.

Payloads and requests. One streamctl payload is a complete Measurement Protocol body
carrying one event. A request carries the events of ONE client (`client_id`, `user_id`,
`user_properties`, `consent`, ... are request-level), so `send` groups the batch's
payloads by their request-level fields and sends one request per group of at most 25
events (concurrently), then merges the outcomes back in payload order. `build_request` takes payloads of one
client (what `preview` shows); it refuses a mix.

Mapping sections: `required` holds the event's fields (`client_id`, the recommended
event's parameters, `name` for `custom`); `user` becomes `user_properties`
(`{"plan": {"value": "pro"}}`); `properties` become extra event `params`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

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
    excerpt,
)
from streamctl.destinations.multipart import chunk_by_bytes, send_parts, whole_request_result
from streamctl.destinations.timestamps import epoch_micros
from streamctl.destinations.vendor import base_url, json_object

HOSTS = {"global": "https://www.google-analytics.com", "eu": "https://region1.google-analytics.com"}

MAX_EVENTS_PER_REQUEST = 25
MAX_BODY_BYTES = 130_000
MAX_NAME_LENGTH = 40  # event names and event parameter names
MAX_PARAMS = 25
MAX_PARAM_VALUE_LENGTH = 100
PARAM_VALUE_LENGTH_EXCEPTIONS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
MAX_USER_PROPERTIES = 25
MAX_USER_PROPERTY_NAME_LENGTH = 24
MAX_USER_PROPERTY_VALUE_LENGTH = 36
MAX_USER_ID_LENGTH = 256
MAX_ITEMS = 200
MAX_CUSTOM_ITEM_PARAMS = 27
MAX_TIMESTAMP_AGE = timedelta(hours=72)

RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_USER_PROPERTY_PREFIXES = ("firebase_", "ga_", "google_")
RESERVED_EVENT_NAMES = frozenset(
    {
        "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward", "adunit_exposure",
        "app_background", "app_clear_data", "app_exception", "app_remove", "app_store_refund",
        "app_store_subscription_cancel", "app_store_subscription_convert",
        "app_store_subscription_renew", "app_update", "app_upgrade", "dynamic_link_app_open",
        "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
        "firebase_in_app_message_action", "firebase_in_app_message_dismiss",
        "firebase_in_app_message_impression", "first_open", "first_visit", "in_app_purchase",
        "notification_dismiss", "notification_foreground", "notification_open",
        "notification_receive", "os_update", "session_start", "session_start_with_rollout",
        "user_engagement",
    }
)  # fmt: skip
RESERVED_PARAM_NAMES = frozenset({"firebase_conversion"})
RESERVED_USER_PROPERTY_NAMES = frozenset(
    {
        "first_open_time",
        "first_visit_time",
        "last_deep_link_referrer",
        "user_id",
        "first_open_after_install",
    }
)
# The documented item fields; any other key of an item is a custom item parameter.
ITEM_FIELDS = frozenset(
    {
        "item_id", "item_name", "affiliation", "coupon", "discount", "index", "item_brand",
        "item_category", "item_category2", "item_category3", "item_category4", "item_category5",
        "item_list_id", "item_list_name", "item_variant", "location_id", "price", "quantity",
        "creative_name", "creative_slot", "promotion_id", "promotion_name",
    }
)  # fmt: skip

# Request-level fields of every event type; the rest of `required` are event params.
IDENTITY = (
    FieldSpec(
        "client_id", "string", "the browser's GA client id (the _ga cookie), e.g. from anonymousId"
    ),
)
COMMON_OPTIONAL = (
    FieldSpec("user_id", "string", "your user id (User-ID), at most 256 characters"),
    FieldSpec(
        "timestamp",
        "string",
        "when the event happened (ISO 8601); sent as timestamp_micros, at most 72 h ago",
    ),
    FieldSpec("session_id", "string", "the GA session id, for sessions and realtime reports"),
    FieldSpec("engagement_time_msec", "integer", "engagement time in ms, for realtime reports"),
    FieldSpec(
        "consent",
        "object",
        'the user\'s consent: {"ad_user_data": "GRANTED"|"DENIED", "ad_personalization": ...}',
    ),
    FieldSpec("non_personalized_ads", "boolean", "true: not for personalized ads"),
    FieldSpec("ip_override", "string", "the IP address GA derives the location from"),
)
# Request-level fields besides client_id: payloads differing in them go in separate requests.
REQUEST_FIELDS = ("user_id", "consent", "non_personalized_ads", "ip_override")
CONSENT_KEYS = frozenset({"ad_user_data", "ad_personalization"})
CONSENT_VALUES = frozenset({"GRANTED", "DENIED"})
# Recommended events where GA4 computes revenue: `value` needs `currency`.
MONETARY_EVENT_TYPES = frozenset(
    {"purchase", "refund", "add_to_cart", "begin_checkout", "view_item"}
)

CURRENCY = FieldSpec(
    "currency", "string", "ISO 4217 currency of value (required when value is set)"
)
VALUE = FieldSpec("value", "number", "monetary value of the event")
ITEMS = FieldSpec(
    "items", "array", "the items: objects with item_id or item_name, price, quantity, ..."
)


def _event_type(
    name: str,
    description: str,
    required: tuple[FieldSpec, ...] = (),
    optional: tuple[FieldSpec, ...] = (),
) -> EventTypeSpec:
    return EventTypeSpec(
        name,
        description,
        required=IDENTITY + required,
        optional=COMMON_OPTIONAL + optional,
        user_fields=True,
        properties=True,
    )


EVENT_TYPES = (
    _event_type(
        "purchase",
        "recommended event: a completed purchase",
        required=(FieldSpec("transaction_id", "string", "unique id of the transaction"), ITEMS),
        optional=(
            CURRENCY,
            VALUE,
            FieldSpec("coupon", "string"),
            FieldSpec("shipping", "number"),
            FieldSpec("tax", "number"),
        ),
    ),
    _event_type(
        "refund",
        "recommended event: a refunded transaction",
        required=(FieldSpec("transaction_id", "string", "the refunded transaction"),),
        optional=(
            CURRENCY,
            VALUE,
            FieldSpec("coupon", "string"),
            FieldSpec("shipping", "number"),
            FieldSpec("tax", "number"),
            ITEMS,
        ),
    ),
    _event_type(
        "add_to_cart",
        "recommended event: items added to a cart",
        required=(ITEMS,),
        optional=(CURRENCY, VALUE),
    ),
    _event_type(
        "begin_checkout",
        "recommended event: checkout started",
        required=(ITEMS,),
        optional=(CURRENCY, VALUE, FieldSpec("coupon", "string")),
    ),
    _event_type(
        "view_item",
        "recommended event: an item was viewed",
        required=(ITEMS,),
        optional=(CURRENCY, VALUE),
    ),
    _event_type(
        "sign_up", "recommended event: a user signed up", optional=(FieldSpec("method", "string"),)
    ),
    _event_type(
        "login", "recommended event: a user logged in", optional=(FieldSpec("method", "string"),)
    ),
    _event_type(
        "page_view",
        "a page view",
        optional=(
            FieldSpec("page_location", "string", "full URL, at most 1000 characters"),
            FieldSpec("page_referrer", "string", "referrer URL, at most 420 characters"),
            FieldSpec("page_title", "string", "page title, at most 300 characters"),
        ),
    ),
    _event_type(
        "custom",
        "any event by name; its params come from the properties section",
        required=(
            FieldSpec(
                "name",
                "string",
                "event name: a letter first, then letters, digits, _; 40 characters",
            ),
        ),
    ),
)


class GA4Destination(Destination):
    catalog = CatalogEntry(
        type="ga4",
        description="Google Analytics 4 via the Measurement Protocol (web streams).",
        docs="https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference",
        config=(
            ConfigField(
                "measurement_id",
                required=True,
                description="the web stream's measurement id, G-XXXXXXX",
            ),
            ConfigField(
                "api_secret",
                required=True,
                secret=True,
                description="a Measurement Protocol API secret of the stream",
            ),
            ConfigField(
                "region",
                default="global",
                description="global (www.google-analytics.com) | eu (region1.google-analytics.com)",
            ),
            ConfigField("base_url", description="replaces the GA host (proxies, tests)"),
            ConfigField(
                "validate",
                "boolean",
                default=False,
                description="ask GA4's validation server (/debug/mp/collect) first; archive the events it flags",
            ),
        ),
        event_types=EVENT_TYPES,
        batch_size=MAX_EVENTS_PER_REQUEST,
        max_batch_size=MAX_EVENTS_PER_REQUEST,
        max_batch_bytes=MAX_BODY_BYTES,
        rate_limit=None,  # no documented request rate limit
        identity="client_id (required); user_id optional",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = dict(mapped.required)
        body: Payload = {"client_id": fields.pop("client_id", None)}
        for key in REQUEST_FIELDS:
            value = fields.pop(key, None)
            if value is not None:
                body[key] = value
        if mapped.user:
            body["user_properties"] = {
                name: {"value": value} for name, value in mapped.user.items()
            }
        timestamp = fields.pop("timestamp", None)
        name = fields.pop("name", None) if event_type == "custom" else event_type
        # GA4 ignores a parameter without a value; sending nulls would only trip the checks.
        params = {
            key: value
            for key, value in {**fields, **mapped.properties}.items()
            if value is not None
        }
        ga_event: Payload = {"name": name, "params": params}
        if timestamp is not None:
            ga_event["timestamp_micros"] = epoch_micros(timestamp, field="timestamp")
        body["events"] = [ga_event]
        return body

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems = [
            *_check_request_fields(payload),
            *(
                problem
                for ga_event in payload.get("events", [])
                for problem in _check_event(ga_event)
            ),
        ]
        if event_type in MONETARY_EVENT_TYPES:
            problems.extend(_check_currency(payload))
        size = len(orjson.dumps(payload))
        if size >= MAX_BODY_BYTES:
            problems.append(
                f"the request body is {size} bytes; GA4 takes less than {MAX_BODY_BYTES}"
            )
        return "; ".join(problems) if problems else None

    # -- sending -----------------------------------------------------------------

    def url(self, *, debug: bool = False) -> str:
        """The collect URL; `debug`: the validation server's, which checks and never records."""
        region = str(self.config.get("region") or "global")
        host = base_url(self.config, HOSTS.get(region, HOSTS["global"]))
        query = urlencode(
            {
                "measurement_id": self.config["measurement_id"],
                "api_secret": self.config["api_secret"],
            }
        )
        return f"{host}{'/debug' if debug else ''}/mp/collect?{query}"

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        keys = {_client_key(payload) for payload in payloads}
        if len(keys) > 1:
            msg = f"a GA4 request carries the events of one client; got {len(keys)} clients (send() groups them)"
            raise ValueError(msg)
        body = {key: value for key, value in payloads[0].items() if key != "events"}
        body["events"] = [ga_event for payload in payloads for ga_event in payload["events"]]
        return HttpRequest("POST", self.url(), {"Content-Type": "application/json"}, json=body)

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        parts = client_parts(payloads)
        if not self.config.get("validate"):  # the loader makes `${ENV}` strings booleans
            return await send_parts(self, client, event_type, payloads, parts, timeout)
        outcomes = await asyncio.gather(
            *(
                self._validate_then_send(client, event_type, payloads, part, timeout)
                for part in parts
            )
        )
        items: dict[int, ItemResult] = {}
        for outcome in outcomes:
            items.update(outcome)
        return BatchResult(tuple(items[index] for index in range(len(payloads))))

    async def _validate_then_send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        part: Sequence[int],
        timeout: float,
    ) -> dict[int, ItemResult]:
        """One client's request through the validation server, then the events it passed to
        /mp/collect. Validation is a separate request: GA4 records nothing sent to it."""
        request = self.build_request(event_type, [payloads[i] for i in part])
        try:
            response = await client.post(
                self.url(debug=True),
                headers=dict(request.headers),
                content=request.body(),
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            item = ItemResult(
                ItemStatus.RETRY, error=f"GA4 validation server: {type(exc).__name__}: {exc}"
            )
            return dict.fromkeys(part, item)
        if not 200 <= response.status_code < 300:
            result = whole_request_result(response, len(part), detail="GA4 validation server")
            return dict(zip(part, result.items, strict=True))
        flagged = validation_failures(response, len(part))
        outcomes = {
            part[position]: ItemResult(
                ItemStatus.FAILED,
                response.status_code,
                error=f"GA4 validation: {message}",
                response=excerpt(response),
            )
            for position, message in flagged.items()
        }
        passed = [index for position, index in enumerate(part) if position not in flagged]
        if passed:
            sent = await Destination.send(
                self, client, event_type, [payloads[i] for i in passed], timeout
            )
            outcomes.update(zip(passed, sent.items, strict=True))
        return outcomes


_EVENT_INDEX = re.compile(r"index: \[(\d+)\]|events\[(\d+)\]")


def validation_failures(response: httpx.Response, n: int) -> dict[int, str]:
    """`{"validationMessages": [{fieldPath, description, validationCode}]}` -> {event index: message}.

    GA4 names the event in the description ("Event at index: [0] has invalid name ...")
    or the field path; a message naming no event is about the request (client_id, user
    properties) and flags every event of it.
    """
    body = json_object(response) or {}
    messages = body.get("validationMessages")
    flagged: dict[int, str] = {}
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, Mapping):
            continue
        text = f"{message.get('validationCode', 'INVALID')}: {message.get('description') or message.get('fieldPath')}"
        match = _EVENT_INDEX.search(
            f"{message.get('description', '')} {message.get('fieldPath', '')}"
        )
        index = int(match.group(1) or match.group(2)) if match else None
        for position in [index] if index is not None and index < n else range(n):
            flagged[position] = f"{flagged[position]}; {text}" if position in flagged else text
    return flagged


def client_parts(payloads: Sequence[Payload]) -> list[list[int]]:
    """Payload indexes grouped by client (first-seen order), then cut to 25 events and 130 kB."""
    groups: dict[bytes, list[int]] = {}
    for index, payload in enumerate(payloads):
        groups.setdefault(_client_key(payload), []).append(index)
    parts: list[list[int]] = []
    for indexes in groups.values():
        group = [payloads[i] for i in indexes]
        for chunk in chunk_by_bytes(
            group, max_bytes=MAX_BODY_BYTES, max_items=MAX_EVENTS_PER_REQUEST
        ):
            parts.append([indexes[i] for i in chunk])
    return parts


def _client_key(payload: Payload) -> bytes:
    """The request-level fields: payloads with equal keys can share one request."""
    return orjson.dumps(
        {k: v for k, v in payload.items() if k != "events"}, option=orjson.OPT_SORT_KEYS
    )


# -- GA4's limits ------------------------------------------------------------------


def _check_request_fields(payload: Payload) -> list[str]:
    problems: list[str] = []
    client_id = payload.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        problems.append(f"client_id must be a non-empty string, got {client_id!r}")
    user_id = payload.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > MAX_USER_ID_LENGTH):
        problems.append(f"user_id must be a string of at most {MAX_USER_ID_LENGTH} characters")
    consent = payload.get("consent")
    if consent is not None and (
        not isinstance(consent, Mapping)
        or not set(consent) <= CONSENT_KEYS
        or not set(consent.values()) <= CONSENT_VALUES
    ):
        problems.append(
            f"consent must map ad_user_data / ad_personalization to GRANTED or DENIED, got {consent!r}"
        )
    properties = payload.get("user_properties") or {}
    if len(properties) > MAX_USER_PROPERTIES:
        problems.append(
            f"{len(properties)} user properties; GA4 takes at most {MAX_USER_PROPERTIES}"
        )
    for name, wrapper in properties.items():
        problems.extend(
            _check_user_property(
                name, wrapper.get("value") if isinstance(wrapper, Mapping) else wrapper
            )
        )
    return problems


def _check_user_property(name: str, value: Any) -> list[str]:
    problems = []
    if len(name) > MAX_USER_PROPERTY_NAME_LENGTH:
        problems.append(
            f"user property name {name!r} is longer than {MAX_USER_PROPERTY_NAME_LENGTH} characters"
        )
    if name in RESERVED_USER_PROPERTY_NAMES or name.startswith(RESERVED_USER_PROPERTY_PREFIXES):
        problems.append(f"user property name {name!r} is reserved by GA4")
    if isinstance(value, str) and len(value) > MAX_USER_PROPERTY_VALUE_LENGTH:
        problems.append(
            f"user property {name!r} value is longer than {MAX_USER_PROPERTY_VALUE_LENGTH} characters"
        )
    elif value is not None and not isinstance(value, (str, int, float)):
        problems.append(
            f"user property {name!r} must be a string or a number, got {type(value).__name__}"
        )
    return problems


def _check_event(ga_event: Mapping[str, Any]) -> list[str]:
    name = ga_event.get("name")
    problems = _check_name("event name", name)
    if isinstance(name, str) and name in RESERVED_EVENT_NAMES:
        problems.append(f"event name {name!r} is reserved by GA4")
    params = ga_event.get("params") or {}
    counted = [key for key in params if key != "items"]
    if len(counted) > MAX_PARAMS:
        problems.append(
            f"event {name!r} has {len(counted)} parameters; GA4 takes at most {MAX_PARAMS}"
        )
    for key, value in params.items():
        problems.extend(_check_param(key, value))
    timestamp = ga_event.get("timestamp_micros")
    if isinstance(timestamp, int):
        problems.extend(_check_timestamp(timestamp))
    return problems


def _check_name(what: str, name: Any) -> list[str]:
    if not isinstance(name, str) or not name:
        return [f"{what} must be a non-empty string, got {name!r}"]
    problems = []
    if len(name) > MAX_NAME_LENGTH:
        problems.append(f"{what} {name!r} is longer than {MAX_NAME_LENGTH} characters")
    if not name[0].isalpha() or not all(ch.isalnum() or ch == "_" for ch in name):
        problems.append(
            f"{what} {name!r} must start with a letter and hold only letters, digits and _"
        )
    if name.startswith(RESERVED_PREFIXES):
        problems.append(
            f"{what} {name!r} uses a prefix reserved by GA4 ({', '.join(RESERVED_PREFIXES)})"
        )
    return problems


def _check_param(key: str, value: Any) -> list[str]:
    problems = _check_name("parameter name", key)
    if key in RESERVED_PARAM_NAMES:
        problems.append(f"parameter name {key!r} is reserved by GA4")
    if key == "items":
        return problems + _check_items(value)
    if isinstance(value, str):
        limit = PARAM_VALUE_LENGTH_EXCEPTIONS.get(key, MAX_PARAM_VALUE_LENGTH)
        if len(value) > limit:
            problems.append(
                f"parameter {key!r} value is {len(value)} characters; GA4 keeps at most {limit}"
            )
    elif not isinstance(value, (int, float)):
        problems.append(
            f"parameter {key!r} must be a string or a number, got {type(value).__name__}"
        )
    return problems


def _check_items(items: Any) -> list[str]:
    if not isinstance(items, list):
        return [f"items must be an array, got {type(items).__name__}"]
    problems = []
    if len(items) > MAX_ITEMS:
        problems.append(f"{len(items)} items; GA4 takes at most {MAX_ITEMS} per event")
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            problems.append(f"items[{position}] must be an object, got {type(item).__name__}")
            continue
        if item.get("item_id") is None and item.get("item_name") is None:
            problems.append(f"items[{position}] needs item_id or item_name")
        custom = [key for key in item if key not in ITEM_FIELDS]
        if len(custom) > MAX_CUSTOM_ITEM_PARAMS:
            problems.append(
                f"items[{position}] has {len(custom)} custom parameters; GA4 takes at most {MAX_CUSTOM_ITEM_PARAMS}"
            )
    return problems


def _check_currency(payload: Payload) -> list[str]:
    return [
        f"event {ga_event.get('name')!r} sets value without currency; GA4 needs both for revenue"
        for ga_event in payload.get("events", [])
        if "value" in (ga_event.get("params") or {})
        and "currency" not in (ga_event.get("params") or {})
    ]


def _check_timestamp(micros: int) -> list[str]:
    now = datetime.now(UTC)
    when = datetime.fromtimestamp(micros / 1_000_000, UTC)
    if when < now - MAX_TIMESTAMP_AGE:
        return [f"timestamp {when.isoformat()} is more than 72 hours old; GA4 drops such events"]
    return []
