"""Fake ad-platform conversion APIs (Meta, TikTok, Snapchat, Pinterest, Reddit).

Each checks every request against the vendor's documented contract (path, auth, body
shape, limits, which identifiers must arrive hashed and which must not), records each
deviation in `problems` (tests assert it stays empty), keeps what it accepted in
`events`, and answers as the vendor does: success, the vendor's error bodies, its
throttling replies. `outages` (from FakeVendor) queues whole replies (429, 503) to
answer first.

    meta = FakeMeta(pixel_id="123", token="meta-token")
    server = serve(module_fake_server, meta)
    ...
    assert meta.problems == [] and len(meta.events) == 3
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http import Received, Reply
from tests.fakes.vendors_a import FakeVendor

SHA256 = re.compile(r"[0-9a-f]{64}")
WEEK = 7 * 86_400


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and SHA256.fullmatch(value) is not None


def is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# -- Meta -------------------------------------------------------------------------------


META_HASHED = ("em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country")
META_ACTION_SOURCES = {
    "website", "app", "email", "phone_call", "chat", "physical_store",
    "system_generated", "business_messaging", "other",
}  # fmt: skip


def meta_error(code: int, message: str, subcode: int | None = None, **extra: Any) -> dict[str, Any]:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf123"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": {**error, **extra}}


def meta_throttled(minutes: int = 2) -> Reply:
    """What the Graph API answers an app over its limit: code 17 and the usage header."""
    usage = {
        "123": [
            {
                "type": "ads_management",
                "call_count": 100,
                "estimated_time_to_regain_access": minutes,
            }
        ]
    }
    return Reply(
        400,
        meta_error(17, "(#17) User request limit reached", is_transient=True),
        {"X-Business-Use-Case-Usage": json.dumps(usage)},
    )


class FakeMeta(FakeVendor):
    """`POST /{version}/{pixel_id}/events`: all-or-nothing batches of up to 1,000 events."""

    MAX_EVENTS = 1000

    def __init__(
        self, pixel_id: str, token: str, *, refuse_emails: frozenset[str] = frozenset()
    ) -> None:
        super().__init__()
        self.pixel_id = pixel_id
        self.token = token
        self.refuse_emails = refuse_emails  # hashed emails whose events Meta refuses (code 100)
        self.events: list[dict[str, Any]] = []
        self.test_event_codes: list[str | None] = []

    def answer(self, req: Received) -> Reply:
        if req.method != "POST" or not re.fullmatch(
            rf"/v\d+\.\d+/{self.pixel_id}/events", req.path
        ):
            self.problem(f"{req.method} {req.path}")
            return Reply(400, meta_error(803, "Some of the aliases you requested do not exist"))
        body = self.json_body(req)
        if not isinstance(body, dict):
            return Reply(400, meta_error(100, "Invalid parameter"))
        if body.get("access_token") != self.token:
            return Reply(
                400, meta_error(190, "Invalid OAuth access token - Cannot parse access token")
            )
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= self.MAX_EVENTS:
            self.problem(f"data has {len(data) if isinstance(data, list) else data!r} events")
            return Reply(400, meta_error(100, "Invalid parameter", 2804019))
        for index, event in enumerate(data):
            problem = self.event_problem(event)
            if problem:
                # Meta rejects the entire batch for one invalid event.
                return Reply(
                    400,
                    meta_error(
                        100, "Invalid parameter", 2804008,
                        error_user_title="Invalid event", error_user_msg=f"event {index}: {problem}",
                    ),
                )  # fmt: skip
        self.events.extend(data)
        self.test_event_codes.append(body.get("test_event_code"))
        return Reply(200, {"events_received": len(data), "messages": [], "fbtrace_id": "AbCdEf123"})

    def event_problem(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "not an object"
        if not isinstance(event.get("event_name"), str) or not event["event_name"]:
            return "event_name missing"
        event_time = event.get("event_time")
        if not isinstance(event_time, int) or time.time() - event_time > WEEK:
            return "event_time is not Unix seconds within the last 7 days"
        if event.get("action_source") not in META_ACTION_SOURCES:
            return "action_source invalid"
        user = event.get("user_data")
        if not isinstance(user, dict) or not user:
            return "user_data missing"
        for key in META_HASHED:
            if key in user:
                values = user[key] if isinstance(user[key], list) else [user[key]]
                if not all(is_sha256(v) for v in values):
                    self.problem(f"user_data.{key} is not SHA-256 hashed: {user[key]!r}")
                    return f"user_data.{key} must be hashed"
        for key in ("client_ip_address",):
            if key in user and not is_ip(user[key]):
                self.problem(f"user_data.{key} is not a plain IP address: {user[key]!r}")
        for key in ("fbp", "fbc"):
            if key in user and not str(user[key]).startswith("fb."):
                self.problem(f"user_data.{key} is hashed or malformed: {user[key]!r}")
        if event["action_source"] == "website" and not (
            event.get("event_source_url") and user.get("client_user_agent")
        ):
            return "website events require event_source_url and client_user_agent"
        if event["event_name"] == "Purchase":
            custom = event.get("custom_data") or {}
            if not isinstance(custom.get("value"), (int, float)) or not custom.get("currency"):
                return "Purchase events require custom_data.value and currency"
        if set(user.get("em") or []) & self.refuse_emails:
            return "this user's data cannot be processed"
        return None


# -- TikTok -----------------------------------------------------------------------------


TIKTOK_HASHED = ("email", "phone", "external_id")


def tiktok_reply(code: int, message: str) -> Reply:
    """TikTok answers HTTP 200 with the outcome in `code` (0: accepted)."""
    return Reply(
        200, {"code": code, "message": message, "request_id": "202612031200000001", "data": {}}
    )


class FakeTikTok(FakeVendor):
    """`POST /open_api/v1.3/event/track/`: batches of up to 1,000 events, codes in a 200 body."""

    MAX_EVENTS = 1000

    def __init__(
        self, pixel_code: str, token: str, *, refuse_events: frozenset[str] = frozenset()
    ) -> None:
        super().__init__()
        self.pixel_code = pixel_code
        self.token = token
        self.refuse_events = refuse_events  # event_ids whose batch TikTok refuses (code 40002)
        self.events: list[dict[str, Any]] = []
        self.test_event_codes: list[str | None] = []

    def answer(self, req: Received) -> Reply:
        if req.method != "POST" or req.path != "/open_api/v1.3/event/track/":
            self.problem(f"{req.method} {req.path}")
            return Reply(404, "Not Found")
        if req.headers.get("access-token") != self.token:
            return tiktok_reply(40105, "The access token is invalid or has been revoked.")
        body = self.json_body(req)
        if not isinstance(body, dict):
            return tiktok_reply(40002, "Invalid JSON")
        if body.get("event_source") not in ("web", "app", "offline", "crm"):
            self.problem(f"event_source {body.get('event_source')!r}")
        if body.get("event_source_id") != self.pixel_code:
            return tiktok_reply(40001, "No permission to operate pixel")
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= self.MAX_EVENTS:
            self.problem(f"data has {len(data) if isinstance(data, list) else data!r} events")
            return tiktok_reply(40002, "data: between 1 and 1000 events")
        for index, event in enumerate(data):
            problem = self.event_problem(event)
            if problem:
                return tiktok_reply(40002, f"data[{index}]: {problem}")
        self.events.extend(data)
        self.test_event_codes.append(body.get("test_event_code"))
        return tiktok_reply(0, "OK")

    def event_problem(self, event: Any) -> str | None:
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            return "event is required"
        if not isinstance(event.get("event_time"), int):
            self.problem(f"event_time {event.get('event_time')!r} is not Unix seconds")
            return "event_time must be a Unix timestamp in seconds"
        user = event.get("user")
        if not isinstance(user, dict) or not user:
            return "user is required"
        for key in TIKTOK_HASHED:
            if key in user:
                values = user[key] if isinstance(user[key], list) else [user[key]]
                if not all(is_sha256(v) for v in values):
                    self.problem(f"user.{key} is not SHA-256 hashed: {user[key]!r}")
                    return f"user.{key} must be SHA-256 hashed"
        if "ip" in user and not is_ip(user["ip"]):
            self.problem(f"user.ip is not a plain IP address: {user['ip']!r}")
        if event["event"] == "Purchase":
            properties = event.get("properties") or {}
            if not isinstance(properties.get("value"), (int, float)) or not properties.get(
                "currency"
            ):
                return "properties.value and currency are required for Purchase"
        if event.get("event_id") in self.refuse_events:
            return "properties.contents: invalid content_id"
        return None


# -- Snapchat ---------------------------------------------------------------------------


SNAP_HASHED = ("em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id")
SNAP_MAX_AGE = 37 * 86_400


class FakeSnapchat(FakeVendor):
    """`POST /v3/{pixel_id}/events?access_token=...` (and `/events/validate`): up to 2,000 events."""

    MAX_EVENTS = 2000

    def __init__(
        self, pixel_id: str, token: str, *, refuse_events: frozenset[str] = frozenset()
    ) -> None:
        super().__init__()
        self.pixel_id = pixel_id
        self.token = token
        self.refuse_events = refuse_events  # event_ids whose batch Snap refuses (400)
        self.events: list[dict[str, Any]] = []
        self.validated: list[dict[str, Any]] = []

    def answer(self, req: Received) -> Reply:
        parts = urlsplit(req.path)
        if req.method != "POST" or parts.path not in (
            f"/v3/{self.pixel_id}/events", f"/v3/{self.pixel_id}/events/validate",
        ):  # fmt: skip
            self.problem(f"{req.method} {parts.path}")
            return Reply(404, {"status": "ERROR", "reason": "Not found"})
        if parse_qs(parts.query).get("access_token") != [self.token]:
            return Reply(401, {"status": "UNAUTHORIZED", "reason": "Invalid access token"})
        body = self.json_body(req)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not 1 <= len(data) <= self.MAX_EVENTS:
            self.problem(f"data has {len(data) if isinstance(data, list) else data!r} events")
            return Reply(400, {"status": "INVALID", "reason": "data must hold 1 to 2000 events"})
        for index, event in enumerate(data):
            problem = self.event_problem(event)
            if problem:
                return Reply(400, {"status": "INVALID", "reason": f"data[{index}]: {problem}"})
        (self.validated if parts.path.endswith("/validate") else self.events).extend(data)
        return Reply(200, {"status": "VALID", "reason": ""})

    def event_problem(self, event: Any) -> str | None:
        if not isinstance(event, dict) or not event.get("event_name"):
            return "event_name is required"
        event_time = event.get("event_time")
        if not isinstance(event_time, int) or time.time() - event_time > SNAP_MAX_AGE:
            return "event_time must be Unix seconds within the last 37 days"
        if event.get("action_source") not in ("WEB", "MOBILE_APP", "OFFLINE"):
            return "action_source must be WEB, MOBILE_APP or OFFLINE"
        user = event.get("user_data")
        if not isinstance(user, dict) or not user:
            return "user_data is required"
        for key in SNAP_HASHED:
            if key in user:
                values = user[key] if isinstance(user[key], list) else [user[key]]
                if not all(is_sha256(v) for v in values):
                    self.problem(f"user_data.{key} is not SHA-256 hashed: {user[key]!r}")
                    return f"user_data.{key} must be hashed"
        if "client_ip_address" in user and not is_ip(user["client_ip_address"]):
            self.problem(
                f"user_data.client_ip_address is not a plain IP: {user['client_ip_address']!r}"
            )
        if event["event_name"] == "PURCHASE":
            custom = event.get("custom_data") or {}
            if custom.get("value") is None or not custom.get("currency"):
                return "PURCHASE requires custom_data.value and currency"
        if event.get("event_id") in self.refuse_events:
            return "custom_data.contents is malformed"
        return None


# -- Pinterest --------------------------------------------------------------------------


PINTEREST_HASHED = (*SNAP_HASHED, "hashed_maids")


class FakePinterest(FakeVendor):
    """`POST /v5/ad_accounts/{id}/events`: per-event statuses, 422 when some fail, `?test=true`."""

    MAX_EVENTS = 1000

    def __init__(
        self, ad_account: str, token: str, *, refuse_events: frozenset[str] = frozenset()
    ) -> None:
        super().__init__()
        self.ad_account = ad_account
        self.token = token
        self.refuse_events = refuse_events  # event_ids Pinterest does not process
        self.events: list[dict[str, Any]] = []
        self.tested: list[dict[str, Any]] = []

    def answer(self, req: Received) -> Reply:
        parts = urlsplit(req.path)
        if req.method != "POST" or parts.path != f"/v5/ad_accounts/{self.ad_account}/events":
            self.problem(f"{req.method} {parts.path}")
            return Reply(404, {"code": 404, "message": "Not found"})
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"code": 2, "message": "Authentication failed."})
        body = self.json_body(req)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not 1 <= len(data) <= self.MAX_EVENTS:
            self.problem(f"data has {len(data) if isinstance(data, list) else data!r} events")
            return Reply(400, {"code": 1, "message": "Invalid request body"})
        answers = []
        for event in data:
            problem = self.event_problem(event)
            answers.append(
                {"status": "failed", "error_message": problem, "warning_message": None}
                if problem
                else {"status": "processed", "error_message": None, "warning_message": None}
            )
            if not problem:
                (
                    self.tested if parse_qs(parts.query).get("test") == ["true"] else self.events
                ).append(event)
        processed = sum(1 for a in answers if a["status"] == "processed")
        reply = {
            "num_events_received": len(data),
            "num_events_processed": processed,
            "events": answers,
        }
        return Reply(200 if processed == len(data) else 422, reply)

    def event_problem(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "event must be an object"
        for key in ("event_name", "action_source", "event_time", "event_id", "user_data"):
            if not event.get(key):
                return f"'{key}' is a required property"
        if not isinstance(event["event_time"], int):
            self.problem(f"event_time {event['event_time']!r} is not Unix seconds")
        if event["action_source"] not in ("web", "app_android", "app_ios", "offline"):
            return f"'{event['action_source']}' is not a valid action_source"
        user = event["user_data"]
        for key in PINTEREST_HASHED:
            values = user.get(key, [])
            if not isinstance(values, list) or not all(is_sha256(v) for v in values):
                self.problem(f"user_data.{key} is not a list of SHA-256: {values!r}")
                return f"user_data.{key} must be a list of sha256 hashes"
        if not (
            user.get("em")
            or user.get("hashed_maids")
            or (user.get("client_ip_address") and user.get("client_user_agent"))
        ):
            return "user_data needs em, hashed_maids or client_ip_address + client_user_agent"
        custom = event.get("custom_data") or {}
        for key in ("value", "predicted_ltv"):
            if key in custom and not isinstance(custom[key], str):
                self.problem(f"custom_data.{key} is {custom[key]!r}, not a string")
        if event.get("event_id") in self.refuse_events:
            return "Event is older than the maximum allowed age."
        return None


# -- Reddit -----------------------------------------------------------------------------


REDDIT_HASHED = ("email", "phone_number", "external_id", "ip_address", "idfa", "aaid")
REDDIT_TRACKING_TYPES = {
    "PageVisit", "ViewContent", "Search", "AddToCart", "AddToWishlist", "Lead", "Purchase", "SignUp", "Custom",
}  # fmt: skip


class FakeReddit(FakeVendor):
    """`POST /api/v2.0/conversions/events/{account_id}`: 400 with `invalid_events` indexes."""

    MAX_EVENTS = 1000

    def __init__(
        self, account_id: str, token: str, *, refuse_events: frozenset[str] = frozenset()
    ) -> None:
        super().__init__()
        self.account_id = account_id
        self.token = token
        self.refuse_events = refuse_events  # conversion_ids Reddit names in invalid_events
        self.events: list[dict[str, Any]] = []
        self.test_requests = 0

    def answer(self, req: Received) -> Reply:
        if req.method != "POST" or req.path != f"/api/v2.0/conversions/events/{self.account_id}":
            self.problem(f"{req.method} {req.path}")
            return Reply(404, {"message": "Not Found"})
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"message": "Unauthorized"})
        body = self.json_body(req)
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= self.MAX_EVENTS:
            self.problem(
                f"events has {len(events) if isinstance(events, list) else events!r} entries"
            )
            return Reply(400, {"message": "events must hold 1 to 1000 events"})
        invalid = [
            {"error_message": problem, "event_index": index}
            for index, event in enumerate(events)
            if (problem := self.event_problem(event))
        ]
        if invalid:
            return Reply(400, {"invalid_events": invalid})
        if body.get("test_mode"):
            self.test_requests += 1
        else:
            self.events.extend(events)
        return Reply(200, {"message": f"Successfully processed {len(events)} conversion events."})

    def event_problem(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "event must be an object"
        try:
            datetime.fromisoformat(str(event.get("event_at")).replace("Z", "+00:00"))
        except ValueError:
            self.problem(f"event_at {event.get('event_at')!r} is not ISO 8601")
            return "event_at: invalid timestamp"
        kind = event.get("event_type") or {}
        if kind.get("tracking_type") not in REDDIT_TRACKING_TYPES:
            return "event_type.tracking_type: invalid value"
        user = event.get("user") or {}
        for key in REDDIT_HASHED:
            if key in user and not is_sha256(user[key]):
                self.problem(f"user.{key} is not SHA-256 hashed: {user[key]!r}")
                return f"user.{key}: must be hashed"
        metadata = event.get("event_metadata") or {}
        if metadata.get("conversion_id") in self.refuse_events:
            return "event_metadata.currency: invalid currency code"
        return None
