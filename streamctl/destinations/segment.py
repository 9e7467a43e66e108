"""Forward events to any Segment-compatible tracking API: Segment, RudderStack, Hightouch,
or another streamctl listener (`base_url`).

Follows Segment's HTTP Tracking API documentation:
https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/

- `POST /v1/batch` with `{"batch": [event, ...], "sentAt": ISO 8601}`; authentication is
  HTTP Basic with the source's write key as the user name and an empty password.
- Limits: 500 KB per batch request, 32 KB per event, 2500 events per batch ("Segment's
  API will respond with 400 Bad Request if these limits are exceeded",
  https://github.com/segmentio/segment-docs/pull/1042).
- Every event needs `userId` or `anonymousId` (alias: `userId` and `previousId`); a
  `track` needs `event`. Segment deduplicates on `messageId`.
- Errors: "Segment returns a 200 response for all API requests except errors caused by
  large payloads and JSON errors (which return 400 responses)"; 429 and 5xx are retried.
  A 400 carries no per-event detail, so the batch is bisected to isolate the bad events.
- Hosts: https://api.segment.io (US), https://events.eu1.segmentapis.com (EU workspaces).
  RudderStack's data plane and streamctl's own listener take the same request.

Event types are the Segment calls (`track`, `identify`, `page`, `screen`, `group`,
`alias`) plus `custom`, a `track` whose event name is mapped. The mapping's `required`
section holds the call's top-level fields; `user` becomes `traits` for identify and
`context.traits` for the other calls; `properties` becomes `properties` (`traits` of
the group for `group`). `messageId` and `timestamp` default to the source event's, so a
forwarded event keeps its identity (and its deduplication downstream) and its time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

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
from streamctl.destinations.multipart import chunk_by_bytes, send_parts, whole_request_result
from streamctl.destinations.vendor import base_url, json_object

HOSTS = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
# `{"batch":[],"sentAt":"2026-11-26T12:00:00.000Z"}` with room to spare.
ENVELOPE_BYTES = 64

COMMON_OPTIONAL = (
    FieldSpec("userId", "string", "your user id"),
    FieldSpec("anonymousId", "string", "the anonymous id (one of userId/anonymousId is needed)"),
    FieldSpec("timestamp", "string", "ISO 8601; defaults to the source event's timestamp"),
    FieldSpec("messageId", "string", "defaults to the source event's messageId (deduplication)"),
    FieldSpec("context", "object", "the Segment context object"),
    FieldSpec("integrations", "object", "per-integration switches"),
)

VIEW_FIELDS = (
    FieldSpec("name", "string", "the page or screen name"),
    FieldSpec("category", "string", "the page or screen category"),
)

# call type -> (required fields, optional fields, where `user` goes, where `properties` go)
CALLS: dict[str, tuple[tuple[FieldSpec, ...], tuple[FieldSpec, ...], str | None, str | None]] = {
    "track": (
        (FieldSpec("event", "string", "the event name"),),
        (),
        "context.traits",
        "properties",
    ),
    "identify": ((), (), "traits", None),
    "page": (
        (),
        VIEW_FIELDS,
        "context.traits",
        "properties",
    ),
    "screen": (
        (),
        VIEW_FIELDS,
        "context.traits",
        "properties",
    ),
    "group": ((FieldSpec("groupId", "string", "the group's id"),), (), "context.traits", "traits"),
    "alias": (
        (
            FieldSpec("previousId", "string", "the old id"),
            FieldSpec("userId", "string", "the new id"),
        ),
        (),
        None,
        None,
    ),
}
CALL_OF_EVENT_TYPE = {**{call: call for call in CALLS}, "custom": "track"}


def _event_type(name: str, description: str) -> EventTypeSpec:
    required, optional, user_goes, properties_go = CALLS[CALL_OF_EVENT_TYPE[name]]
    required_names = {spec.name for spec in required}
    return EventTypeSpec(
        name,
        description,
        required=required,
        optional=tuple(
            spec for spec in (*COMMON_OPTIONAL, *optional) if spec.name not in required_names
        ),
        user_fields=user_goes is not None,
        properties=properties_go is not None,
    )


EVENT_TYPES = (
    _event_type("track", "a track call: an event the user did"),
    _event_type("identify", "an identify call: who the user is (user section -> traits)"),
    _event_type("page", "a page call: a web page view"),
    _event_type("screen", "a screen call: a mobile screen view"),
    _event_type(
        "group", "a group call: the user's account or company (properties -> group traits)"
    ),
    _event_type("alias", "an alias call: previousId becomes userId"),
    _event_type("custom", "a track call with any event name"),
)


class SegmentDestination(Destination):
    catalog = CatalogEntry(
        type="segment",
        description="Forward to any Segment-compatible /v1/batch: Segment, RudderStack, Hightouch, another streamctl.",
        docs="https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/",
        config=(
            ConfigField(
                "write_key",
                required=True,
                secret=True,
                description="the source's write key (HTTP Basic user)",
            ),
            ConfigField(
                "region",
                default="us",
                description="us (api.segment.io) | eu (events.eu1.segmentapis.com)",
            ),
            ConfigField(
                "base_url",
                description="any Segment-compatible host: RudderStack data plane, streamctl listener",
            ),
        ),
        event_types=EVENT_TYPES,
        batch_size=100,
        max_batch_size=MAX_BATCH_EVENTS,
        max_batch_bytes=MAX_BATCH_BYTES,
        rate_limit=None,  # Segment documents no hard limit for server sources
        identity="userId or anonymousId (alias: userId and previousId)",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        call = CALL_OF_EVENT_TYPE.get(event_type, "track")
        _, _, user_goes, properties_go = CALLS[call]
        payload: Payload = {"type": call, **mapped.required}
        for key in ("messageId", "timestamp"):
            if payload.get(key) is None and event.get(key) is not None:
                payload[key] = event[key]
        if mapped.user and user_goes == "traits":
            payload["traits"] = {**(payload.get("traits") or {}), **mapped.user}
        elif mapped.user and user_goes == "context.traits":
            context = dict(payload.get("context") or {})
            context["traits"] = {**(context.get("traits") or {}), **mapped.user}
            payload["context"] = context
        if mapped.properties and properties_go:
            payload[properties_go] = {**(payload.get(properties_go) or {}), **mapped.properties}
        return payload

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems = []
        call = payload.get("type")
        if call == "alias":
            if not _nonempty(payload.get("userId")) or not _nonempty(payload.get("previousId")):
                problems.append("an alias needs userId and previousId")
        elif not _nonempty(payload.get("userId")) and not _nonempty(payload.get("anonymousId")):
            problems.append("the event needs a userId or an anonymousId")
        if call == "track" and not _nonempty(payload.get("event")):
            problems.append(f"a track needs an event name, got {payload.get('event')!r}")
        if call == "group" and not _nonempty(payload.get("groupId")):
            problems.append("a group call needs a groupId")
        size = len(orjson.dumps(payload))
        if size > MAX_EVENT_BYTES:
            problems.append(
                f"the event is {size} bytes; the tracking API takes at most {MAX_EVENT_BYTES}"
            )
        return "; ".join(problems) if problems else None

    # -- sending -----------------------------------------------------------------

    def url(self) -> str:
        region = str(self.config.get("region") or "us")
        return base_url(self.config, HOSTS.get(region, HOSTS["us"])) + "/v1/batch"

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        sent_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return HttpRequest(
            "POST",
            self.url(),
            {"Content-Type": "application/json"},
            json={"batch": list(payloads), "sentAt": sent_at},
            # httpx builds the Basic header at send time, so `preview` never shows the key's base64.
            auth=(str(self.config["write_key"]), ""),
        )

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        # The engine batches by count; the 500 KB request limit is kept here.
        parts = chunk_by_bytes(
            payloads,
            max_bytes=MAX_BATCH_BYTES,
            envelope_bytes=ENVELOPE_BYTES,
            max_items=MAX_BATCH_EVENTS,
        )
        return await send_parts(self, client, event_type, payloads, parts, timeout)

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        if 200 <= code < 300:
            return BatchResult.same(len(payloads), ItemResult(ItemStatus.DELIVERED, code))
        return whole_request_result(response, len(payloads), detail=_error_detail(response))


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _error_detail(response: httpx.Response) -> str | None:
    """Segment's and streamctl's `{"code", "message"}`, RudderStack's plain text."""
    body = json_object(response)
    if body is not None:
        parts = [str(body[key]) for key in ("code", "message", "error") if body.get(key)]
        return ": ".join(parts) or None
    text = response.text.strip()
    return text[:200] or None
