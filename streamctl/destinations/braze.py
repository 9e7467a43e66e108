"""Braze `/users/track`: custom events, purchases and user attributes.

Follows Braze's documentation:

- Track users, https://www.braze.com/docs/api/endpoints/user_data/post_user_track/:
  `POST {endpoint}/users/track`, `Authorization: Bearer <REST API key>`, a JSON body
  `{"attributes": [...], "events": [...], "purchases": [...]}`; every object names its
  user with one of `external_id`, `user_alias` (`{alias_name, alias_label}`),
  `braze_id`, `email` or `phone`. Answers: 201 `{"message": "success"}`; 201 with
  non-fatal `errors` `[{"type", "input_array", "index"}]` — "any data not affected by
  an error in the errors array will still be processed", so only the named objects
  fail; fatal errors otherwise.
- Event object, https://www.braze.com/docs/api/objects_filters/event_object/
  (`name`, `time` ISO 8601, `properties`, `app_id`, `_update_existing_only`) and
  Purchase object, https://www.braze.com/docs/api/objects_filters/purchase_object/
  (`product_id` up to 255 characters, `currency` ISO 4217, `price`, `quantity` 1-100,
  `time`); property names non-empty, at most 255 characters, no leading `$`.
- User attributes object, https://www.braze.com/docs/api/objects_filters/user_attributes_object/
- Rate limits, https://www.braze.com/docs/api/api_limits/: `/users/track` takes 75
  events, 75 purchases and 75 attributes per request, 3,000 requests per 3 seconds;
  every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
  `X-RateLimit-Reset` (UTC epoch seconds).
- Errors & responses, https://www.braze.com/docs/api/errors/: 400 bad request,
  401 unknown or missing key, 403 plan/account, 404 unknown key, 429 rate limited,
  5XX retry with exponential backoff; 202 `{"message": "queued"}` during maintenance.

One payload is a one-event `/users/track` body: the event (or purchase) plus, when the
sync maps a `user` section, an attributes object for the same user. A batch merges
them into one request; `classify` maps each error's `input_array`/`index` back to the
payload that contributed that object.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from streamctl.core.events import Event
from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    ConfigField,
    Destination,
    EventTypeSpec,
    FieldSpec,
    HttpRequest,
    MappedEvent,
    Payload,
    parse_retry_after,
)
from streamctl.destinations.vendor import (
    TimestampError,
    base_url,
    converted_or_kept,
    json_object,
    named_failures,
    seconds_until_reset,
    to_iso8601,
    whole_batch_outcome,
)

TRACK_PATH = "/users/track"
MAX_PER_ARRAY = 75
ARRAYS = ("attributes", "events", "purchases")
IDENTIFIERS = ("external_id", "user_alias", "braze_id", "email", "phone")
CURRENCY = re.compile(r"[A-Z]{3}")
MAX_NAME = 255

_IDENTITY = (
    FieldSpec("external_id", "string", "your user id"),
    FieldSpec("user_alias", "object", "{alias_name, alias_label}"),
    FieldSpec("braze_id", "string", "Braze's user id"),
    FieldSpec("email", "string", "user email (identifies the user when no id is given)"),
    FieldSpec("phone", "string", "user phone in E.164 (identifies the user when no id is given)"),
)
_OBJECT_OPTIONS = (
    FieldSpec("app_id", "string", "app identifier"),
    FieldSpec("_update_existing_only", "boolean", "only update existing profiles"),
)
# Which array of the request body each event type fills.
ARRAY_OF = {"custom": "events", "purchase": "purchases", "identify": "attributes"}


class BrazeDestination(Destination):
    """Braze's `/users/track` endpoint."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="braze",
        description="Braze /users/track: custom events, purchases and user attributes.",
        docs="https://www.braze.com/docs/api/endpoints/user_data/post_user_track/",
        config=(
            ConfigField(
                "api_key", required=True, secret=True, description="REST API key (users.track)"
            ),
            ConfigField(
                "endpoint",
                required=True,
                description="REST endpoint, e.g. https://rest.iad-01.braze.com",
            ),
            ConfigField("base_url", description="replaces `endpoint` (proxy, tests)"),
            ConfigField("app_id", description="app identifier added to every event and purchase"),
        ),
        event_types=(
            EventTypeSpec(
                "custom",
                "a custom event; properties are event properties, user fields update the profile",
                required=(
                    FieldSpec("name", "string", "the event name"),
                    FieldSpec("time", "string", "when it happened, ISO 8601 (sent in UTC)"),
                ),
                optional=_IDENTITY + _OBJECT_OPTIONS,
            ),
            EventTypeSpec(
                "purchase",
                "a purchase; properties are purchase properties, user fields update the profile",
                required=(
                    FieldSpec(
                        "product_id", "string", "product or order name (up to 255 characters)"
                    ),
                    FieldSpec("currency", "string", "ISO 4217 code, e.g. USD"),
                    FieldSpec("price", "number", "unit price in the currency's base unit"),
                    FieldSpec("time", "string", "when it happened, ISO 8601 (sent in UTC)"),
                ),
                optional=(
                    *_IDENTITY,
                    FieldSpec("quantity", "integer", "1-100 (default 1)"),
                    *_OBJECT_OPTIONS,
                ),
            ),
            EventTypeSpec(
                "identify",
                "user attributes: the user section holds the attributes to set",
                optional=(*_IDENTITY, _OBJECT_OPTIONS[1]),
                properties=False,
            ),
        ),
        batch_size=MAX_PER_ARRAY,
        max_batch_size=MAX_PER_ARRAY,
        # 3,000 requests per 3 seconds; counted here in events (a request carries up
        # to 75 of each array), which leaves headroom for plans with hourly limits.
        rate_limit=1000.0,
        identity="one of external_id, user_alias, braze_id, email, phone",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = dict(mapped.required)
        identity = {key: fields[key] for key in IDENTIFIERS if key in fields}
        if event_type == "identify":
            attributes = {**mapped.user, **fields}
            return {"attributes": [attributes]}
        if "time" in fields:
            fields["time"] = converted_or_kept(fields["time"], to_iso8601)
        if self.config.get("app_id") and "app_id" not in fields:
            fields["app_id"] = str(self.config["app_id"])
        if mapped.properties:
            fields["properties"] = mapped.properties
        payload: Payload = {ARRAY_OF.get(event_type, "events"): [fields]}
        if mapped.user:
            payload["attributes"] = [{**identity, **mapped.user}]
        return payload

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        for array in ARRAYS:
            for obj in payload.get(array, []):
                problem = _check_object(array, obj)
                if problem:
                    return problem
        return None

    # -- sending -----------------------------------------------------------------

    def track_url(self) -> str:
        return base_url(self.config, str(self.config.get("endpoint") or "")) + TRACK_PATH

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        body: dict[str, list[Any]] = {}
        for payload in payloads:
            for array in ARRAYS:
                if payload.get(array):
                    body.setdefault(array, []).extend(payload[array])
        return HttpRequest(
            "POST",
            self.track_url(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.config['api_key']}",
            },
            json=body,
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        n = len(payloads)
        code = response.status_code
        body = json_object(response) or {}
        if 200 <= code < 300:
            return _classify_accepted(response, body, payloads)
        message = body.get("message") or response.reason_phrase
        wait = parse_retry_after(response.headers.get("retry-after"))
        if wait is None and code == 429:
            wait = seconds_until_reset(response.headers.get("x-ratelimit-reset"))
        # A fatal 400 may come from one object: bisect. 401/403/404 are about the key.
        return whole_batch_outcome(
            response,
            n,
            f"braze: HTTP {code} {message}",
            split=code not in (401, 403, 404),
            retry_after=wait,
        )


def _check_object(array: str, obj: dict[str, Any]) -> str | None:
    if not any(obj.get(key) not in (None, "") for key in IDENTIFIERS):
        return f"braze: the {array[:-1]} names no user; map one of {', '.join(IDENTIFIERS)}"
    alias = obj.get("user_alias")
    if alias is not None and not (
        isinstance(alias, dict) and alias.get("alias_name") and alias.get("alias_label")
    ):
        return (
            f"braze: `user_alias` must be an object with alias_name and alias_label, got {alias!r}"
        )
    if array == "attributes":
        return None
    if not _is_iso(obj.get("time")):
        return f"braze: `time` {obj.get('time')!r} is not an ISO 8601 timestamp (required)"
    if array == "purchases":
        return _check_purchase(obj)
    return _check_properties(obj.get("properties"))


def _check_purchase(obj: dict[str, Any]) -> str | None:
    product = obj.get("product_id")
    if isinstance(product, str) and len(product) > MAX_NAME:
        return f"braze: `product_id` has {len(product)} characters; Braze accepts up to {MAX_NAME}"
    currency = obj.get("currency")
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        return f"braze: `currency` {currency!r} is not an ISO 4217 code such as USD"
    quantity = obj.get("quantity")
    if quantity is not None and (not isinstance(quantity, int) or not 1 <= quantity <= 100):
        return f"braze: `quantity` {quantity!r} must be an integer from 1 to 100"
    return _check_properties(obj.get("properties"))


def _check_properties(properties: Any) -> str | None:
    if properties is None:
        return None
    if not isinstance(properties, dict):
        return f"braze: `properties` must be an object, got {type(properties).__name__}"
    for name in properties:
        if not name or len(name) > MAX_NAME or name.startswith("$"):
            return f"braze: property name {name!r} must be 1-255 characters and not start with '$'"
    return None


def _is_iso(value: Any) -> bool:
    try:
        to_iso8601(value)
    except TimestampError:
        return False
    return isinstance(value, str)


def _classify_accepted(
    response: httpx.Response, body: dict[str, Any], payloads: Sequence[Payload]
) -> BatchResult:
    """A 2xx: each non-fatal error names one object; the payload that sent it fails, the rest are in."""
    owner: dict[tuple[str, int], int] = {}
    for array in ARRAYS:
        position = 0
        for payload_index, payload in enumerate(payloads):
            for _obj in payload.get(array) or []:
                owner[(array, position)] = payload_index
                position += 1
    reasons: dict[int, list[str]] = {}
    errors = body.get("errors")
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        key = (str(error.get("input_array")), error.get("index"))
        if isinstance(key[1], int) and key in owner:
            reasons.setdefault(owner[key], []).append(
                f"{key[0]}[{key[1]}]: {error.get('type') or 'invalid'}"
            )
    return named_failures(response, len(payloads), reasons, "braze")
