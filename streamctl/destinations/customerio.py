"""Customer.io (Journeys) Track API: people (identify) and their events, pages, screens.

Follows Customer.io's Track API documentation (https://docs.customer.io/api/track/):

- Hosts: https://track.customer.io (US), https://track-eu.customer.io (EU; "the only
  difference ... is the subdomain"). Authentication: HTTP Basic, site id : API key.
- v2 batch, the default (`api: v2`): `POST /api/v2/batch` with
  `{"batch": [{"type": "person", "identifiers": {"id"|"email"|"anonymous_id": ...},
  "action": "identify"|"event"|"page"|"screen", "name", "id", "timestamp",
  "attributes"}]}`; "Your request must be smaller than 500kb", each entry at most 32 KB.
  People and their events of many users share one request, and the answer names the
  failing entries: `{"errors": [{"batch_index", "reason", "field", "message"}]}` (207
  Multi-Status on partial failure; read on any status), so only those are archived.
  Shapes follow Customer.io's own Segment action (segmentio/action-destinations,
  destinations/customerio/utils.ts: `sendBatch`, `parseResponse`).
- v1 (`api: v1`), one request per event: `PUT /api/v1/customers/{id}` (identify;
  attributes at the top level), `POST /api/v1/customers/{id}/events` (`name`, `data`,
  `timestamp`, `id`; `"type": "page"|"screen"` for views), `POST /api/v1/events` for
  anonymous events (`anonymous_id`).
- Limits ("Invalid API Requests", https://docs.customer.io/journeys/invalid-api-requests):
  event name at most 100 bytes, event data at most 100,000 bytes, at most 300
  attributes per identify, attribute names at most 150 bytes and values at most 1000
  bytes; a refusal is a 400 `{"meta": {"error": "..."}}`. Checked before sending.
- Rate limit: 3,000 requests per 3 seconds across the Track API (fair use); 429 and 5xx
  are retried, 400 and 401 are not (a 400 without per-entry errors is bisected).

Timestamps are Unix seconds. An event's `id` (deduplication) defaults to the source
event's messageId. Mapping sections: `required` holds the person's identifiers and the
event's fields; `user` becomes the person's `attributes` (identify); `properties`
become the event's `attributes` (v2) / `data` (v1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

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
from streamctl.destinations.timestamps import epoch_seconds
from streamctl.destinations.vendor import base_url, json_object

HOSTS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
MAX_REQUEST_BYTES = 500 * 1024
MAX_ENTRY_BYTES = 32 * 1024
MAX_EVENT_NAME_BYTES = 100
MAX_EVENT_DATA_BYTES = 100_000
MAX_ATTRIBUTES = 300
MAX_ATTRIBUTE_NAME_BYTES = 150
MAX_ATTRIBUTE_VALUE_BYTES = 1000
IDENTIFIER_KEYS = ("id", "email", "anonymous_id")  # in order of preference
JSON_HEADERS = {"Content-Type": "application/json"}

PERSON = (
    FieldSpec("id", "string", "the person's id (your user id)"),
    FieldSpec("email", "string", "the person's email (when people are identified by email)"),
)
EVENT_OPTIONAL = (
    *PERSON,
    FieldSpec("anonymous_id", "string", "for events of people not identified yet"),
    FieldSpec("event_id", "string", "deduplication id; defaults to the source event's messageId"),
    FieldSpec("timestamp", "string", "when it happened (ISO 8601); sent as Unix seconds"),
)


def _event_type(name: str, description: str, name_field: FieldSpec) -> EventTypeSpec:
    return EventTypeSpec(
        name,
        description,
        required=(name_field,),
        optional=EVENT_OPTIONAL,
        user_fields=False,
        properties=True,
    )


EVENT_TYPES = (
    EventTypeSpec(
        "identify",
        "create or update a person; user -> attributes",
        optional=PERSON,
        user_fields=True,
        properties=False,
    ),
    _event_type(
        "custom",
        "an event of a person; properties -> event attributes",
        FieldSpec("name", "string", "event name, at most 100 bytes"),
    ),
    _event_type("page", "a page view (action page)", FieldSpec("name", "string", "the page URL")),
    _event_type(
        "screen",
        "a mobile screen view (action screen)",
        FieldSpec("name", "string", "the screen name"),
    ),
)
ACTIONS = {"identify": "identify", "custom": "event", "page": "page", "screen": "screen"}


class CustomerIODestination(Destination):
    catalog = CatalogEntry(
        type="customerio",
        description="Customer.io Track API: people, their events, page and screen views.",
        docs="https://docs.customer.io/api/track/",
        config=(
            ConfigField(
                "site_id", required=True, description="Track API site id (HTTP Basic user)"
            ),
            ConfigField(
                "api_key",
                required=True,
                secret=True,
                description="Track API key (HTTP Basic password)",
            ),
            ConfigField(
                "region",
                default="us",
                description="us (track.customer.io) | eu (track-eu.customer.io)",
            ),
            ConfigField(
                "api",
                default="v2",
                description="v2 (/api/v2/batch, default) | v1 (one request per event)",
            ),
            ConfigField("base_url", description="replaces the Customer.io host (proxies, tests)"),
        ),
        event_types=EVENT_TYPES,
        batch_size=100,
        max_batch_size=1000,
        max_batch_bytes=MAX_REQUEST_BYTES,
        # Events per second, as the delivery engine counts: 3,000 requests per 3 seconds
        # is 1,000 events/s with v1's one event per request (v2 batches are lighter).
        rate_limit=1000.0,
        identity="id, email or (events only) anonymous_id",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = {key: value for key, value in mapped.required.items() if value is not None}
        identifiers = {key: fields.pop(key) for key in IDENTIFIER_KEYS if key in fields}
        # One identifier: Customer.io resolves the person by it (id before email before anonymous).
        chosen = next(iter(identifiers.items()), None)
        entry: Payload = {
            "type": "person",
            "identifiers": dict([chosen]) if chosen else {},
            "action": ACTIONS.get(event_type, "event"),
        }
        if event_type == "identify":
            attributes = dict(mapped.user)
            if "email" in identifiers and chosen and chosen[0] != "email":
                attributes.setdefault("email", identifiers["email"])
            if attributes:
                entry["attributes"] = attributes
            return entry
        entry["name"] = fields.pop("name", None)
        event_id = fields.pop("event_id", None) or event.get("messageId")
        if event_id is not None:
            entry["id"] = str(event_id)
        if fields.get("timestamp") is not None:
            entry["timestamp"] = epoch_seconds(fields.pop("timestamp"), field="timestamp")
        if mapped.properties:
            entry["attributes"] = dict(mapped.properties)
        return entry

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems = []
        identifiers = payload.get("identifiers") or {}
        if not any(isinstance(v, str) and v for v in identifiers.values()):
            problems.append("Customer.io needs a person id, an email or (events) an anonymous_id")
        if event_type == "identify" and "anonymous_id" in identifiers:
            problems.append("identify needs an id or an email, not only an anonymous_id")
        if payload["action"] == "identify":
            problems.extend(_check_attributes(payload.get("attributes") or {}))
        else:
            problems.extend(_check_event(payload))
        size = len(orjson.dumps(payload))
        if size > MAX_ENTRY_BYTES:
            problems.append(
                f"the entry is {size} bytes; a v2 batch entry takes at most {MAX_ENTRY_BYTES}"
            )
        return "; ".join(problems) if problems else None

    def batch_size(self, event_type: str) -> int:
        return 1 if self._v1() else super().batch_size(event_type)

    # -- sending -----------------------------------------------------------------

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        if not self._v1():
            return HttpRequest(
                "POST",
                f"{self._host()}/api/v2/batch",
                JSON_HEADERS,
                auth=self._auth(),
                json={"batch": list(payloads)},
            )
        if len(payloads) != 1:
            msg = f"Customer.io's v1 API takes one event per request, got {len(payloads)}"
            raise ValueError(msg)
        method, path, body = v1_request(payloads[0])
        return HttpRequest(method, self._host() + path, JSON_HEADERS, auth=self._auth(), json=body)

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        if self._v1():
            parts: list[list[int]] = [[index] for index in range(len(payloads))]
        else:
            parts = chunk_by_bytes(payloads, max_bytes=MAX_REQUEST_BYTES, envelope_bytes=16)
        return await send_parts(self, client, event_type, payloads, parts, timeout)

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        body = json_object(response) or {}
        errors = _entry_errors(body, len(payloads))
        if errors:
            return _per_entry_result(response, errors, len(payloads))
        if 200 <= response.status_code < 300:
            return BatchResult.same(
                len(payloads), ItemResult(ItemStatus.DELIVERED, response.status_code)
            )
        return whole_request_result(response, len(payloads), detail=_error_detail(body))

    # -- helpers -----------------------------------------------------------------

    def _v1(self) -> bool:
        return str(self.config.get("api") or "v2").lower() == "v1"

    def _host(self) -> str:
        region = str(self.config.get("region") or "us").lower()
        return base_url(self.config, HOSTS.get(region, HOSTS["us"]))

    def _auth(self) -> tuple[str, str]:
        # Handed to httpx, which builds the Basic header when sending: a header built here
        # would show the base64 of the key in `preview`, where redaction cannot see it.
        return (str(self.config["site_id"]), str(self.config["api_key"]))


def v1_request(entry: Mapping[str, Any]) -> tuple[str, str, Payload]:
    """The v1 Track API call for one v2-shaped entry: (method, path, body)."""
    identifiers = dict(entry.get("identifiers") or {})
    person = identifiers.get("id") or identifiers.get("email")
    if entry["action"] == "identify":
        return (
            "PUT",
            f"/api/v1/customers/{quote(str(person), safe='')}",
            dict(entry.get("attributes") or {}),
        )
    body: Payload = {"name": entry.get("name"), "data": dict(entry.get("attributes") or {})}
    if entry["action"] in ("page", "screen"):
        body["type"] = entry["action"]
    for key in ("id", "timestamp"):
        if key in entry:
            body[key] = entry[key]
    if person is None:
        body["anonymous_id"] = identifiers.get("anonymous_id")
        return "POST", "/api/v1/events", body
    return "POST", f"/api/v1/customers/{quote(str(person), safe='')}/events", body


def _check_event(entry: Mapping[str, Any]) -> list[str]:
    problems = []
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"event name must be a non-empty string, got {name!r}")
    elif len(name.encode()) > MAX_EVENT_NAME_BYTES:
        problems.append(
            f"event name is {len(name.encode())} bytes; Customer.io takes at most {MAX_EVENT_NAME_BYTES}"
        )
    data_bytes = len(orjson.dumps(entry.get("attributes") or {}))
    if data_bytes > MAX_EVENT_DATA_BYTES:
        problems.append(
            f"event data is {data_bytes} bytes; Customer.io takes at most {MAX_EVENT_DATA_BYTES}"
        )
    return problems


def _check_attributes(attributes: Mapping[str, Any]) -> list[str]:
    problems = []
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(
            f"{len(attributes)} attributes; Customer.io takes at most {MAX_ATTRIBUTES} per identify"
        )
    for name, value in attributes.items():
        if len(name.encode()) > MAX_ATTRIBUTE_NAME_BYTES:
            problems.append(
                f"attribute name {name[:40]!r}... is over {MAX_ATTRIBUTE_NAME_BYTES} bytes"
            )
        encoded = value.encode() if isinstance(value, str) else orjson.dumps(value)
        if len(encoded) > MAX_ATTRIBUTE_VALUE_BYTES:
            problems.append(
                f"value for attribute {name!r} is over {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
            )
    return problems


def _entry_errors(body: Mapping[str, Any], n: int) -> dict[int, str]:
    """`{"errors": [{"batch_index", "reason", "field", "message"}]}` -> {index: message}."""
    errors: dict[int, str] = {}
    raw = body.get("errors")
    for error in raw if isinstance(raw, list) else []:
        if not isinstance(error, Mapping):
            continue
        index = error.get("batch_index")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < n:
            parts = [str(error[k]) for k in ("reason", "field", "message") if error.get(k)]
            errors[index] = ": ".join(parts) or "rejected"
    return errors


def _per_entry_result(response: httpx.Response, errors: Mapping[int, str], n: int) -> BatchResult:
    code = response.status_code
    excerpt = response.text[:2000]
    return BatchResult(
        tuple(
            ItemResult(ItemStatus.FAILED, code, error=errors[i], response=excerpt)
            if i in errors
            else ItemResult(ItemStatus.DELIVERED, code)
            for i in range(n)
        )
    )


def _error_detail(body: Mapping[str, Any]) -> str | None:
    """v1's `{"meta": {"error": ...}}` or a plain `{"message"}`."""
    meta = body.get("meta")
    if isinstance(meta, Mapping) and meta.get("error"):
        return str(meta["error"])
    return str(body["message"]) if body.get("message") else None
