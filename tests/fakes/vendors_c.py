"""Fake HubSpot, Intercom and LinkedIn APIs for FakeServer (tests/fakes/http.py).

As in vendors_b: each fake checks every request as its vendor documents it and records
what it found wrong in `problems` (tests end with `assert fake.problems == []`),
answers like the vendor (success bodies, per-item errors driven by knobs), and takes
scripted whole-request answers queued with `fail_next` (429, 5xx, 400).
"""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import datetime
from typing import Any

from tests.fakes.http import Received, Reply
from tests.fakes.vendors_a import _is_iso8601
from tests.fakes.vendors_b import FakeVendor, _expect

SCALARS = (str, int, float, bool, type(None))


def _scalar_values(kind: str, values: Any, problems: list[str]) -> None:
    if values is None:
        return
    if not isinstance(values, dict):
        problems.append(f"{kind} is not an object")
        return
    nested = [k for k, v in values.items() if not isinstance(v, SCALARS)]
    _expect(not nested, f"{kind} with non-scalar values {nested}", problems)


# -- HubSpot ------------------------------------------------------------------------------


class FakeHubSpot(FakeVendor):
    """/events/v3/send/batch (<= 500, 204) and /crm/v3/objects/contacts/batch/upsert (<= 100).

    Bearer token (401 `INVALID_AUTHENTICATION` otherwise). An event named in
    `unknown_events` makes the whole events request a 400 VALIDATION_ERROR (HubSpot
    documents no per-item errors there); a contact whose email is in `invalid_emails`
    is named in a 207's `errors[].context.ids`, the others are upserted.
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.unknown_events: set[str] = set()
        self.invalid_emails: set[str] = set()
        self.unnamed_failures: set[str] = set()  # refused with an error naming no id
        self.contacts: dict[str, dict[str, Any]] = {}  # email -> properties
        self._ids = itertools.count(101)

    def authenticate(self, req: Received) -> Reply | None:
        if req.headers.get("authorization") == f"Bearer {self.token}":
            return None
        return Reply(401, {"status": "error", "category": "INVALID_AUTHENTICATION",
                           "message": "Authentication credentials not found."})  # fmt: skip

    def check(self, req: Received) -> list[str]:
        problems: list[str] = []
        _expect(req.method == "POST", f"method {req.method}", problems)
        body = self.json_body(req, problems)
        if body is None:
            return problems
        inputs = body.get("inputs")
        _expect(set(body) == {"inputs"}, f"body keys {sorted(body)}", problems)
        if req.path == "/events/v3/send/batch":
            limit, check = 500, self._check_event
        elif req.path == "/crm/v3/objects/contacts/batch/upsert":
            limit, check = 100, self._check_contact
        else:
            return [*problems, f"unknown path {req.path}"]
        if not isinstance(inputs, list) or not 0 < len(inputs) <= limit:
            return [*problems, f"inputs must hold 1..{limit} items"]
        for item in inputs:
            check(item, problems)
        if limit == 100:
            ids = [str(i.get("id")).lower() for i in inputs]
            _expect(len(ids) == len(set(ids)), "Duplicate IDs found in batch input", problems)
        return problems

    @staticmethod
    def _check_event(item: Any, problems: list[str]) -> None:
        if not isinstance(item, dict):
            problems.append("input is not an object")
            return
        allowed = {"eventName", "email", "utk", "objectId", "occurredAt", "uuid", "properties"}
        _expect(set(item) <= allowed, f"unknown input keys {sorted(set(item) - allowed)}", problems)
        _expect(re.fullmatch(r"pe\d+_.+", str(item.get("eventName"))) is not None,
                f"eventName {item.get('eventName')!r}", problems)  # fmt: skip
        _expect(any(item.get(k) for k in ("email", "utk", "objectId")), "no identifier", problems)
        if "occurredAt" in item:
            _expect(_is_iso8601(item["occurredAt"]), f"occurredAt {item['occurredAt']!r}", problems)
        if "uuid" in item:
            try:
                uuid.UUID(str(item["uuid"]))
            except ValueError:
                problems.append(f"uuid {item['uuid']!r} is not a UUID")
        _expect(isinstance(item.get("properties"), dict), "properties missing", problems)
        _scalar_values("properties", item.get("properties"), problems)

    @staticmethod
    def _check_contact(item: Any, problems: list[str]) -> None:
        if not isinstance(item, dict):
            problems.append("input is not an object")
            return
        _expect(
            item.get("idProperty") == "email", f"idProperty {item.get('idProperty')!r}", problems
        )
        _expect(isinstance(item.get("id"), str) and item["id"] != "", "id missing", problems)
        _expect(isinstance(item.get("properties"), dict), "properties missing", problems)
        _scalar_values("properties", item.get("properties"), problems)

    def refuse(self, req: Received, problems: list[str]) -> Reply:
        return Reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                           "message": "; ".join(problems)})  # fmt: skip

    def answer(self, req: Received) -> Reply:
        inputs = self.body(req)["inputs"]
        if req.path.startswith("/events/"):
            unknown = [i["eventName"] for i in inputs if i["eventName"] in self.unknown_events]
            if unknown:
                return Reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                                   "message": f"Event definition {unknown[0]} not found"})  # fmt: skip
            self.accepted.extend(inputs)
            return Reply(204, b"")
        results, errors = [], []
        for item in inputs:
            email = item["id"].lower()
            if email in self.invalid_emails | self.unnamed_failures:
                error = {"status": "error", "category": "VALIDATION_ERROR",
                         "message": f"Property values were not valid: {email} is not a valid email"}  # fmt: skip
                if email in self.invalid_emails:
                    error["context"] = {"ids": [item["id"]]}
                errors.append(error)
                continue
            self.accepted.append(item)
            self.contacts.setdefault(email, {}).update(item["properties"])
            results.append({"id": str(next(self._ids)), "new": True,
                            "properties": {"email": email, **item["properties"]}})  # fmt: skip
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body |= {"numErrors": len(errors), "errors": errors}
        return Reply(207 if errors else 200, body)


# -- Intercom -----------------------------------------------------------------------------


class FakeIntercom(FakeVendor):
    """POST /events (202), POST /contacts/search, POST /contacts, PUT /contacts/{id}.

    `accepted` holds every event and contact write Intercom took.

    Bearer token and an `Intercom-Version` header (401 `error.list` otherwise). Events
    of a `user_id` in `unknown_users` get a 404 `not_found`; a contact whose email is in
    `invalid_emails` a 400 `parameter_invalid`. Creating a contact whose external_id
    exists is a 409, as Intercom answers.
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.unknown_users: set[str] = set()
        self.invalid_emails: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.contacts: dict[str, dict[str, Any]] = {}  # Intercom id -> contact
        self._ids = itertools.count(1)

    @staticmethod
    def error(status: int, code: str, message: str) -> Reply:
        return Reply(status, {"type": "error.list", "request_id": "req-1",
                              "errors": [{"code": code, "message": message}]})  # fmt: skip

    def authenticate(self, req: Received) -> Reply | None:
        if req.headers.get("authorization") == f"Bearer {self.token}":
            return None
        return self.error(401, "unauthorized", "Access Token Invalid")

    def check(self, req: Received) -> list[str]:
        problems: list[str] = []
        _expect(bool(req.headers.get("intercom-version")), "no Intercom-Version", problems)
        body = self.json_body(req, problems)
        if body is None:
            return problems
        route = (req.method, re.sub(r"^/contacts/(?!search$)[^/]+$", "/contacts/{id}", req.path))
        if route == ("POST", "/events"):
            self._check_event(body, problems)
        elif route == ("POST", "/contacts/search"):
            query = body.get("query") or {}
            _expect(query.get("field") in ("external_id", "email") and query.get("operator") == "="
                    and isinstance(query.get("value"), str), f"search query {query}", problems)  # fmt: skip
        elif route in (("POST", "/contacts"), ("PUT", "/contacts/{id}")):
            self._check_contact(body, problems)
        else:
            problems.append(f"unknown route {req.method} {req.path}")
        return problems

    @staticmethod
    def _check_event(body: dict[str, Any], problems: list[str]) -> None:
        allowed = {"event_name", "created_at", "user_id", "email", "id", "metadata"}
        _expect(set(body) <= allowed, f"unknown keys {sorted(set(body) - allowed)}", problems)
        _expect(isinstance(body.get("event_name"), str), "event_name", problems)
        created = body.get("created_at")
        _expect(isinstance(created, int) and 10**9 < created < 10**10,
                f"created_at {created!r} is not Unix seconds", problems)  # fmt: skip
        _expect(any(body.get(k) for k in ("user_id", "email", "id")), "no user", problems)
        metadata = body.get("metadata") or {}
        _expect(len(metadata) <= 10, "over 10 metadata keys", problems)
        for name, value in metadata.items():
            if isinstance(value, dict):
                _expect(set(value) in ({"url", "value"}, {"amount", "currency"}),
                        f"nested metadata {name}", problems)  # fmt: skip
            else:
                _expect(isinstance(value, SCALARS), f"metadata {name} is {value!r}", problems)

    @staticmethod
    def _check_contact(body: dict[str, Any], problems: list[str]) -> None:
        _expect(body.get("role") in ("user", "lead"), f"role {body.get('role')!r}", problems)
        _expect(
            bool(body.get("external_id") or body.get("email")), "no external_id/email", problems
        )
        for key in ("signed_up_at", "last_seen_at"):
            if key in body:
                _expect(isinstance(body[key], int), f"{key} is not Unix seconds", problems)
        _scalar_values("custom_attributes", body.get("custom_attributes"), problems)

    def refuse(self, req: Received, problems: list[str]) -> Reply:
        return self.error(400, "parameter_invalid", "; ".join(problems))

    def answer(self, req: Received) -> Reply:
        body = self.body(req)
        if req.path == "/events":
            if body.get("user_id") in self.unknown_users:
                return self.error(404, "not_found", "User Not Found")
            self.events.append(body)
            self.accepted.append(body)
            return Reply(202, b"")
        if req.path == "/contacts/search":
            field, value = body["query"]["field"], body["query"]["value"]
            data = [{"type": "contact", "id": cid} for cid, c in self.contacts.items()
                    if c.get(field) == value]  # fmt: skip
            return Reply(200, {"type": "list", "data": data, "total_count": len(data)})
        if body.get("email") in self.invalid_emails:
            return self.error(400, "parameter_invalid", f"Email {body['email']} is invalid")
        if req.method == "PUT":
            cid = req.path.rsplit("/", 1)[1]
            self.contacts[cid] = {**self.contacts[cid], **body}
            self.accepted.append(body)
            return Reply(200, {"type": "contact", "id": cid, **self.contacts[cid]})
        existing = body.get("external_id") and any(
            c.get("external_id") == body["external_id"] for c in self.contacts.values()
        )
        if existing:
            return self.error(409, "conflict", "A contact matching those details already exists")
        cid = f"c{next(self._ids)}"
        self.contacts[cid] = body
        self.accepted.append(body)
        return Reply(200, {"type": "contact", "id": cid, **body})


# -- LinkedIn -----------------------------------------------------------------------------

LINKEDIN_ID_TYPES = {"SHA256_EMAIL", "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "ACXIOM_ID",
                     "ORACLE_MOAT_ID", "PLAINTEXT_IP_ADDRESS", "GOOGLE_AID"}  # fmt: skip


class FakeLinkedIn(FakeVendor):
    """POST /conversionEvents with X-RestLi-Method BATCH_CREATE (<= 5,000 elements).

    Bearer token (401 `INVALID_ACCESS_TOKEN` otherwise), `LinkedIn-Version: YYYYMM` and
    `X-Restli-Protocol-Version: 2.0.0`. Answers 200 `{"elements": [{"status": 201}, ...]}`;
    an element whose rule id is in `unknown_rules` gets `{"status": 400, "error": ...}`,
    one in `throttled_rules` `{"status": 429, ...}`.
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.unknown_rules: set[str] = set()
        self.throttled_rules: set[str] = set()  # elements answered 429

    def authenticate(self, req: Received) -> Reply | None:
        if req.headers.get("authorization") == f"Bearer {self.token}":
            return None
        return Reply(401, {"status": 401, "serviceErrorCode": 65600,
                           "code": "INVALID_ACCESS_TOKEN", "message": "Invalid access token"})  # fmt: skip

    def check(self, req: Received) -> list[str]:
        problems: list[str] = []
        _expect((req.method, req.path) == ("POST", "/conversionEvents"),
                f"route {req.method} {req.path}", problems)  # fmt: skip
        _expect(re.fullmatch(r"\d{6}", req.headers.get("linkedin-version", "")) is not None,
                "LinkedIn-Version", problems)  # fmt: skip
        _expect(req.headers.get("x-restli-protocol-version") == "2.0.0", "protocol", problems)
        _expect(req.headers.get("x-restli-method") == "BATCH_CREATE", "X-RestLi-Method", problems)
        body = self.json_body(req, problems)
        elements = (body or {}).get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= 5000:
            return [*problems, "elements must hold 1..5000 conversions"]
        for element in elements:
            self._check_element(element, problems)
        return problems

    @staticmethod
    def _check_element(element: Any, problems: list[str]) -> None:
        allowed = {"conversion", "conversionHappenedAt", "conversionValue", "eventId", "user"}
        _expect(set(element) <= allowed, f"unknown keys {sorted(set(element) - allowed)}", problems)
        _expect(re.fullmatch(r"urn:lla:llaPartnerConversion:\d+", str(element.get("conversion")))
                is not None, f"conversion {element.get('conversion')!r}", problems)  # fmt: skip
        happened = element.get("conversionHappenedAt")
        now_ms = datetime.now().timestamp() * 1000
        _expect(isinstance(happened, int) and now_ms - 90 * 86_400_000 < happened <= now_ms + 60_000,
                f"conversionHappenedAt {happened!r} not epoch ms of the last 90 days", problems)  # fmt: skip
        value = element.get("conversionValue")
        if value is not None:
            _expect(isinstance(value.get("amount"), str) and re.fullmatch(r"[A-Z]{3}",
                    str(value.get("currencyCode"))) is not None, f"conversionValue {value}", problems)  # fmt: skip
        user = element.get("user") or {}
        ids = user.get("userIds") or []
        _expect(bool(ids) and all(i.get("idType") in LINKEDIN_ID_TYPES for i in ids),
                f"userIds {ids}", problems)  # fmt: skip
        for item in ids:
            if item.get("idType") == "SHA256_EMAIL":
                _expect(re.fullmatch(r"[0-9a-f]{64}", str(item.get("idValue"))) is not None,
                        "SHA256_EMAIL is not a lowercase SHA-256", problems)  # fmt: skip
        info = user.get("userInfo")
        if info is not None:
            _expect(bool(info.get("firstName") and info.get("lastName")),
                    "userInfo without firstName and lastName", problems)  # fmt: skip

    def refuse(self, req: Received, problems: list[str]) -> Reply:
        return Reply(
            400, {"status": 400, "code": "INVALID_REQUEST", "message": "; ".join(problems)}
        )

    def answer(self, req: Received) -> Reply:
        results = []
        for element in self.body(req)["elements"]:
            rule = element["conversion"].rsplit(":", 1)[1]
            if rule in self.throttled_rules:
                results.append({"status": 429, "error": {"status": 429, "code": "TOO_MANY_REQUESTS",
                                "message": "Resource level throttle limit reached"}})  # fmt: skip
            elif rule in self.unknown_rules:
                results.append({"status": 400, "error": {"status": 400, "code": "INVALID_ARGUMENT",
                                "message": f"Conversion rule {rule} does not exist"}})  # fmt: skip
            else:
                self.accepted.append(element)
                results.append({"status": 201})
        return Reply(200, {"elements": results})
