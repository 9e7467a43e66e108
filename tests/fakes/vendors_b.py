"""Fake GA4, Iterable, Customer.io and Segment APIs for FakeServer (tests/fakes/http.py).

Each fake checks every request the way its vendor documents it (path, query, auth,
headers, body shape, limits) and records what it found wrong in `problems`, so a test
ends with `assert fake.problems == []`. It answers like the vendor: success bodies,
per-item errors driven by knobs (`invalid_emails`, `bad_ids`, ...), and scripted
whole-request answers queued with `fail_next` (429 with Retry-After, 5xx, 400).

    fake = FakeIterable(api_key="k")
    with FakeServer(fake) as server:
        dest = IterableDestination("it", {"api_key": "k", "base_url": server.url})
        ...
    assert fake.problems == []
"""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http import Received, Reply


class FakeVendor:
    """The shared machinery: scripted replies, problem log, accepted items."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.accepted: list[Any] = []  # the items the vendor took, in order
        self.requests: list[Received] = []
        self._scripted: deque[Reply] = deque()
        self._lock = threading.Lock()

    def fail_next(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        """Answer the next `times` requests with this reply (after checking them)."""
        for _ in range(times):
            self._scripted.append(Reply(status, body, headers or {}))

    def __call__(self, req: Received) -> Reply:
        with self._lock:
            self.requests.append(req)
            refusal = self.authenticate(req)
            if refusal is not None:
                return refusal  # a wrong key is the caller's choice in tests, not a problem
            problems = self.check(req)
            if problems:
                self.problems.extend(problems)
                return self.refuse(req, problems)
            if self._scripted:
                return self._scripted.popleft()
            return self.answer(req)

    # -- per vendor -------------------------------------------------------------

    def authenticate(self, req: Received) -> Reply | None:
        """The vendor's answer to wrong credentials, or None when they are right."""
        return None

    def check(self, req: Received) -> list[str]:
        raise NotImplementedError

    def refuse(self, req: Received, problems: list[str]) -> Reply:
        return Reply(400, {"error": "; ".join(problems)})

    def answer(self, req: Received) -> Reply:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------

    @staticmethod
    def body(req: Received) -> Any:
        try:
            return json.loads(req.body)
        except ValueError:
            return None

    @staticmethod
    def json_body(req: Received, problems: list[str]) -> dict[str, Any] | None:
        """The body as a JSON object (its content-type checked), or None after noting why not."""
        _expect(
            req.headers.get("content-type", "").startswith("application/json"),
            "content-type",
            problems,
        )
        try:
            body = json.loads(req.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            problems.append("body is not a JSON object")
            return None
        return body

    @staticmethod
    def basic_auth(req: Received) -> tuple[str, str] | None:
        header = req.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password


def _expect(condition: bool, problem: str, problems: list[str]) -> None:
    if not condition:
        problems.append(problem)


# -- Google Analytics 4 Measurement Protocol -----------------------------------------


class FakeGA4(FakeVendor):
    """POST /mp/collect?measurement_id&api_secret; one client per request, <= 25 events.

    GA4 answers 204 even to payloads it drops, so the fake answers 204 too and only
    records the problems. /debug/mp/collect is the validation server: it records
    nothing and answers 200 `{"validationMessages": [...]}` naming the events whose name
    is in `invalid_names` ("Event at index: [i] ...") and, for a `client_id` in
    `invalid_clients`, the request as a whole.
    """

    def __init__(self, measurement_id: str, api_secret: str) -> None:
        super().__init__()
        self.measurement_id = measurement_id
        self.api_secret = api_secret
        self.invalid_names: set[str] = set()
        self.invalid_clients: set[str] = set()
        self.validated: list[Any] = []  # bodies sent to the validation server

    def check(self, req: Received) -> list[str]:
        problems: list[str] = []
        url = urlsplit(req.path)
        query = parse_qs(url.query)
        _expect(req.method == "POST", f"method {req.method}", problems)
        _expect(url.path in ("/mp/collect", "/debug/mp/collect"), f"path {url.path}", problems)
        _expect(
            query.get("measurement_id") == [self.measurement_id],
            f"measurement_id {query.get('measurement_id')}",
            problems,
        )
        _expect(
            query.get("api_secret") == [self.api_secret], "api_secret missing or wrong", problems
        )
        body = self.json_body(req, problems)
        if body is None:
            return problems
        _expect(
            isinstance(body.get("client_id"), str) and body["client_id"] != "",
            "client_id missing",
            problems,
        )
        unknown = set(body) - {"client_id", "user_id", "timestamp_micros", "user_properties", "user_data",
                               "consent", "non_personalized_ads", "user_location", "ip_override", "device",
                               "validation_behavior", "events"}  # fmt: skip
        _expect(not unknown, f"unknown body keys {sorted(unknown)}", problems)
        events = body.get("events")
        _expect(
            isinstance(events, list) and 0 < len(events) <= 25,
            f"events must hold 1..25 events, got {events!r:.80}",
            problems,
        )
        for event in events if isinstance(events, list) else []:
            _expect(
                isinstance(event, dict) and isinstance(event.get("name"), str),
                f"bad event {event!r:.80}",
                problems,
            )
            _expect(isinstance(event.get("params", {}), dict), "params must be an object", problems)
            _expect(
                set(event) <= {"name", "params", "timestamp_micros"},
                f"unknown event keys {sorted(event)}",
                problems,
            )
        for name, wrapper in (body.get("user_properties") or {}).items():
            _expect(
                isinstance(wrapper, dict) and "value" in wrapper,
                f"user property {name} not {{value: ...}}",
                problems,
            )
        _expect(len(req.body) < 130_000, "body over 130 kB", problems)
        return problems

    def refuse(self, req: Received, problems: list[str]) -> Reply:
        return Reply(204, b"")  # what GA4 does: accepts and drops

    def answer(self, req: Received) -> Reply:
        body = self.body(req)
        if req.path.startswith("/debug/"):
            self.validated.append(body)
            return Reply(200, {"validationMessages": self._validation_messages(body)})
        for event in body["events"]:
            self.accepted.append(
                {**{k: v for k, v in body.items() if k != "events"}, "event": event}
            )
        return Reply(204, b"")

    def _validation_messages(self, body: dict[str, Any]) -> list[dict[str, str]]:
        messages = [
            {
                "fieldPath": "events",
                "description": f"Event at index: [{index}] has invalid name [{event['name']}].",
                "validationCode": "NAME_INVALID",
            }
            for index, event in enumerate(body["events"])
            if event["name"] in self.invalid_names
        ]
        if body["client_id"] in self.invalid_clients:
            messages.append(
                {
                    "fieldPath": "client_id",
                    "description": "client_id is invalid.",
                    "validationCode": "VALUE_INVALID",
                }
            )
        return messages


# -- Segment-compatible tracking API -------------------------------------------------

SEGMENT_CALLS = {"track", "identify", "page", "screen", "group", "alias"}


class FakeSegment(FakeVendor):
    """POST /v1/batch, Basic auth write_key:(empty); 500 KB, 32 KB per event, 2500 events.

    Like Segment, a batch breaking a limit is refused whole with 400; `reject_events`
    (event names) makes the fake refuse any batch holding such a track, the way Segment
    refuses a batch with one oversized event.
    """

    def __init__(self, write_key: str) -> None:
        super().__init__()
        self.write_key = write_key
        self.reject_events: set[str] = set()

    def authenticate(self, req: Received) -> Reply | None:
        if self.basic_auth(req) == (self.write_key, ""):
            return None
        return Reply(401, {"success": False, "message": "invalid write key"})

    def check(self, req: Received) -> list[str]:
        problems: list[str] = []
        _expect(
            req.method == "POST" and req.path == "/v1/batch", f"{req.method} {req.path}", problems
        )
        _expect(
            len(req.body) <= 500 * 1024, f"request of {len(req.body)} bytes over 500 KB", problems
        )
        body = self.json_body(req, problems)
        if body is None:
            return problems
        batch = body.get("batch")
        if not isinstance(batch, list):
            return [*problems, "no batch array"]
        _expect(0 < len(batch) <= 2500, f"{len(batch)} events", problems)
        _expect(isinstance(body.get("sentAt"), str), "sentAt missing", problems)
        for event in batch:
            problems.extend(self._check_event(event))
        return problems

    @staticmethod
    def _check_event(event: Any) -> list[str]:
        problems: list[str] = []
        if not isinstance(event, dict):
            return [f"event {event!r:.60} is not an object"]
        _expect(event.get("type") in SEGMENT_CALLS, f"type {event.get('type')!r}", problems)
        _expect(len(json.dumps(event).encode()) <= 32 * 1024, "event over 32 KB", problems)
        _expect(
            bool(event.get("userId") or event.get("anonymousId")), "no userId/anonymousId", problems
        )
        _expect(isinstance(event.get("messageId"), str), "messageId missing", problems)
        if event.get("type") == "track":
            _expect(
                isinstance(event.get("event"), str) and event["event"] != "",
                "track without event",
                problems,
            )
        return problems

    def answer(self, req: Received) -> Reply:
        batch = self.body(req)["batch"]
        bad = [e.get("event") for e in batch if e.get("event") in self.reject_events]
        if bad:
            return Reply(
                400,
                {
                    "success": False,
                    "code": "invalid_event",
                    "message": f"event {bad[0]!r} is too large",
                },
            )
        self.accepted.extend(batch)
        return Reply(200, {"success": True})


# -- Iterable -------------------------------------------------------------------------


class FakeIterable(FakeVendor):
    """events/track, events/trackBulk, users/update, users/bulkUpdate, commerce/trackPurchase.

    Knobs: `invalid_emails`, `not_found_user_ids`, `forgotten_emails` (per-item failures
    in bulk answers, 400 on single endpoints), `disallowed_events` (event names),
    `unnamed_failure_events` (event names counted in failCount without being named,
    for the bisect path).
    """

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.invalid_emails: set[str] = set()
        self.not_found_user_ids: set[str] = set()
        self.forgotten_emails: set[str] = set()
        self.disallowed_events: set[str] = set()
        self.unnamed_failure_events: set[str] = set()

    def check(self, req: Received) -> list[str]:
        problems: list[str] = []
        _expect(req.method == "POST", f"method {req.method}", problems)
        body = self.json_body(req, problems)
        if body is None:
            return problems
        checks = {
            "/api/events/track": lambda: self._check_event(body),
            "/api/events/trackBulk": lambda: self._check_bulk(body, "events", self._check_event),
            "/api/users/update": lambda: self._check_user(body),
            "/api/users/bulkUpdate": lambda: self._check_bulk(body, "users", self._check_user),
            "/api/commerce/trackPurchase": lambda: self._check_purchase(body),
        }
        check = checks.get(req.path)
        if check is None:
            return [*problems, f"unknown path {req.path}"]
        return problems + check()

    def authenticate(self, req: Received) -> Reply | None:
        if req.headers.get("api-key") == self.api_key:
            return None
        return Reply(401, {"msg": "Invalid API key", "code": "BadApiKey", "params": None})

    def refuse(self, req: Received, problems: list[str]) -> Reply:
        return Reply(400, {"msg": "; ".join(problems), "code": "BadParams", "params": None})

    # -- shape checks ----------------------------------------------------------------

    @staticmethod
    def _identity(item: dict[str, Any], problems: list[str]) -> None:
        _expect(
            bool(item.get("email") or item.get("userId")),
            f"no email/userId in {item!r:.80}",
            problems,
        )

    @staticmethod
    def _created_at(item: dict[str, Any], problems: list[str]) -> None:
        if "createdAt" in item:
            value = item["createdAt"]
            _expect(
                isinstance(value, int) and 10**9 < value < 10**10,
                f"createdAt {value!r} is not Unix seconds",
                problems,
            )

    def _check_event(self, event: Any) -> list[str]:
        problems: list[str] = []
        _expect(
            isinstance(event, dict) and isinstance(event.get("eventName"), str),
            "eventName missing",
            problems,
        )
        if isinstance(event, dict):
            self._identity(event, problems)
            self._created_at(event, problems)
            _expect(
                isinstance(event.get("dataFields", {}), dict), "dataFields not an object", problems
            )
            _expect(len(str(event.get("id", "")).encode()) <= 512, "id over 512 bytes", problems)
        return problems

    def _check_user(self, user: Any) -> list[str]:
        problems: list[str] = []
        if not isinstance(user, dict):
            return ["user is not an object"]
        self._identity(user, problems)
        _expect(isinstance(user.get("dataFields", {}), dict), "dataFields not an object", problems)
        return problems

    def _check_bulk(self, body: dict[str, Any], key: str, check_item: Any) -> list[str]:
        items = body.get(key)
        if not isinstance(items, list) or not items:
            return [f"{key} must be a non-empty array"]
        problems = [f"{len(items)} {key} in one bulk request"] if len(items) > 1000 else []
        for item in items:
            problems.extend(check_item(item))
        return problems

    def _check_purchase(self, body: dict[str, Any]) -> list[str]:
        problems = self._check_user(body.get("user"))
        _expect(isinstance(body.get("total"), (int, float)), "total missing", problems)
        self._created_at(body, problems)
        items = body.get("items")
        _expect(isinstance(items, list), "items missing", problems)
        for item in items if isinstance(items, list) else []:
            missing = [k for k in ("id", "name", "price", "quantity") if k not in item]
            _expect(not missing, f"CommerceItem lacks {missing}", problems)
        return problems

    # -- answers ---------------------------------------------------------------------

    def answer(self, req: Received) -> Reply:
        body = self.body(req)
        if req.path.endswith(("trackBulk", "bulkUpdate")):
            return self._bulk_answer(body.get("events") or body.get("users"))
        user = body.get("user", body)
        reason = self._failure(user)
        if reason is not None:
            return Reply(
                400, {"msg": reason[1], "code": "InvalidEmailAddressError", "params": None}
            )
        if body.get("eventName") in self.disallowed_events:
            msg = f"Event name {body['eventName']} is disallowed from tracking"
            return Reply(200, {"msg": msg, "code": "Success", "params": None})
        self.accepted.append(body)
        return Reply(200, {"msg": "Success", "code": "Success", "params": {"id": body.get("id")}})

    def _failure(self, item: dict[str, Any]) -> tuple[str, str] | None:
        email, user_id = item.get("email"), item.get("userId")
        if email in self.invalid_emails:
            return "invalidEmails", f"invalid email {email}"
        if email in self.forgotten_emails:
            return "forgottenEmails", f"forgotten {email}"
        if user_id in self.not_found_user_ids:
            return "notFoundUserIds", f"userId {user_id} not found"
        return None

    def _bulk_answer(self, items: list[dict[str, Any]]) -> Reply:
        failed: dict[str, list[str]] = {}
        disallowed: list[str] = []
        fail_count = 0
        for item in items:
            failure = self._failure(item)
            if failure is not None:
                key = failure[0]
                failed.setdefault(key, []).append(
                    item["email"] if "Emails" in key else item["userId"]
                )
                fail_count += 1
            elif item.get("eventName") in self.disallowed_events:
                disallowed.append(item["eventName"])
                fail_count += 1
            elif item.get("eventName") in self.unnamed_failure_events:
                fail_count += 1
            else:
                self.accepted.append(item)
        body = {
            "successCount": len(items) - fail_count,
            "failCount": fail_count,
            "failedUpdates": {name: failed.get(name, []) for name in (
                "invalidEmails", "invalidUserIds", "notFoundEmails", "notFoundUserIds",
                "forgottenEmails", "forgottenUserIds")},
            "disallowedEventNames": sorted(set(disallowed)),
            "filteredOutFields": [],
            "createdFields": [],
        }  # fmt: skip
        return Reply(200, body)


# -- Customer.io Track API --------------------------------------------------------------

CIO_ACTIONS = {"identify", "event", "page", "screen"}


class FakeCustomerIO(FakeVendor):
    """Track API v2 /api/v2/batch and v1 customers/{id}, customers/{id}/events, /events.

    Basic auth site_id:api_key (401 otherwise). v2: entries failing `bad_ids` (person
    ids) are named in a 207 `{"errors": [{batch_index, reason, field, message}]}`; v1:
    a 400 `{"meta": {"error": ...}}`.
    """

    def __init__(self, site_id: str, api_key: str) -> None:
        super().__init__()
        self.site_id = site_id
        self.api_key = api_key
        self.bad_ids: set[str] = set()

    def authenticate(self, req: Received) -> Reply | None:
        if self.basic_auth(req) == (self.site_id, self.api_key):
            return None
        return Reply(401, {"meta": {"error": "Unauthorized request"}})

    def check(self, req: Received) -> list[str]:
        problems: list[str] = []
        body = self.json_body(req, problems)
        if body is None:
            return problems
        path = req.path
        if path == "/api/v2/batch":
            _expect(req.method == "POST", f"method {req.method}", problems)
            _expect(len(req.body) < 500 * 1024, "request over 500 KB", problems)
            batch = body.get("batch")
            if not isinstance(batch, list) or not batch:
                return [*problems, "batch must be a non-empty array"]
            for entry in batch:
                problems.extend(self._check_entry(entry))
        elif path.startswith("/api/v1/customers/") and path.endswith("/events"):
            _expect(req.method == "POST", f"method {req.method}", problems)
            problems.extend(self._check_v1_event(body))
        elif path.startswith("/api/v1/customers/"):
            _expect(req.method == "PUT", f"identify must be a PUT, got {req.method}", problems)
            _expect(len(body) <= 300, "over 300 attributes", problems)
        elif path == "/api/v1/events":
            _expect(req.method == "POST", f"method {req.method}", problems)
            _expect(
                isinstance(body.get("anonymous_id"), str),
                "anonymous event without anonymous_id",
                problems,
            )
            problems.extend(self._check_v1_event(body))
        else:
            problems.append(f"unknown path {path}")
        return problems

    @staticmethod
    def _check_entry(entry: Any) -> list[str]:
        problems: list[str] = []
        if not isinstance(entry, dict):
            return ["entry is not an object"]
        _expect(entry.get("type") == "person", f"type {entry.get('type')!r}", problems)
        _expect(entry.get("action") in CIO_ACTIONS, f"action {entry.get('action')!r}", problems)
        identifiers = entry.get("identifiers")
        _expect(
            isinstance(identifiers, dict) and len(identifiers) == 1,
            f"identifiers {identifiers!r}",
            problems,
        )
        _expect(len(json.dumps(entry).encode()) <= 32 * 1024, "entry over 32 KB", problems)
        if entry.get("action") != "identify":
            _expect(
                isinstance(entry.get("name"), str) and entry["name"] != "",
                "event without name",
                problems,
            )
        if "timestamp" in entry:
            ts = entry["timestamp"]
            _expect(
                isinstance(ts, int) and 10**9 < ts < 10**10,
                f"timestamp {ts!r} not Unix seconds",
                problems,
            )
        return problems

    @staticmethod
    def _check_v1_event(body: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        _expect(
            isinstance(body.get("name"), str) and body["name"] != "",
            "event name must not be blank",
            problems,
        )
        _expect(isinstance(body.get("data", {}), dict), "event data must be a hash", problems)
        return problems

    def answer(self, req: Received) -> Reply:
        body = self.body(req)
        if req.path == "/api/v2/batch":
            errors = []
            for index, entry in enumerate(body["batch"]):
                if entry["identifiers"].get("id") in self.bad_ids:
                    errors.append({"batch_index": index, "reason": "invalid", "field": "identifiers",
                                   "message": "person id is not allowed"})  # fmt: skip
                else:
                    self.accepted.append(entry)
            return Reply(207, {"errors": errors}) if errors else Reply(200, {})
        person = req.path.split("/")[4] if req.path.startswith("/api/v1/customers/") else None
        if person in self.bad_ids:
            return Reply(400, {"meta": {"error": "id attribute must be a string value"}})
        self.accepted.append({"path": req.path, "method": req.method, **body})
        return Reply(200, {})
