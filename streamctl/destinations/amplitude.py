"""Amplitude HTTP V2 API: events, revenue and identify (`$identify`) in batches.

Follows Amplitude's documentation:

- HTTP V2 API, https://amplitude.com/docs/apis/analytics/http-v2 — `POST /2/httpapi`
  with `{"api_key", "events": [...], "options": {"min_id_length"}}`; each event has
  `event_type` and `user_id` or `device_id` (strings of 5+ characters unless
  `min_id_length` says otherwise), `time` in milliseconds since the epoch,
  `insert_id` (deduplicated for 7 days), `event_properties`, `user_properties`,
  revenue fields `price`/`quantity`/`revenue`/`productId`/`revenueType`.
  Hosts: `https://api2.amplitude.com` (default) and `https://api.eu.amplitude.com` (EU).
  Limits: up to 2,000 events and under 1 MB per request (413 otherwise); 30 events
  per second per user or device (429, wait 30 s); `$identify` events carry user
  property operations (`$set`, `$setOnce`, `$add`, ...) in `user_properties`.
- Batch and retry HTTP V2 API requests,
  https://amplitude.com/docs/apis/analytics/http-api-batching-retries — "Retry 429
  and 5xx responses with backoff. When a 400 response lists rejected events, remove
  those events and resend the rest."
- Response bodies (InvalidRequestError, SilencedDeviceID, PayloadTooLargeError,
  TooManyRequestsForDeviceError), https://amplitude.com/docs/apis/analytics/batch-event-upload
  (shared by HTTP V2): `events_with_invalid_fields`, `events_with_missing_fields`,
  `events_with_invalid_id_lengths` (field -> event indexes), `silenced_events`,
  `throttled_events` (indexes), `throttled_users`, `throttled_devices`,
  `exceeded_daily_quota_users`, `exceeded_daily_quota_devices` (id -> rate).

Partial failures. Amplitude ingests nothing from a request it answers 400 or 429, so
the events it did not name must be sent again. `send` does that itself: the named
events get their outcome (400: failed; 429: retry in 30 s), and the rest go out again
at once in a smaller request, up to `RESEND_ROUNDS` times; events still unresolved after
that are marked RETRY with no delay. `classify` alone (used on its own, e.g. by tests
or another engine) gives the same answer without resending: the unnamed events are
RETRY with `retry_after=0` and the error `UNNAMED_IN_REJECTED_BATCH`.

Throttling is per user or device: a 429 that names `throttled_users`,
`throttled_devices` or `throttled_events` marks those events RETRY with
`throttle_scope="item"`, so only they wait 30 s (and, with ordering per_user, their
users' later events behind them) while the lane keeps delivering everyone else. A 429
that names nobody is a project-wide limit: every event waits, `throttle_scope=
"destination"`, and the lane pauses.

Mapping defaults (when the sync does not map them): `user_id` <- `userId`,
`device_id` <- `anonymousId`, `insert_id` <- `messageId`, `time` <- `timestamp`.
"""

from __future__ import annotations

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
    ItemResult,
    ItemStatus,
    MappedEvent,
    Payload,
    excerpt,
    parse_retry_after,
)
from streamctl.destinations.vendor import (
    base_url,
    converted_or_kept,
    int_list,
    json_object,
    to_epoch_millis,
    whole_batch_outcome,
)

REGION_HOSTS = {"us": "https://api2.amplitude.com", "eu": "https://api.eu.amplitude.com"}
UPLOAD_PATH = "/2/httpapi"
THROTTLE_WAIT = 30.0  # seconds; Amplitude: "pause sending events for that user or device for 30 s"
RESEND_ROUNDS = 2
MAX_EVENTS = 2000
MAX_BYTES = 1_000_000
DEFAULT_MIN_ID_LENGTH = 5
UNNAMED_IN_REJECTED_BATCH = (
    "amplitude: not ingested; the request was rejected for other events, resend"
)

# Index lists of a 400 body whose events are refused for good, and what to say about them.
_REFUSING_FIELD_MAPS = {
    "events_with_invalid_fields": "invalid",
    "events_with_missing_fields": "missing",
    "events_with_invalid_id_lengths": "too short",
}

_IDENTITY = (
    FieldSpec("user_id", "string", "your user id (5+ characters); defaults to userId"),
    FieldSpec("device_id", "string", "device id (5+ characters); defaults to anonymousId"),
    FieldSpec("time", "any", "ISO 8601 or epoch; sent as milliseconds; defaults to timestamp"),
    FieldSpec("insert_id", "string", "deduplication key; defaults to messageId"),
)
_CONTEXT = (
    FieldSpec("session_id", "integer", "session start in epoch milliseconds"),
    FieldSpec("app_version", "string"),
    FieldSpec("platform", "string"),
    FieldSpec("os_name", "string"),
    FieldSpec("os_version", "string"),
    FieldSpec("device_brand", "string"),
    FieldSpec("device_manufacturer", "string"),
    FieldSpec("device_model", "string"),
    FieldSpec("carrier", "string"),
    FieldSpec("country", "string"),
    FieldSpec("region", "string"),
    FieldSpec("city", "string"),
    FieldSpec("dma", "string"),
    FieldSpec("language", "string"),
    FieldSpec("location_lat", "number"),
    FieldSpec("location_lng", "number"),
    FieldSpec("ip", "string", 'IP for geolocation; "$remote" uses the request\'s'),
    FieldSpec("idfa", "string"),
    FieldSpec("idfv", "string"),
    FieldSpec("adid", "string"),
    FieldSpec("android_id", "string"),
    FieldSpec("event_id", "integer"),
    FieldSpec("groups", "object", "group type -> group name(s) (Accounts add-on)"),
)
_REVENUE = (
    FieldSpec("quantity", "integer", "defaults to 1"),
    FieldSpec("revenue", "number", "price x quantity when omitted; negative for refunds"),
    FieldSpec("productId", "string"),
    FieldSpec("revenueType", "string", "e.g. Purchase, Refund"),
)
# Required-section fields of `identify` that become user property operations.
_IDENTIFY_OPERATIONS = {
    "set_once": "$setOnce",
    "add": "$add",
    "append": "$append",
    "unset": "$unset",
}


class AmplitudeDestination(Destination):
    """Amplitude's HTTP V2 API."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="amplitude",
        description="Amplitude HTTP V2 API: events, revenue and user properties.",
        docs="https://amplitude.com/docs/apis/analytics/http-v2",
        config=(
            ConfigField("api_key", required=True, secret=True, description="project API key"),
            ConfigField(
                "region", default="us", choices=("us", "eu"), description="us | eu (data residency)"
            ),
            ConfigField("base_url", description="replaces the regional host (proxy, tests)"),
            ConfigField(
                "min_id_length",
                "integer",
                description="minimum user_id/device_id length (Amplitude: 5)",
            ),
        ),
        event_types=(
            EventTypeSpec(
                "custom",
                "an event; user fields go to user_properties, properties to event_properties",
                required=(FieldSpec("event_type", "string", "the event name"),),
                optional=_IDENTITY + _CONTEXT + _REVENUE + (FieldSpec("price", "number"),),
            ),
            EventTypeSpec(
                "purchase",
                "a revenue event: price x quantity is the revenue",
                required=(
                    FieldSpec("event_type", "string", "the event name, e.g. Order Completed"),
                    FieldSpec("price", "number", "unit price; negative for refunds"),
                ),
                optional=_IDENTITY + _REVENUE + _CONTEXT,
            ),
            EventTypeSpec(
                "identify",
                "user properties ($identify): the user section is $set",
                optional=(
                    *_IDENTITY,
                    FieldSpec("set_once", "object", "properties to $setOnce"),
                    FieldSpec("add", "object", "numeric properties to $add to"),
                    FieldSpec("append", "object", "values to $append to list properties"),
                    FieldSpec("unset", "object", 'properties to $unset (values "-")'),
                    *_CONTEXT,
                ),
                properties=False,
            ),
        ),
        batch_size=100,
        max_batch_size=MAX_EVENTS,
        max_batch_bytes=MAX_BYTES,
        rate_limit=1000.0,  # Starter plan: 1,000 events per second per project
        identity="user_id or device_id (at least one, 5+ characters)",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        payload: Payload = dict(mapped.required)
        if event_type == "identify":
            payload["event_type"] = "$identify"
            operations = {
                op: payload.pop(key) for key, op in _IDENTIFY_OPERATIONS.items() if key in payload
            }
            if mapped.user:
                operations["$set"] = mapped.user
            if operations:
                payload["user_properties"] = operations
        else:
            if mapped.user:
                payload["user_properties"] = mapped.user
            if mapped.properties:
                payload["event_properties"] = mapped.properties
        self._fill_defaults(payload, event)
        return payload

    @staticmethod
    def _fill_defaults(payload: Payload, event: Event) -> None:
        if "user_id" not in payload and "device_id" not in payload:
            if event.get("userId") is not None:
                payload["user_id"] = event["userId"]
            if event.get("anonymousId") is not None:
                payload["device_id"] = event["anonymousId"]
        for key in ("user_id", "device_id"):
            # Amplitude silently drops events whose ids are numbers; ids are strings.
            if isinstance(payload.get(key), (int, float)) and not isinstance(payload[key], bool):
                payload[key] = str(payload[key])
        if "insert_id" not in payload and event.get("messageId"):
            payload["insert_id"] = str(event["messageId"])
        if "time" not in payload and event.get("timestamp") is not None:
            payload["time"] = event["timestamp"]
        if "time" in payload and payload["time"] is not None:
            payload["time"] = converted_or_kept(payload["time"], to_epoch_millis)

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        ids = {
            key: payload.get(key)
            for key in ("user_id", "device_id")
            if payload.get(key) is not None
        }
        if not ids:
            return "amplitude: the event has neither user_id nor device_id (one is required)"
        min_length = int(self.config.get("min_id_length") or DEFAULT_MIN_ID_LENGTH)
        for key, value in ids.items():
            if not isinstance(value, str):
                return f"amplitude: `{key}` must be a string, got {type(value).__name__} {value!r}"
            if len(value) < min_length:
                return f"amplitude: `{key}` {value!r} is shorter than {min_length} characters (min_id_length)"
        if "time" in payload and not isinstance(payload["time"], int):
            return f"amplitude: `time` {payload['time']!r} is not an ISO 8601 timestamp nor epoch milliseconds"
        name = payload.get("event_type")
        if not isinstance(name, str) or not name:
            return f"amplitude: `event_type` must be a non-empty string, got {name!r}"
        if event_type == "identify" and not payload.get("user_properties"):
            return "amplitude: the identify sets nothing; map a user section or set_once/add/append/unset"
        return None

    # -- sending -----------------------------------------------------------------

    def upload_url(self) -> str:
        region = str(self.config.get("region") or "us")
        if region not in REGION_HOSTS:
            msg = f"amplitude destination {self.name!r}: region {region!r} is not one of us, eu"
            raise ValueError(msg)
        return base_url(self.config, REGION_HOSTS[region]) + UPLOAD_PATH

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        body: dict[str, Any] = {"api_key": str(self.config["api_key"]), "events": list(payloads)}
        if self.config.get("min_id_length"):
            body["options"] = {"min_id_length": int(self.config["min_id_length"])}
        return HttpRequest(
            "POST",
            self.upload_url(),
            headers={"Content-Type": "application/json", "Accept": "*/*"},
            json=body,
        )

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        results: list[ItemResult | None] = [None] * len(payloads)
        pending = list(range(len(payloads)))
        for _round in range(1 + RESEND_ROUNDS):
            batch = await super().send(client, event_type, [payloads[i] for i in pending], timeout)
            if batch.split:
                if len(pending) == len(payloads):
                    return batch  # the whole request is refused: the engine bisects it
                # A smaller resend was refused as a whole: leave it to the engine's retry.
                batch = BatchResult.same(len(pending), _unnamed_retry())
            unresolved = []
            for index, item in zip(pending, batch.items, strict=True):
                if item.error == UNNAMED_IN_REJECTED_BATCH:
                    unresolved.append(index)
                results[index] = item
            if not unresolved or len(unresolved) == len(pending):
                break  # nothing left, or no progress: resending the same set would loop
            pending = unresolved
        return BatchResult(tuple(item or _unnamed_retry() for item in results))

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        n = len(payloads)
        if 200 <= code < 300:
            return BatchResult.same(n, ItemResult(ItemStatus.DELIVERED, code))
        body = json_object(response) or {}
        if code == 400:
            return _classify_invalid(response, body, n)
        if code == 413:
            error = f"amplitude: HTTP 413 payload too large ({n} events)"
            return whole_batch_outcome(response, n, error, split=True)
        if code == 429:
            return _classify_throttled(response, body, payloads)
        error = f"amplitude: HTTP {code} {body.get('error') or ''}".rstrip()
        return whole_batch_outcome(response, n, error)


def _unnamed_retry(code: int | None = None) -> ItemResult:
    # Caught in a request refused for other events: nothing to wait for, no one to slow.
    return ItemResult(
        ItemStatus.RETRY, code, UNNAMED_IN_REJECTED_BATCH, retry_after=0.0, throttle_scope="item"
    )


def _classify_invalid(response: httpx.Response, body: dict[str, Any], n: int) -> BatchResult:
    """A 400: the events it names are refused for good, the throttled ones wait, the rest resend."""
    reasons: dict[int, list[str]] = {}
    for key, adjective in _REFUSING_FIELD_MAPS.items():
        fields = body.get(key)
        if isinstance(fields, dict):
            for field_name, indexes in fields.items():
                for index in int_list(indexes):
                    reasons.setdefault(index, []).append(f"{adjective} `{field_name}`")
    for index in int_list(body.get("silenced_events")):
        reasons.setdefault(index, []).append("device_id silenced by Amplitude")
    throttled = set(int_list(body.get("throttled_events"))) - set(reasons)
    named = {i for i in reasons if 0 <= i < n} | {i for i in throttled if 0 <= i < n}
    if not named:
        # A request-level problem (missing api_key, bad JSON) or an unexplained refusal:
        # let the engine bisect so one bad event cannot hold back the others.
        error = f"amplitude: HTTP 400 {body.get('error') or 'invalid request'}"
        if body.get("missing_field"):
            error += f" (missing {body['missing_field']})"
        return whole_batch_outcome(response, n, error, split=True)
    items = []
    for index in range(n):
        if index in reasons:
            error = f"amplitude: HTTP 400 {body.get('error') or 'invalid event'}: " + ", ".join(
                reasons[index]
            )
            items.append(ItemResult(ItemStatus.FAILED, 400, error, response=excerpt(response)))
        elif index in throttled:
            items.append(
                ItemResult(
                    ItemStatus.RETRY,
                    400,
                    "amplitude: throttled",
                    THROTTLE_WAIT,
                    throttle_scope="item",
                )
            )
        else:
            items.append(_unnamed_retry(400))
    return BatchResult(tuple(items))


def _classify_throttled(
    response: httpx.Response, body: dict[str, Any], payloads: Sequence[Payload]
) -> BatchResult:
    """A 429: throttled users and devices wait 30 s; the others were only caught in the same request."""
    n = len(payloads)
    throttled = {i for i in int_list(body.get("throttled_events")) if 0 <= i < n}
    users = _keys(body, "throttled_users", "exceeded_daily_quota_users")
    devices = _keys(body, "throttled_devices", "exceeded_daily_quota_devices")
    for index, payload in enumerate(payloads):
        if payload.get("user_id") in users or payload.get("device_id") in devices:
            throttled.add(index)
    header_wait = parse_retry_after(response.headers.get("retry-after"))
    wait = max(THROTTLE_WAIT, header_wait or 0.0)
    error = f"amplitude: HTTP 429 {body.get('error') or 'too many requests'}"
    if not throttled:
        # Nothing named (a project-wide limit): everyone waits.
        return BatchResult.same(
            n, ItemResult(ItemStatus.RETRY, 429, error, wait, excerpt(response))
        )
    # Only the named users and devices are over their limit: they wait, the rest go on.
    items = [
        ItemResult(ItemStatus.RETRY, 429, error, wait, excerpt(response), throttle_scope="item")
        if i in throttled
        else _unnamed_retry(429)
        for i in range(n)
    ]
    return BatchResult(tuple(items))


def _keys(body: dict[str, Any], *names: str) -> set[str]:
    keys: set[str] = set()
    for name in names:
        value = body.get(name)
        if isinstance(value, dict):
            keys.update(str(key) for key in value)
    return keys
