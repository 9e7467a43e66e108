"""HubSpot: custom behavioral events and contacts upserted by email.

Follows HubSpot's developer documentation:

- Send event occurrences, https://developers.hubspot.com/docs/api-reference/legacy/events/send-event-data/guide
  and the batch endpoint, https://developers.hubspot.com/docs/api-reference/legacy/events/send-event-data/batch-send-occurrences:
  `POST https://api.hubapi.com/events/v3/send/batch`, `Authorization: Bearer <token>`
  (a private app's access token or an OAuth token with `analytics.behavioral_events.send`),
  body `{"inputs": [{"eventName", "email"|"utk"|"objectId", "occurredAt", "uuid",
  "properties"}]}` (`properties` required); `eventName` is the fully qualified name, `pe{HubID}_{name}`;
  `occurredAt` ISO 8601 (default: when HubSpot receives it); `uuid` deduplicates ("when
  multiple events have the same ID within a year, the first will be accepted"). Answers
  204 without a body; a refusal answers for the whole request (no per-item errors are
  documented), so a refused batch is bisected to isolate the bad occurrence. The pages
  give no maximum batch size: streamctl caps a request at 500 occurrences (a 400 for
  the size would be bisected too).
- Event property limits (HubSpot's developer announcement "New property limits for the
  Custom Behavioural Events API", https://community.hubspot.com/t5/Developer-Announcements/New-property-limits-for-the-Custom-Behavioural-Events-API/td-p/489700):
  at most 50 properties per occurrence, internal names of lowercase letters, digits and
  underscores starting with a letter, at most 50 characters. Checked before sending.
- Upsert contacts, https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/contacts/batch/upsert-contacts:
  `POST /crm/v3/objects/contacts/batch/upsert` with `{"inputs": [{"idProperty": "email",
  "id": EMAIL, "properties": {...}}]}`, at most 100 inputs (HubSpot's CRM batch limit);
  the answer is `{"status", "results": [...]}` (200), or 207 Multi-Status with
  `errors: [{"status": "error", "category", "message", "context": {"ids": [...]}}]`
  naming the inputs that failed, so only those are archived. Two upserts of one email
  in one batch are merged into one input: HubSpot refuses a batch with duplicate ids.
- Rate limits, "API usage guidelines", https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines
  and https://developers.hubspot.com/changelog/increasing-our-api-limits: private apps
  get 100 requests per 10 seconds (Free, Starter) or 190 (Professional, Enterprise),
  per account. A 429 is retried after its Retry-After, else after 10 seconds (the
  rolling window); 5xx and timeouts with backoff; 401 and 403 (the token, its scopes)
  are archived without bisecting.

Segment's HubSpot action (segmentio/action-destinations, destinations/hubspot/
sendCustomBehavioralEvent/index.ts) was read for the event name check (`pe<HubID>_`,
and `pe{portal_id}_` when the portal is known) and for the identifier rule (one of
email, utk, objectId).
"""

from __future__ import annotations

import re
import uuid
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
from streamctl.destinations.multipart import send_parts
from streamctl.destinations.timestamps import iso8601
from streamctl.destinations.vendor import (
    base_url,
    json_object,
    named_failures,
    retry_after_or,
    whole_batch_outcome,
)

HOST = "https://api.hubapi.com"
EVENTS_PATH = "/events/v3/send/batch"
CONTACTS_PATH = "/crm/v3/objects/contacts/batch/upsert"
MAX_EVENTS = 500
MAX_CONTACTS = 100
MAX_EVENT_PROPERTIES = 50
PROPERTY_NAME = re.compile(r"[a-z][a-z0-9_]{0,49}")
EVENT_NAME = re.compile(r"pe\d+_.+")
EVENT_IDENTIFIERS = ("email", "utk", "objectId")
RATE_WINDOW_SECONDS = 10.0  # HubSpot's rolling burst window
# Every occurrence gets a stable UUID: the event's own `uuid`, or one derived from its
# messageId, so a retried or replayed event is deduplicated by HubSpot.
_UUID_NAMESPACE = uuid.UUID("6f1a3c52-9a57-4c1e-8a2a-54b3f0e8c0de")
_AUTH_STATUSES = (401, 403)


class HubSpotDestination(Destination):
    catalog = CatalogEntry(
        type="hubspot",
        description="HubSpot: custom behavioral events, and contacts upserted by email.",
        docs="https://developers.hubspot.com/docs/api-reference/legacy/events/send-event-data/guide",
        config=(
            ConfigField(
                "access_token",
                required=True,
                secret=True,
                description="private app access token (or OAuth token): Authorization: Bearer",
            ),
            ConfigField(
                "portal_id",
                description="your HubID: event names must then start with pe{portal_id}_",
            ),
            ConfigField("base_url", description="replaces https://api.hubapi.com (proxies, tests)"),
        ),
        event_types=(
            EventTypeSpec(
                "custom",
                "a custom behavioral event occurrence; properties -> event properties",
                required=(
                    FieldSpec("eventName", "string", "fully qualified name, pe{HubID}_{name}"),
                ),
                optional=(
                    FieldSpec("email", "string", "the contact's email"),
                    FieldSpec("utk", "string", "the visitor's usertoken (hubspotutk cookie)"),
                    FieldSpec("objectId", "string", "the record's HubSpot id"),
                    FieldSpec("occurredAt", "string", "when it happened (ISO 8601 or epoch)"),
                    FieldSpec("uuid", "string", "deduplication id; default: from the messageId"),
                ),
                user_fields=False,
            ),
            EventTypeSpec(
                "identify",
                "create or update the contact with this email; user -> contact properties",
                required=(FieldSpec("email", "string", "the contact's email (the upsert key)"),),
                properties=False,
            ),
        ),
        batch_size=MAX_CONTACTS,
        max_batch_size=MAX_EVENTS,  # contacts are sent 100 per request
        # Events per second with batches of 100: 10 requests/s, the Free and Starter
        # burst limit (100 requests per 10 seconds).
        rate_limit=1000.0,
        identity="events: one of email, utk, objectId; contacts: email",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = {k: v for k, v in mapped.required.items() if v is not None and v != ""}
        if event_type == "identify":
            return {
                "idProperty": "email",
                "id": fields.get("email"),
                "properties": {k: v for k, v in mapped.user.items() if v is not None},
            }
        occurrence: Payload = {"eventName": fields.get("eventName")}
        for key in EVENT_IDENTIFIERS:
            if key in fields:
                occurrence[key] = str(fields[key])
        if "occurredAt" in fields:
            occurrence["occurredAt"] = iso8601(fields["occurredAt"], field="occurredAt")
        dedupe = fields.get("uuid") or _occurrence_uuid(event.get("messageId"))
        if dedupe:
            occurrence["uuid"] = str(dedupe)
        # `properties` is required by the reference, even when empty.
        occurrence["properties"] = {k: v for k, v in mapped.properties.items() if v is not None}
        return occurrence

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems = (
            _contact_problems(payload)
            if event_type == "identify"
            else self._event_problems(payload)
        )
        return "; ".join(f"hubspot: {p}" for p in problems) or None

    def _event_problems(self, occurrence: Payload) -> list[str]:
        problems = []
        name = occurrence.get("eventName")
        portal = self.config.get("portal_id")
        if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
            problems.append(f"eventName {name!r} is not a fully qualified name pe<HubID>_<name>")
        elif portal and not name.startswith(f"pe{portal}_"):
            problems.append(f"eventName {name!r} does not start with pe{portal}_ (portal_id)")
        if not any(occurrence.get(key) for key in EVENT_IDENTIFIERS):
            problems.append("an event needs one of email, utk, objectId to find its contact")
        properties = occurrence.get("properties") or {}
        if len(properties) > MAX_EVENT_PROPERTIES:
            problems.append(
                f"{len(properties)} event properties; HubSpot takes at most {MAX_EVENT_PROPERTIES}"
            )
        bad_names = [n for n in properties if not PROPERTY_NAME.fullmatch(n)]
        if bad_names:
            problems.append(
                f"event property names {bad_names[:5]} must be lowercase letters, digits and"
                " underscores, start with a letter, at most 50 characters"
            )
        problems.extend(_scalar_problems("event property", properties))
        return problems

    # -- sending -----------------------------------------------------------------

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        if event_type == "identify":
            path, inputs = CONTACTS_PATH, list(_merged_contacts(payloads).values())
        else:
            path, inputs = EVENTS_PATH, list(payloads)
        return HttpRequest(
            "POST",
            base_url(self.config, HOST) + path,
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.config['access_token']}",
            },
            json={"inputs": inputs},
        )

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        """Contacts go in requests of at most 100 inputs (a sync may batch up to 500)."""
        size = MAX_CONTACTS if event_type == "identify" else MAX_EVENTS
        parts = [
            range(start, min(start + size, len(payloads)))
            for start in range(0, len(payloads), size)
        ]
        return await send_parts(self, client, event_type, payloads, parts, timeout)

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        body = json_object(response) or {}
        is_contacts = bool(payloads) and "idProperty" in payloads[0]
        if 200 <= code < 300:
            if is_contacts and body.get("errors"):
                return _contact_outcomes(response, body, payloads)
            return BatchResult.same(len(payloads), ItemResult(ItemStatus.DELIVERED, code))
        wait = retry_after_or(response, RATE_WINDOW_SECONDS if code == 429 else None)
        message = body.get("message") or response.reason_phrase
        category = f" {body['category']}" if body.get("category") else ""
        return whole_batch_outcome(
            response,
            len(payloads),
            f"hubspot: HTTP {code}{category}: {message}",
            split=code not in _AUTH_STATUSES,
            retry_after=wait,
        )


def _occurrence_uuid(message_id: Any) -> str | None:
    return str(uuid.uuid5(_UUID_NAMESPACE, str(message_id))) if message_id else None


def _contact_problems(contact: Payload) -> list[str]:
    problems = []
    email = contact.get("id")
    if not isinstance(email, str) or "@" not in email:
        problems.append(f"a contact upsert needs an email, got {email!r}")
    problems.extend(_scalar_problems("contact property", contact.get("properties") or {}))
    return problems


def _scalar_problems(kind: str, properties: Mapping[str, Any]) -> list[str]:
    """HubSpot property values are strings, numbers or booleans, never objects or lists."""
    nested = [name for name, value in properties.items() if isinstance(value, (dict, list))]
    if not nested:
        return []
    return [f"{kind} values must be strings, numbers or booleans; {nested[:5]} are not"]


def _email_key(email: Any) -> str:
    return str(email).strip().lower()


def _merged_contacts(payloads: Sequence[Payload]) -> dict[str, Payload]:
    """One input per email (case-insensitive), later properties over earlier ones."""
    merged: dict[str, Payload] = {}
    for payload in payloads:
        key = _email_key(payload["id"])
        if key in merged:
            merged[key] = {
                **merged[key],
                "properties": {**merged[key]["properties"], **payload["properties"]},
            }
        else:
            merged[key] = payload
    return merged


def _contact_outcomes(
    response: httpx.Response, body: Mapping[str, Any], payloads: Sequence[Payload]
) -> BatchResult:
    """A 207: the errors name their inputs in `context.ids`; the rest were upserted.

    An error that names no id fails the inputs missing from `results` (matched by the
    email HubSpot returns), so nothing is called delivered that HubSpot did not take."""
    failed: dict[str, list[str]] = {}
    unnamed: list[str] = []
    for error in body.get("errors") or []:
        if not isinstance(error, Mapping):
            continue
        message = f"{error.get('category') or 'error'}: {error.get('message') or 'rejected'}"
        context = error.get("context")
        ids = context.get("ids") if isinstance(context, Mapping) else None
        if isinstance(ids, list) and ids:
            for email in ids:
                failed.setdefault(_email_key(email), []).append(message)
        else:
            unnamed.append(message)
    if unnamed:
        upserted = {
            _email_key(result["properties"]["email"])
            for result in body.get("results") or []
            if isinstance(result, Mapping)
            and isinstance(result.get("properties"), Mapping)
            and result["properties"].get("email")
        }
        for payload in payloads:
            key = _email_key(payload["id"])
            if key not in upserted and key not in failed:
                failed[key] = unnamed
    reasons = {
        index: failed[key]
        for index, payload in enumerate(payloads)
        if (key := _email_key(payload["id"])) in failed
    }
    return named_failures(response, len(payloads), reasons, "hubspot")
