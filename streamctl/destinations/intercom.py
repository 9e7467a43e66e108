"""Intercom: data events and contacts (created or updated).

Follows Intercom's REST API reference (https://developers.intercom.com/docs/references/rest-api/api.intercom.io/):

- Hosts by data residency: https://api.intercom.io (US), https://api.eu.intercom.io,
  https://api.au.intercom.io. Every request carries `Authorization: Bearer <access
  token>` and `Intercom-Version` (default 2.11).
- Submit a data event, https://developers.intercom.com/docs/references/2.15/rest-api/api.intercom.io/data-events/createdataevent
  and the event model, https://developers.intercom.com/docs/references/2.6/rest-api/data-events/event-model.md:
  `POST /events` with `{"event_name", "created_at" (UTC Unix seconds), "user_id" |
  "email" | "id", "metadata"}`; answers 202 Accepted without a body. One event per
  request: the API has no batch endpoint. Metadata values are strings, numbers, dates
  (keys ending `_date`), links, or the two documented objects, rich links
  `{"url", "value"}` and prices `{"amount" (cents), "currency"}`; "we do not currently
  support nested JSON structure", and "each event can contain up to ten metadata
  key-value pairs" (Intercom ignores the rest: refused before sending here).
- Contacts, https://developers.intercom.com/docs/references/rest-api/api.intercom.io/contacts/:
  Intercom has no upsert. As Segment's Intercom action does (segmentio/action-destinations,
  destinations/intercom/identifyContact/index.ts and util.ts), an identify searches
  (`POST /contacts/search`, `{"query": {"field": "external_id"|"email", "operator": "=",
  "value"}}`), updates the one match (`PUT /contacts/{id}`) or creates the contact
  (`POST /contacts`); a 409 on create (Intercom's search index lags a just-created
  contact) is retried.
- Errors, https://developers.intercom.com/docs/references/rest-api/errors/error-objects:
  `{"type": "error.list", "request_id", "errors": [{"code", "message"}]}`.
- Rate limiting, https://developers.intercom.com/docs/references/2.1/rest-api/errors/rate-limiting.md:
  10,000 calls per minute per app (spread over 10-second windows); a 429 carries
  `X-RateLimit-Reset` (UTC epoch seconds), honoured before any backoff.

Mapping sections: `required` holds the event's (or contact's) own fields; `properties`
become an event's `metadata`; `user` becomes a contact's `custom_attributes`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

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
    exchange,
    is_retryable_status,
)
from streamctl.destinations.timestamps import epoch_seconds
from streamctl.destinations.vendor import (
    base_url,
    json_object,
    retry_after_or,
    seconds_until_reset,
)

HOSTS = {
    "us": "https://api.intercom.io",
    "eu": "https://api.eu.intercom.io",
    "au": "https://api.au.intercom.io",
}
API_VERSION = "2.11"
MAX_METADATA = 10
# The objects Intercom's metadata takes: a rich link and a price (amount in cents).
METADATA_OBJECTS = (frozenset({"url", "value"}), frozenset({"amount", "currency"}))
EVENT_IDENTIFIERS = ("user_id", "email", "id")
CONTACT_FIELDS = (
    FieldSpec("external_id", "string", "your user id (role user)"),
    FieldSpec("email", "string", "the contact's email"),
    FieldSpec("role", "string", "user (default) or lead"),
    FieldSpec("name", "string", "full name"),
    FieldSpec("phone", "string", "phone number"),
    FieldSpec("avatar", "string", "image URL"),
    FieldSpec("signed_up_at", "string", "when they signed up (sent as Unix seconds)"),
    FieldSpec("last_seen_at", "string", "when they were last seen (sent as Unix seconds)"),
    FieldSpec("owner_id", "integer", "the admin who owns the contact"),
    FieldSpec("unsubscribed_from_emails", "boolean", "email unsubscribe status"),
)
CONTACT_TIMES = ("signed_up_at", "last_seen_at")
EVENT_OPTIONAL = (
    FieldSpec("user_id", "string", "your id for the user"),
    FieldSpec("email", "string", "the user's email (when email identifies users)"),
    FieldSpec("id", "string", "Intercom's contact id"),
)


class IntercomDestination(Destination):
    catalog = CatalogEntry(
        type="intercom",
        description="Intercom: data events (custom, purchase) and contacts created or updated.",
        docs="https://developers.intercom.com/docs/references/rest-api/api.intercom.io/",
        config=(
            ConfigField(
                "access_token",
                required=True,
                secret=True,
                description="access token of your Intercom app (Authorization: Bearer)",
            ),
            ConfigField(
                "region",
                default="us",
                choices=tuple(HOSTS),
                description="data residency: us (api.intercom.io) | eu | au",
            ),
            ConfigField(
                "api_version", default=API_VERSION, description="the Intercom-Version header"
            ),
            ConfigField("base_url", description="replaces the region's host (proxies, tests)"),
        ),
        event_types=(
            EventTypeSpec(
                "custom",
                "a data event; properties -> metadata (at most 10, no nested objects)",
                required=(
                    FieldSpec("event_name", "string", "past-tense verb-noun, e.g. placed-order"),
                    FieldSpec("created_at", "string", "when it happened (sent as Unix seconds)"),
                ),
                optional=EVENT_OPTIONAL,
                user_fields=False,
            ),
            EventTypeSpec(
                "purchase",
                "a data event with a price: revenue -> metadata.price {amount in cents, currency}",
                required=(
                    FieldSpec("event_name", "string", "e.g. placed-order"),
                    FieldSpec("created_at", "string", "when it happened (sent as Unix seconds)"),
                    FieldSpec("revenue", "number", "the amount in the currency's main unit"),
                ),
                optional=(*EVENT_OPTIONAL, FieldSpec("currency", "string", "ISO 4217; USD")),
                user_fields=False,
            ),
            EventTypeSpec(
                "identify",
                "create or update a contact; user -> custom_attributes",
                optional=CONTACT_FIELDS,
                properties=False,
            ),
        ),
        batch_size=1,
        max_batch_size=1,  # no batch endpoint: one event (or contact) per request
        # 10,000 calls per minute per app; a contact costs two (search, then write).
        rate_limit=150.0,
        identity="events: user_id, email or id; contacts: external_id or email",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = {k: v for k, v in mapped.required.items() if v is not None and v != ""}
        if event_type == "identify":
            for key in CONTACT_TIMES:
                if key in fields:
                    fields[key] = epoch_seconds(fields[key], field=key)
            fields.setdefault("role", "user")
            attributes = {k: v for k, v in mapped.user.items() if v is not None}
            return {**fields, "custom_attributes": attributes} if attributes else fields
        body: Payload = {
            "event_name": fields.get("event_name"),
            "created_at": epoch_seconds(fields.get("created_at"), field="created_at"),
        }
        for key in EVENT_IDENTIFIERS:
            if key in fields:
                body[key] = str(fields[key])
        metadata = {k: v for k, v in mapped.properties.items() if v is not None}
        if event_type == "purchase":
            metadata["price"] = {
                "amount": _cents(fields.get("revenue")),
                "currency": str(fields.get("currency") or "USD"),
            }
        if metadata:
            body["metadata"] = metadata
        return body

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems = (
            _contact_problems(payload) if event_type == "identify" else _event_problems(payload)
        )
        return "; ".join(f"intercom: {p}" for p in problems) or None

    # -- sending -----------------------------------------------------------------

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        """The event's POST /events; for a contact, the create (preceded by a search)."""
        (payload,) = payloads
        path = "/contacts" if event_type == "identify" else "/events"
        return self._request("POST", path, payload)

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        if event_type != "identify":
            return await super().send(client, event_type, payloads, timeout)
        items = await asyncio.gather(*(self._upsert(client, p, timeout) for p in payloads))
        return BatchResult(tuple(items))

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        return BatchResult.same(len(payloads), _outcome(response))

    async def _upsert(
        self, client: httpx.AsyncClient, contact: Payload, timeout: float
    ) -> ItemResult:
        """Search by external_id (else email); update the one match, else create."""
        key = "external_id" if contact.get("external_id") else "email"
        query = {"query": {"field": key, "operator": "=", "value": contact[key]}}
        found = await exchange(client, self._request("POST", "/contacts/search", query), timeout)
        if isinstance(found, ItemResult):
            return found
        if not 200 <= found.status_code < 300:
            return _outcome(found)
        matches = (json_object(found) or {}).get("data") or []
        if len(matches) == 1 and isinstance(matches[0], Mapping) and matches[0].get("id"):
            path = f"/contacts/{quote(str(matches[0]['id']), safe='')}"
            request = self._request("PUT", path, contact)
        else:
            request = self._request("POST", "/contacts", contact)
        written = await exchange(client, request, timeout)
        if isinstance(written, ItemResult):
            return written
        if written.status_code == 409:
            # The contact exists but the search did not see it yet (its index lags).
            return ItemResult(
                ItemStatus.RETRY, 409, f"intercom: HTTP 409 {_error_detail(written)}",
                response=excerpt(written),
            )  # fmt: skip
        return _outcome(written)

    def _request(self, method: str, path: str, body: Any) -> HttpRequest:
        region = str(self.config.get("region") or "us")
        return HttpRequest(
            method,
            base_url(self.config, HOSTS.get(region, HOSTS["us"])) + path,
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Authorization": f"Bearer {self.config['access_token']}",
                "Intercom-Version": str(self.config.get("api_version") or API_VERSION),
            },
            json=body,
        )


def _cents(revenue: Any) -> Any:
    """Intercom's price amount is in cents; a non-number is kept for check_payload to name."""
    if isinstance(revenue, (int, float)) and not isinstance(revenue, bool):
        return round(revenue * 100)
    return revenue


def _event_problems(event: Payload) -> list[str]:
    problems = []
    if not isinstance(event.get("event_name"), str) or not event["event_name"]:
        problems.append("event_name must be a non-empty string")
    if not any(event.get(key) for key in EVENT_IDENTIFIERS):
        problems.append("an event needs user_id, email or id")
    metadata = event.get("metadata") or {}
    if len(metadata) > MAX_METADATA:
        problems.append(
            f"{len(metadata)} metadata keys; Intercom keeps {MAX_METADATA} and ignores the rest"
        )
    for name, value in metadata.items():
        if isinstance(value, list) or (
            isinstance(value, dict) and frozenset(value) not in METADATA_OBJECTS
        ):
            problems.append(
                f"metadata {name!r} is nested; Intercom takes strings, numbers, dates, links,"
                " {url, value} and {amount, currency}"
            )
    price = metadata.get("price")
    if isinstance(price, dict) and not isinstance(price.get("amount"), int):
        problems.append(f"revenue must be a number, got {price.get('amount')!r}")
    return problems


def _contact_problems(contact: Payload) -> list[str]:
    problems = []
    role = contact.get("role")
    if role not in ("user", "lead"):
        problems.append(f"role must be user or lead, got {role!r}")
    if not contact.get("external_id") and not contact.get("email"):
        problems.append("a contact needs an external_id or an email")
    if role == "lead" and contact.get("external_id"):
        problems.append("a lead cannot have an external_id")
    attributes = contact.get("custom_attributes") or {}
    nested = [k for k, v in attributes.items() if isinstance(v, (dict, list))]
    if nested:
        problems.append(f"custom attributes {nested[:5]} must be strings, numbers or booleans")
    return problems


def _error_detail(response: httpx.Response) -> str:
    """`code: message` of Intercom's error list, else the reason phrase."""
    errors = (json_object(response) or {}).get("errors")
    if isinstance(errors, list):
        parts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, Mapping)]
        if parts:
            return "; ".join(parts)
    return response.reason_phrase


def _outcome(response: httpx.Response) -> ItemResult:
    code = response.status_code
    if 200 <= code < 300:
        return ItemResult(ItemStatus.DELIVERED, code)
    reset = response.headers.get("x-ratelimit-reset") if code == 429 else None
    wait = retry_after_or(response, seconds_until_reset(reset))
    return ItemResult(
        ItemStatus.RETRY if is_retryable_status(code) else ItemStatus.FAILED,
        code,
        f"intercom: HTTP {code} {_error_detail(response)}",
        retry_after=wait,
        response=excerpt(response),
    )
