"""Fake Slack, Amplitude, Mixpanel and Braze APIs that check requests as the vendors document them.

Each fake is the `answer` of a `FakeServer` (real HTTP on 127.0.0.1). It validates what
it receives against the vendor's documented contract (method, path, auth, headers, body
shape, limits), records every deviation in `problems` (a test asserts it stays empty),
and answers the way the vendor does: success, per-item errors, rate limits, server
errors. `outages` queues whole replies (a 503, a 429) to answer before the normal logic.

    amplitude = FakeAmplitude(api_key="amp-key")
    with FakeServer(amplitude) as server:
        ...  # AmplitudeDestination("amp", {"api_key": "amp-key", "base_url": server.url})
        assert amplitude.problems == [] and len(amplitude.ingested) == 3
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http import Received, Reply


class FakeVendor:
    """What every fake shares: problems found, queued outages, a lock for server threads."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.outages: deque[Reply] = deque()
        self.lock = threading.Lock()

    def __call__(self, req: Received) -> Reply:
        with self.lock:
            if self.outages:
                return self.outages.popleft()
            return self.answer(req)

    def answer(self, req: Received) -> Reply:
        raise NotImplementedError

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def json_body(self, req: Received) -> Any:
        if not req.headers.get("content-type", "").startswith("application/json"):
            self.problem(
                f"Content-Type is {req.headers.get('content-type')!r}, not application/json"
            )
        try:
            return json.loads(req.body)
        except ValueError:
            self.problem("body is not JSON")
            return None


def _is_iso8601(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# -- Slack ------------------------------------------------------------------------------


class FakeSlack(FakeVendor):
    """Incoming webhooks: `/services/T/B/secret` paths, answers `ok` or an error string.

    `hooks` maps a webhook path to its channel state: "ok", "archived" (410), "prohibited" (403).
    """

    def __init__(self, hooks: dict[str, str]) -> None:
        super().__init__()
        self.hooks = hooks
        self.messages: list[dict[str, Any]] = []

    def answer(self, req: Received) -> Reply:
        if req.method != "POST":
            self.problem(f"{req.method} instead of POST")
            return Reply(405, "invalid_method")
        state = self.hooks.get(req.path)
        if state is None:
            return Reply(404, "no_service")
        body = self.json_body(req)
        if not isinstance(body, dict):
            return Reply(400, "invalid_payload")
        if not (isinstance(body.get("text"), str) and body["text"].strip()) and not body.get(
            "blocks"
        ):
            return Reply(400, "no_text")
        if "blocks" in body and not isinstance(body["blocks"], list):
            return Reply(400, "invalid_blocks_format")
        if state == "archived":
            return Reply(410, "channel_is_archived")
        if state == "prohibited":
            return Reply(403, "action_prohibited")
        self.messages.append(body)
        return Reply(200, "ok")


# -- Amplitude --------------------------------------------------------------------------


class FakeAmplitude(FakeVendor):
    """HTTP V2 `/2/httpapi`: all-or-nothing requests, 400 index maps, 413, 429 for throttled users."""

    MAX_EVENTS = 2000
    MAX_BYTES = 1_000_000

    def __init__(
        self,
        api_key: str,
        throttled_users: set[str] | None = None,
        silenced_devices: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.throttled_users = throttled_users or set()
        self.silenced_devices = silenced_devices or set()
        self.ingested: dict[str, dict[str, Any]] = {}  # insert_id -> event (deduplicated)
        self.requests = 0

    def answer(self, req: Received) -> Reply:
        self.requests += 1
        if req.method != "POST" or urlsplit(req.path).path != "/2/httpapi":
            self.problem(f"{req.method} {req.path} is not POST /2/httpapi")
            return Reply(404, {"code": 404, "error": "not found"})
        if len(req.body) > self.MAX_BYTES:
            return Reply(413, {"code": 413, "error": "Payload too large"})
        body = self.json_body(req)
        if not isinstance(body, dict) or "api_key" not in body:
            return Reply(
                400,
                {
                    "code": 400,
                    "error": "Request missing required field",
                    "missing_field": "api_key",
                },
            )
        if body["api_key"] != self.api_key:
            return Reply(
                400, {"code": 400, "error": "Invalid API key: " + str(body["api_key"])[:4]}
            )
        events = body.get("events")
        if not isinstance(events, list) or not events:
            return Reply(
                400,
                {"code": 400, "error": "Request missing required field", "missing_field": "events"},
            )
        if len(events) > self.MAX_EVENTS:
            return Reply(413, {"code": 413, "error": "Payload too large"})
        min_length = (body.get("options") or {}).get("min_id_length", 5)
        invalid, missing, short = self._validate(events, min_length)
        if invalid or missing or short:
            return Reply(
                400,
                {
                    "code": 400,
                    "error": "Invalid field values on some events",
                    "events_with_invalid_fields": invalid,
                    "events_with_missing_fields": missing,
                    "events_with_invalid_id_lengths": short,
                },
            )
        silenced = [i for i, e in enumerate(events) if e.get("device_id") in self.silenced_devices]
        if silenced:
            # SilencedDeviceID: devices Amplitude blocked for spamming; nothing ingested.
            return Reply(
                400,
                {
                    "code": 400,
                    "error": "Events silenced for device_id",
                    "eps_threshold": 30,
                    "exceeded_daily_quota_devices": {},
                    "silenced_devices": sorted({events[i]["device_id"] for i in silenced}),
                    "silenced_events": silenced,
                    "throttled_devices": {},
                    "throttled_events": [],
                },
            )
        throttled = [i for i, e in enumerate(events) if e.get("user_id") in self.throttled_users]
        if throttled:
            users = {events[i]["user_id"]: 40 for i in throttled}
            return Reply(
                429,
                {
                    "code": 429,
                    "error": "Too many requests for some devices and users",
                    "eps_threshold": 30,
                    "throttled_users": users,
                    "throttled_devices": {},
                    "throttled_events": throttled,
                },
            )
        for event in events:
            self.ingested.setdefault(event.get("insert_id") or str(len(self.ingested)), event)
        return Reply(
            200, {"code": 200, "events_ingested": len(events), "payload_size_bytes": len(req.body)}
        )

    def _validate(
        self, events: list[Any], min_length: int
    ) -> tuple[dict[str, list[int]], dict[str, list[int]], dict[str, list[int]]]:
        invalid: dict[str, list[int]] = {}
        missing: dict[str, list[int]] = {}
        short: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            if not isinstance(event, dict):
                invalid.setdefault("event", []).append(index)
                continue
            if not event.get("event_type"):
                missing.setdefault("event_type", []).append(index)
            ids = [k for k in ("user_id", "device_id") if event.get(k) is not None]
            if not ids:
                missing.setdefault("user_id", []).append(index)
            for key in ids:
                if not isinstance(event[key], str):
                    invalid.setdefault(key, []).append(index)
                elif len(event[key]) < min_length:
                    short.setdefault(key, []).append(index)
            if "time" in event and (
                not isinstance(event["time"], int) or isinstance(event["time"], bool)
            ):
                invalid.setdefault("time", []).append(index)
            if event.get("event_type") == "$identify" and not isinstance(
                event.get("user_properties"), dict
            ):
                invalid.setdefault("user_properties", []).append(index)
            price = event.get("price")
            if price is not None and not isinstance(price, (int, float)):
                invalid.setdefault("price", []).append(index)
        return invalid, missing, short


# -- Mixpanel ---------------------------------------------------------------------------

_INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
_PLACEHOLDER_IDS = {"anon", "anonymous", "null", "none", "undefined", "unknown", "0", "-1"}


class FakeMixpanel(FakeVendor):
    """`/import?strict=1` (per-record failures, the rest ingested) and `/engage` (verbose)."""

    MAX_EVENTS = 2000
    MAX_BYTES = 10 * 1024 * 1024

    def __init__(
        self, *, token: str, secret: str | None = None, project_id: str | None = None
    ) -> None:
        super().__init__()
        self.token = token
        self.secret = secret
        self.project_id = project_id
        self.ingested: dict[str, dict[str, Any]] = {}  # $insert_id -> event
        self.profiles: dict[str, dict[str, Any]] = {}

    def answer(self, req: Received) -> Reply:
        url = urlsplit(req.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if req.method != "POST":
            self.problem(f"{req.method} {req.path}")
            return Reply(405, {"error": "method not allowed", "status": 0})
        if url.path == "/import":
            return self._import(req, query)
        if url.path == "/engage":
            return self._engage(req, query)
        self.problem(f"unknown path {req.path}")
        return Reply(404, {"error": "not found", "status": 0})

    def _authorised(self, req: Received, query: dict[str, str]) -> bool:
        header = req.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if self.project_id is not None:  # a service account: user:secret plus ?project_id=
            return query.get("project_id") == self.project_id and password == self.secret
        if self.secret is not None:
            return user == self.secret and password == ""
        return user == self.token and password == ""

    def _import(self, req: Received, query: dict[str, str]) -> Reply:
        if query.get("strict") != "1":
            self.problem(f"/import without strict=1: {req.path}")
        if not self._authorised(req, query):
            return Reply(
                401, {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}
            )
        if len(req.body) > self.MAX_BYTES:
            return Reply(
                413,
                {
                    "code": 413,
                    "error": "request exceeds max limit",
                    "status": "Request Entity Too Large",
                },
            )
        events = self.json_body(req)
        if not isinstance(events, list):
            return Reply(
                400, {"code": 400, "error": "body must be a JSON array", "status": "Bad Request"}
            )
        if len(events) > self.MAX_EVENTS:
            return Reply(
                413, {"code": 413, "error": "too many events", "status": "Request Entity Too Large"}
            )
        failed = []
        for index, event in enumerate(events):
            problem = self._invalid(event)
            if problem:
                field, message = problem
                insert_id = (
                    (event.get("properties") or {}).get("$insert_id")
                    if isinstance(event, dict)
                    else None
                )
                failed.append(
                    {"index": index, "$insert_id": insert_id, "field": field, "message": message}
                )
            else:
                self.ingested.setdefault(event["properties"]["$insert_id"], event)
        imported = len(events) - len(failed)
        if failed:
            return Reply(
                400,
                {
                    "code": 400,
                    "error": "some data points in the request failed validation",
                    "failed_records": failed,
                    "num_records_imported": imported,
                    "status": "Bad Request",
                },
            )
        return Reply(200, {"code": 200, "num_records_imported": imported, "status": "OK"})

    def _invalid(self, event: Any) -> tuple[str, str] | None:
        if (
            not isinstance(event, dict)
            or not isinstance(event.get("event"), str)
            or not event["event"]
        ):
            return "event", "'event' must be a non-empty string"
        props = event.get("properties")
        if not isinstance(props, dict):
            return "properties", "'properties' must be an object"
        when = props.get("time")
        if not isinstance(when, int) or when < 31_536_000:  # seconds or ms, after 1971
            return (
                "properties.time",
                "'properties.time' is invalid: must be specified as seconds since epoch",
            )
        if when > 10**11 and when > (time.time() + 3600) * 1000:
            return "properties.time", "'properties.time' is more than 1 hour in the future"
        distinct = props.get("distinct_id")
        if not isinstance(distinct, str) or distinct.lower() in _PLACEHOLDER_IDS:
            return "properties.distinct_id", f"'properties.distinct_id' is invalid: {distinct!r}"
        insert_id = props.get("$insert_id")
        if not isinstance(insert_id, str) or not _INSERT_ID.fullmatch(insert_id):
            return "properties.$insert_id", "'properties.$insert_id' is invalid"
        if len(props) >= 255:
            return "properties", "too many properties"
        return None

    def _engage(self, req: Received, query: dict[str, str]) -> Reply:
        if query.get("verbose") != "1":
            self.problem(f"/engage without verbose=1: {req.path}")
        updates = self.json_body(req)
        if not isinstance(updates, list) or not updates:
            return Reply(200, {"status": 0, "error": "data must be a non-empty JSON array"})
        for update in updates:
            if not isinstance(update, dict) or update.get("$token") != self.token:
                return Reply(200, {"status": 0, "error": "$token is missing or invalid"})
            if not isinstance(update.get("$distinct_id"), str) or not update["$distinct_id"]:
                return Reply(200, {"status": 0, "error": "$distinct_id is missing"})
            if not isinstance(update.get("$set"), dict):
                return Reply(200, {"status": 0, "error": "$set must be an object"})
        for update in updates:
            profile = self.profiles.setdefault(update["$distinct_id"], {})
            for key, value in (update.get("$set_once") or {}).items():
                profile.setdefault(key, value)
            profile.update(update["$set"])
        return Reply(200, {"status": 1, "error": None})


# -- Braze ------------------------------------------------------------------------------

_BRAZE_IDS = ("external_id", "user_alias", "braze_id", "email", "phone")


class FakeBraze(FakeVendor):
    """`/users/track`: Bearer key, 75 objects per array, 201 with non-fatal per-object errors."""

    MAX_PER_ARRAY = 75

    def __init__(self, api_key: str, blocked_external_ids: set[str] | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.blocked_external_ids = blocked_external_ids or set()
        self.events: list[dict[str, Any]] = []
        self.purchases: list[dict[str, Any]] = []
        self.attributes: list[dict[str, Any]] = []

    def answer(self, req: Received) -> Reply:
        if req.method != "POST" or req.path != "/users/track":
            self.problem(f"{req.method} {req.path} is not POST /users/track")
            return Reply(404, {"message": "Not Found"})
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, {"message": "Invalid API key: unknown"})
        body = self.json_body(req)
        if not isinstance(body, dict) or not any(
            body.get(a) for a in ("attributes", "events", "purchases")
        ):
            return Reply(400, {"message": "Bad Request", "errors": ["nothing to track"]})
        for array in ("attributes", "events", "purchases"):
            if len(body.get(array) or []) > self.MAX_PER_ARRAY:
                return Reply(400, {"message": "Max Input Length Exceeded"})
        errors = []
        processed = {"attributes": 0, "events": 0, "purchases": 0}
        for array in ("attributes", "events", "purchases"):
            for index, obj in enumerate(body.get(array) or []):
                problem = self._invalid(array, obj)
                if problem:
                    errors.append({"type": problem, "input_array": array, "index": index})
                else:
                    getattr(self, array).append(obj)
                    processed[array] += 1
        answer: dict[str, Any] = {"message": "success"}
        answer.update({f"{a}_processed": n for a, n in processed.items() if body.get(a)})
        if errors:
            answer["errors"] = errors
        return Reply(201, answer)

    def _invalid(self, array: str, obj: Any) -> str | None:
        if not isinstance(obj, dict) or not any(obj.get(k) for k in _BRAZE_IDS):
            return "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
        if obj.get("external_id") in self.blocked_external_ids:
            # Braze's spam blocking of "dummy users" (Track users, FAQ).
            return "provided external_id is blacklisted and disallowed"
        if array == "attributes":
            return None
        if not _is_iso8601(obj.get("time")):
            return "'time' must be a valid ISO 8601 datetime"
        if array == "events":
            return (
                None if isinstance(obj.get("name"), str) and obj["name"] else "'name' is required"
            )
        if not isinstance(obj.get("product_id"), str):
            return "'product_id' is required"
        if not isinstance(obj.get("currency"), str) or not re.fullmatch(
            r"[A-Z]{3}", obj["currency"]
        ):
            return "'currency' must be a valid ISO 4217 currency code"
        price = obj.get("price")
        if not isinstance(price, (int, float)) or isinstance(price, bool):
            return "'price' must be a number"
        return None


# -- driving a destination --------------------------------------------------------------


def send_batch(destination: Any, event_type: str, payloads: list[dict[str, Any]]) -> Any:
    """`destination.send` over a real httpx.AsyncClient, from synchronous tests."""
    import asyncio

    import httpx

    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            return await destination.send(client, event_type, payloads, timeout=5.0)

    return asyncio.run(go())


def serve(server: Any, fake: FakeVendor) -> Any:
    """Point a (module-wide) FakeServer at a fresh fake and forget earlier requests.

    Sharing one server per test module saves the half second each server's shutdown costs.
    """
    with server._lock:
        server.requests.clear()
    server.answer = fake
    return server
