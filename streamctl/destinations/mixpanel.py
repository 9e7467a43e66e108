"""Mixpanel Ingestion API: events through `/import` (strict mode), profiles through `/engage`.

Follows Mixpanel's documentation:

- Import Events, https://developer.mixpanel.com/reference/import-events (and
  https://docs.mixpanel.com/reference/import-events): `POST /import?strict=1` with a
  JSON array of `{"event", "properties": {"time", "distinct_id", "$insert_id", ...}}`;
  up to 2,000 events and 10 MB uncompressed per request; each event under 1 MB with
  fewer than 255 properties; `time` in seconds or milliseconds, not before 1971-01-01;
  `$insert_id` at most 36 bytes of letters, digits and `-`; placeholder `distinct_id`s
  (`anon`, `null`, `undefined`, ...) refused. Authentication: a service account
  (HTTP Basic username:secret plus `?project_id=`), the project secret (Basic, secret
  as user name, empty password) or the project token (Basic, token as user name).
  Answers: 200 `{"code": 200, "num_records_imported"}`; 400 with `failed_records`
  `[{"index", "$insert_id", "field", "message"}]` — "If some events pass validation
  and others fail, we will ingest the events that pass validation", so only the named
  records fail; 401 invalid credentials; 413 too large; 429 rate limited (back off).
- 400 Bad Request, https://docs.mixpanel.com/troubleshooting/errors/400-bad-request
  ("a 400 is a partial success rather than a total rejection").
- User profiles, https://developer.mixpanel.com/reference/profile-set and
  https://docs.mixpanel.com/reference/profile-batch-update: `POST /engage#profile-set`
  with a JSON array of `{"$token", "$distinct_id", "$set", "$set_once"?}`, up to
  2,000 updates per request; with `verbose=1` the answer is `{"status": 1|0, "error"}`
  and HTTP 200 even when the data is invalid. `ip=0` keeps the server's address from
  overwriting the profile's location.
- Hosts: `api.mixpanel.com` (US), `api-eu.mixpanel.com` (EU), `api-in.mixpanel.com` (India).

Mapping defaults (when the sync does not map them): `time` <- `timestamp`,
`insert_id` <- `messageId` (hashed to 36 hex digits when it is not a valid `$insert_id`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, ClassVar
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
from streamctl.destinations.vendor import (
    base_url,
    converted_or_kept,
    json_object,
    named_failures,
    to_epoch_millis,
    whole_batch_outcome,
)

REGION_HOSTS = {
    "us": "https://api.mixpanel.com",
    "eu": "https://api-eu.mixpanel.com",
    "in": "https://api-in.mixpanel.com",
}
MAX_EVENTS = 2000
MAX_BYTES = 10 * 1024 * 1024
MAX_EVENT_BYTES = 1024 * 1024
MAX_PROPERTIES = 254  # "fewer than 255 properties"
EARLIEST_MILLIS = 31_536_000_000  # 1971-01-01T00:00:00Z
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
# distinct_id values Mixpanel refuses as likely implementation mistakes.
REFUSED_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "anon",
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "<nil>",
        "0",
        "-1",
        "true",
        "false",
        "[]",
        "{}",
    }
)


class MixpanelDestination(Destination):
    """Mixpanel's `/import` (events) and `/engage` (user profiles)."""

    catalog: ClassVar[CatalogEntry] = CatalogEntry(
        type="mixpanel",
        description="Mixpanel ingestion: events via /import (strict), user profiles via /engage.",
        docs="https://developer.mixpanel.com/reference/import-events",
        config=(
            ConfigField(
                "project_token",
                required=True,
                secret=True,
                description="project token: /engage's $token, and /import's auth when no secret is set",
            ),
            ConfigField(
                "api_secret", secret=True, description="project secret (Basic auth for /import)"
            ),
            ConfigField(
                "service_account_username", description="service account user (with project_id)"
            ),
            ConfigField(
                "service_account_secret", secret=True, description="service account secret"
            ),
            ConfigField("project_id", description="project id; required with a service account"),
            ConfigField(
                "region",
                default="us",
                choices=("us", "eu", "in"),
                description="us | eu | in (data residency)",
            ),
            ConfigField("base_url", description="replaces the regional host (proxy, tests)"),
        ),
        event_types=(
            EventTypeSpec(
                "custom",
                "an event; user fields and properties become event properties",
                required=(
                    FieldSpec("event", "string", "the event name"),
                    FieldSpec("distinct_id", "string", "the user; empty string for no user"),
                ),
                optional=(
                    FieldSpec(
                        "time",
                        "any",
                        "ISO 8601 or epoch; sent as milliseconds; defaults to timestamp",
                    ),
                    FieldSpec(
                        "insert_id",
                        "string",
                        "$insert_id (36 bytes, [A-Za-z0-9-]); defaults to messageId",
                    ),
                    FieldSpec("ip", "string", "IP address for geolocation"),
                    FieldSpec("device_id", "string", "$device_id (simplified ID merge)"),
                    FieldSpec("user_id", "string", "$user_id (simplified ID merge)"),
                ),
            ),
            EventTypeSpec(
                "identify",
                "a user profile update: the user section is $set",
                required=(FieldSpec("distinct_id", "string", "the profile's $distinct_id"),),
                optional=(
                    FieldSpec("set_once", "object", "properties to $set_once"),
                    FieldSpec("ip", "string", "$ip for the profile's location"),
                ),
                properties=False,
            ),
        ),
        batch_size=1000,
        max_batch_size=MAX_EVENTS,
        max_batch_bytes=MAX_BYTES,
        rate_limit=30_000.0,  # "2GB of uncompressed JSON/minute or ~30k events per second"
        identity="distinct_id",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = dict(mapped.required)
        if event_type == "identify":
            return self._profile_update(fields, mapped)
        properties: dict[str, Any] = {**mapped.user, **mapped.properties}
        if "time" not in fields and event.get("timestamp") is not None:
            fields["time"] = event["timestamp"]
        if fields.get("time") is not None:
            fields["time"] = converted_or_kept(fields["time"], to_epoch_millis)
        insert_id = fields.pop("insert_id", None)
        if insert_id is None and event.get("messageId"):
            insert_id = _insert_id(str(event["messageId"]))
        renamed = {"insert_id": "$insert_id", "device_id": "$device_id", "user_id": "$user_id"}
        for key in ("time", "distinct_id", "ip", "device_id", "user_id"):
            if key in fields:
                properties[renamed.get(key, key)] = fields[key]
        if insert_id is not None:
            properties["$insert_id"] = insert_id
        if self.config.get("project_token"):
            properties["token"] = str(self.config["project_token"])
        return {"event": fields.get("event"), "properties": properties}

    def _profile_update(self, fields: dict[str, Any], mapped: MappedEvent) -> Payload:
        update: Payload = {
            "$token": str(self.config.get("project_token") or ""),
            "$distinct_id": fields.get("distinct_id"),
            "$set": dict(mapped.user),
        }
        if fields.get("set_once"):
            update["$set_once"] = fields["set_once"]
        if fields.get("ip") is not None:
            update["$ip"] = fields["ip"]
        return update

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        size = len(orjson.dumps(payload))
        if size > MAX_EVENT_BYTES:
            # Events and profile updates alike: each under 1 MB of JSON.
            return f"mixpanel: the {event_type} payload is {size} bytes of JSON; Mixpanel accepts under 1 MB"
        if event_type == "identify":
            if not payload.get("$set") and not payload.get("$set_once"):
                return "mixpanel: the profile update sets nothing; map a user section or set_once"
            return _check_distinct_id(payload.get("$distinct_id"))
        properties = payload.get("properties") or {}
        if not isinstance(payload.get("event"), str) or not payload["event"]:
            return f"mixpanel: `event` must be a non-empty string, got {payload.get('event')!r}"
        problem = _check_distinct_id(properties.get("distinct_id"), allow_empty=True)
        if problem:
            return problem
        time = properties.get("time")
        if not isinstance(time, int):
            return f"mixpanel: `time` {time!r} is not an ISO 8601 timestamp nor epoch milliseconds (required)"
        if time < EARLIEST_MILLIS:
            return f"mixpanel: `time` {time} is before 1971-01-01; Mixpanel refuses it"
        insert_id = properties.get("$insert_id")
        if not isinstance(insert_id, str) or not INSERT_ID.fullmatch(insert_id):
            return f"mixpanel: `$insert_id` {insert_id!r} must be 1-36 letters, digits or '-'"
        if len(properties) > MAX_PROPERTIES:
            return f"mixpanel: {len(properties)} properties; Mixpanel accepts fewer than 255"
        return None

    # -- sending -----------------------------------------------------------------

    def host(self) -> str:
        region = str(self.config.get("region") or "us")
        if region not in REGION_HOSTS:
            msg = f"mixpanel destination {self.name!r}: region {region!r} is not one of us, eu, in"
            raise ValueError(msg)
        return base_url(self.config, REGION_HOSTS[region])

    def import_auth(self) -> tuple[str, str, dict[str, str]]:
        """User name, password and extra query parameters for /import, strongest credential first."""
        user = self.config.get("service_account_username")
        secret = self.config.get("service_account_secret")
        if user and secret:
            query = (
                {"project_id": str(self.config["project_id"])}
                if self.config.get("project_id")
                else {}
            )
            return str(user), str(secret), query
        if self.config.get("api_secret"):
            return str(self.config["api_secret"]), "", {}
        return str(self.config.get("project_token") or ""), "", {}

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if event_type == "identify":
            query = urlencode({"verbose": "1", "ip": "0"})
            return HttpRequest(
                "POST", f"{self.host()}/engage?{query}", headers=headers, json=list(payloads)
            )
        user, password, extra = self.import_auth()
        query = urlencode({"strict": "1", **extra})
        return HttpRequest(
            "POST",
            f"{self.host()}/import?{query}",
            headers=headers,
            json=list(payloads),
            auth=(user, password),
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        n = len(payloads)
        code = response.status_code
        is_engage = bool(payloads) and "$distinct_id" in payloads[0]
        body = json_object(response) or {}
        if 200 <= code < 300:
            if is_engage and _engage_refused(response, body):
                error = f"mixpanel: /engage refused the updates: {body.get('error') or response.text[:200]}"
                item = ItemResult(ItemStatus.FAILED, code, error, response=excerpt(response))
                return BatchResult.same(n, item, split=True)
            return BatchResult.same(n, ItemResult(ItemStatus.DELIVERED, code))
        if code == 400 and isinstance(body.get("failed_records"), list):
            return _classify_failed_records(response, body, n)
        error = f"mixpanel: HTTP {code} {body.get('error') or response.reason_phrase}".rstrip()
        # 400 without records, 413: bisect so one bad event cannot hold back the rest.
        # 401/403: the credentials are wrong for every event; splitting cannot help.
        return whole_batch_outcome(response, n, error, split=code not in (401, 403))


def _insert_id(message_id: str) -> str:
    """The messageId when it is a valid $insert_id, else a stable 36-digit hash of it."""
    if INSERT_ID.fullmatch(message_id):
        return message_id
    return hashlib.sha256(message_id.encode()).hexdigest()[:36]


def _check_distinct_id(value: Any, allow_empty: bool = False) -> str | None:
    if not isinstance(value, str):
        return f"mixpanel: `distinct_id` must be a string, got {type(value).__name__} {value!r}"
    if not value and not allow_empty:
        return "mixpanel: `distinct_id` is empty; a profile needs one"
    if value.strip().lower() in REFUSED_IDS:
        return f"mixpanel: `distinct_id` {value!r} is a placeholder Mixpanel refuses"
    return None


def _engage_refused(response: httpx.Response, body: dict[str, Any]) -> bool:
    """/engage answers 200 even to invalid data: `{"status": 0}` (verbose) or a bare `0`."""
    if body:
        return body.get("status") in (0, "0")
    return response.text.strip() == "0"


def _classify_failed_records(response: httpx.Response, body: dict[str, Any], n: int) -> BatchResult:
    """Strict mode named the bad records; Mixpanel ingested all the others."""
    reasons: dict[int, list[str]] = {}
    for record in body["failed_records"]:
        if (
            isinstance(record, dict)
            and isinstance(record.get("index"), int)
            and 0 <= record["index"] < n
        ):
            field = record.get("field") or "event"
            reasons.setdefault(record["index"], []).append(
                f"{field}: {record.get('message') or 'invalid'}"
            )
    if not reasons:
        error = f"mixpanel: HTTP 400 {body.get('error') or 'invalid request'}"
        return whole_batch_outcome(response, n, error, split=True)
    return named_failures(response, n, reasons, "mixpanel")
