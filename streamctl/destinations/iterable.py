"""Iterable: custom events, purchases and user profile updates.

Follows Iterable's API documentation (https://api.iterable.com/api/docs, and the
overview https://support.iterable.com/hc/en-us/articles/204780579):

- Authentication: the `Api-Key` header. Hosts: https://api.iterable.com (US data
  center), https://api.eu.iterable.com (EU data center).
- `POST /api/events/track` (one event) and `POST /api/events/trackBulk`
  (`{"events": [...]}`): `eventName`, `email` or `userId`, `id` (an event with an existing
  id is updated, so resending is idempotent), `createdAt` (Unix seconds), `dataFields`,
  `campaignId`, `templateId`. Rate limits: track 2000 requests/s, trackBulk 10
  requests/s per project. "Events are ... processed separately from [the] single event
  (non-bulk) endpoint. To make sure events are tracked in order, send them all to the
  same endpoint": the `bulk` config key picks one endpoint for good.
- trackBulk answers 200 with per-item failures: `successCount`, `failCount`,
  `failedUpdates` {`invalidEmails`, `invalidUserIds`, `notFoundEmails`,
  `notFoundUserIds`, `forgottenEmails`, `forgottenUserIds`} and `disallowedEventNames`
  (BulkTrackResponse); failures name the user, not the position, so they are matched
  back to the payloads by email / userId / event name.
- `POST /api/commerce/trackPurchase`: `user` {`email`|`userId`, `dataFields`}, `items`
  (CommerceItem: `id`, `name`, `price`, `quantity` required), `total`, `id`,
  `createdAt`, `dataFields`. No bulk endpoint: one purchase per request.
- `POST /api/users/update` and `POST /api/users/bulkUpdate` (`{"users": [...]}`):
  `email`|`userId`, `dataFields`, `preferUserId`, `mergeNestedObjects`; bulkUpdate
  answers like trackBulk, its `failedUpdates` adding `conflictEmails`/`conflictUserIds`
  and `invalidDataEmails`/`invalidDataUserIds`.
- Errors (API Response Codes, https://support.iterable.com/hc/en-us/articles/39629320560148):
  every error body is `{"msg", "code", "params"}`; 400 (`BadParams`,
  `RequestFieldsTypesMismatched`, `InvalidEmailAddressError`, ...), 401 `BadApiKey`,
  409 conflicts, 429 `RateLimitExceeded`, 5xx. 429 and 5xx are retried; a 400/409/413
  on a bulk request is bisected so one bad event does not sink its batch.

Mapping sections: `required` holds the request's top-level fields; `properties` become
`dataFields` (of the event, or of the purchase); `user` becomes the profile's
`dataFields` (identify, and the purchase's `user`). `id` defaults to the source event's
messageId so retries update instead of duplicating.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
)
from streamctl.destinations.multipart import send_parts, whole_request_result
from streamctl.destinations.timestamps import epoch_seconds
from streamctl.destinations.vendor import base_url, json_object

HOSTS = {"us": "https://api.iterable.com", "eu": "https://api.eu.iterable.com"}
MAX_BULK_EVENTS = 1000
SPLIT_STATUSES = frozenset({400, 409, 413})

# event type -> (single endpoint, bulk endpoint or None, the bulk body's array key)
ENDPOINTS: dict[str, tuple[str, str | None, str]] = {
    "custom": ("/api/events/track", "/api/events/trackBulk", "events"),
    "identify": ("/api/users/update", "/api/users/bulkUpdate", "users"),
    "purchase": ("/api/commerce/trackPurchase", None, ""),
}

# failedUpdates keys -> which identifier they list and why the item failed
FAILURE_LISTS = {
    "invalidEmails": ("email", "invalid email"),
    "invalidUserIds": ("userId", "invalid userId"),
    "notFoundEmails": ("email", "email not found"),
    "notFoundUserIds": ("userId", "userId not found"),
    "forgottenEmails": ("email", "user forgotten (GDPR)"),
    "forgottenUserIds": ("userId", "user forgotten (GDPR)"),
    "conflictEmails": ("email", "email/userId conflict"),
    "conflictUserIds": ("userId", "email/userId conflict"),
    "invalidDataEmails": ("email", "invalid data fields"),
    "invalidDataUserIds": ("userId", "invalid data fields"),
}

IDENTITY = (
    FieldSpec("email", "string", "the user's email (email-based projects)"),
    FieldSpec("userId", "string", "the user's id (userId-based projects)"),
)
EVENT_OPTIONAL = (
    FieldSpec(
        "id",
        "string",
        "event id, at most 512 bytes; defaults to the messageId (idempotent retries)",
    ),
    FieldSpec("createdAt", "string", "when it happened (ISO 8601); sent as Unix seconds"),
    FieldSpec("campaignId", "integer", "campaign to attribute it to"),
    FieldSpec("templateId", "integer", "template to attribute it to"),
)

EVENT_TYPES = (
    EventTypeSpec(
        "custom",
        "a custom event (events/trackBulk); properties -> dataFields",
        required=(FieldSpec("eventName", "string", "the event name"),),
        optional=(*IDENTITY, *EVENT_OPTIONAL, FieldSpec("createNewFields", "boolean")),
        user_fields=False,
        properties=True,
    ),
    EventTypeSpec(
        "purchase",
        "a purchase (commerce/trackPurchase); user -> user.dataFields, properties -> dataFields",
        required=(
            FieldSpec(
                "items",
                "array",
                "CommerceItems: id, name, price, quantity (+ sku, categories, ...)",
            ),
            FieldSpec("total", "number", "the order total"),
        ),
        optional=(*IDENTITY, *EVENT_OPTIONAL),
        user_fields=True,
        properties=True,
        batch_size=1,
    ),
    EventTypeSpec(
        "identify",
        "a user profile update (users/bulkUpdate); user -> dataFields",
        optional=(
            *IDENTITY,
            FieldSpec(
                "preferUserId", "boolean", "create the user by userId in email-based projects"
            ),
            FieldSpec(
                "mergeNestedObjects", "boolean", "merge top-level objects instead of replacing them"
            ),
        ),
        user_fields=True,
        properties=False,
        batch_size=50,
    ),
)


class IterableDestination(Destination):
    catalog = CatalogEntry(
        type="iterable",
        description="Iterable: custom events, purchases and user profile updates.",
        docs="https://api.iterable.com/api/docs",
        config=(
            ConfigField(
                "api_key",
                required=True,
                secret=True,
                description="a server-side API key (Api-Key header)",
            ),
            ConfigField(
                "region",
                default="us",
                description="us (api.iterable.com) | eu (api.eu.iterable.com)",
            ),
            ConfigField("base_url", description="replaces the Iterable host (proxies, tests)"),
            ConfigField(
                "bulk",
                "boolean",
                default=True,
                description="trackBulk/bulkUpdate (default) or one event per request to track/update",
            ),
        ),
        event_types=EVENT_TYPES,
        batch_size=100,
        max_batch_size=MAX_BULK_EVENTS,
        # Events per second, as the delivery engine counts: trackBulk's 10 requests/s per
        # project times the default 100 events per request.
        rate_limit=1000.0,
        identity="email or userId",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = {key: value for key, value in mapped.required.items() if value is not None}
        if event_type == "identify":
            return {**fields, **({"dataFields": dict(mapped.user)} if mapped.user else {})}
        if fields.get("createdAt") is not None:
            fields["createdAt"] = epoch_seconds(fields["createdAt"], field="createdAt")
        if "id" not in fields and event.get("messageId"):
            fields["id"] = str(event["messageId"])
        if mapped.properties:
            fields["dataFields"] = dict(mapped.properties)
        if event_type != "purchase":
            return fields
        user: Payload = {key: fields.pop(key) for key in ("email", "userId") if key in fields}
        if mapped.user:
            user["dataFields"] = dict(mapped.user)
        return {"user": user, **fields}

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        identity = payload.get("user", {}) if event_type == "purchase" else payload
        if not _identifier(identity, "email") and not _identifier(identity, "userId"):
            return "Iterable needs an email or a userId"
        if len(str(payload.get("id", "")).encode()) > 512:
            return "id is longer than 512 bytes"
        if event_type == "purchase":
            return _check_items(payload.get("items"))
        return None

    def batch_size(self, event_type: str) -> int:
        return super().batch_size(event_type) if self._bulk(event_type) else 1

    # -- sending -----------------------------------------------------------------

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        single, bulk, key = ENDPOINTS.get(event_type, ENDPOINTS["custom"])
        if self._bulk(event_type) and bulk is not None:
            path, body = bulk, {key: list(payloads)}
        elif len(payloads) == 1:
            path, body = single, payloads[0]
        else:
            msg = f"Iterable's {single} takes one payload per request, got {len(payloads)}"
            raise ValueError(msg)
        headers = {"Content-Type": "application/json", "Api-Key": str(self.config["api_key"])}
        return HttpRequest("POST", self._host() + path, headers, json=body)

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        parts: list[Sequence[int]]
        if self._bulk(event_type):
            parts = [range(start, min(start + MAX_BULK_EVENTS, len(payloads)))
                     for start in range(0, len(payloads), MAX_BULK_EVENTS)]  # fmt: skip
        else:
            parts = [[index] for index in range(len(payloads))]
        return await send_parts(self, client, event_type, payloads, parts, timeout)

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        body = json_object(response) or {}
        code = response.status_code
        if not 200 <= code < 300:
            detail = ": ".join(str(body[k]) for k in ("code", "msg") if body.get(k)) or None
            return whole_request_result(
                response, len(payloads), detail=detail, split_on=SPLIT_STATUSES
            )
        if "successCount" in body or "failCount" in body:
            return _bulk_result(response, body, payloads)
        message = str(body.get("msg") or "")
        if "disallowed from tracking" in message:
            failed = ItemResult(
                ItemStatus.FAILED, code, error=message, response=response.text[:2000]
            )
            return BatchResult.same(len(payloads), failed)
        return BatchResult.same(len(payloads), ItemResult(ItemStatus.DELIVERED, code))

    # -- helpers -----------------------------------------------------------------

    def _bulk(self, event_type: str) -> bool:
        has_bulk_endpoint = ENDPOINTS.get(event_type, ENDPOINTS["custom"])[1] is not None
        return has_bulk_endpoint and bool(self.config.get("bulk", True))

    def _host(self) -> str:
        region = str(self.config.get("region") or "us")
        return base_url(self.config, HOSTS.get(region, HOSTS["us"]))


def _identifier(identity: Mapping[str, Any], key: str) -> bool:
    value = identity.get(key)
    return isinstance(value, str) and value != ""


def _check_items(items: Any) -> str | None:
    if not isinstance(items, list):
        return f"items must be an array, got {type(items).__name__}"
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            return f"items[{position}] must be an object"
        missing = [key for key in ("id", "name", "price", "quantity") if item.get(key) is None]
        if missing:
            return f"items[{position}] lacks {', '.join(missing)} (required by CommerceItem)"
    return None


def _bulk_result(
    response: httpx.Response, body: Mapping[str, Any], payloads: Sequence[Payload]
) -> BatchResult:
    """Per-item outcomes of a trackBulk / bulkUpdate 200, matched by identifier and name."""
    reasons = _failure_reasons(body)
    disallowed = set(_strings(body.get("disallowedEventNames")))
    items: list[ItemResult] = []
    for payload in payloads:
        reason = reasons.get(("email", payload.get("email"))) or reasons.get(
            ("userId", payload.get("userId"))
        )
        if reason is None and payload.get("eventName") in disallowed:
            reason = f"event name {payload['eventName']!r} is disallowed from tracking"
        if reason is None:
            items.append(ItemResult(ItemStatus.DELIVERED, response.status_code))
        else:
            items.append(
                ItemResult(
                    ItemStatus.FAILED,
                    response.status_code,
                    error=reason,
                    response=response.text[:2000],
                )
            )
    failed = sum(item.status is ItemStatus.FAILED for item in items)
    fail_count = body.get("failCount")
    if isinstance(fail_count, int) and fail_count > failed:
        return _unattributed(response, payloads, fail_count - failed)
    return BatchResult(tuple(items))


def _unattributed(
    response: httpx.Response, payloads: Sequence[Payload], missing: int
) -> BatchResult:
    """failCount counts failures the lists do not name: bisect until they are one per batch.

    Safe to resend: events carry `id` (Iterable updates rather than duplicates) and a
    profile update is idempotent.
    """
    error = f"Iterable reported {missing} failure(s) without naming the user"
    item = ItemResult(
        ItemStatus.FAILED, response.status_code, error=error, response=response.text[:2000]
    )
    return BatchResult.same(len(payloads), item, split=True)


def _failure_reasons(body: Mapping[str, Any]) -> dict[tuple[str, Any], str]:
    reasons: dict[tuple[str, Any], str] = {}
    failed_updates = body.get("failedUpdates")
    # The deprecated top-level invalidEmails / invalidUserIds mean the same as failedUpdates'.
    for source in (failed_updates if isinstance(failed_updates, Mapping) else {}, body):
        for list_name, (identifier, reason) in FAILURE_LISTS.items():
            for value in _strings(source.get(list_name)):
                reasons.setdefault((identifier, value), reason)
    return reasons


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
