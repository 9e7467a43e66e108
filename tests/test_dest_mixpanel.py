"""Mixpanel /import (strict) and /engage against a fake Mixpanel on 127.0.0.1."""

from __future__ import annotations

import base64
import time

import pytest

from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.mixpanel import MixpanelDestination
from tests.fakes.http import Reply
from tests.fakes.vendors_a import FakeMixpanel, send_batch, serve

TOKEN = "tok-abc"
SECRET = "sec-xyz"


@pytest.fixture
def mixpanel(module_fake_server):
    fake = FakeMixpanel(token=TOKEN, secret=SECRET)
    server = serve(module_fake_server, fake)
    dest = MixpanelDestination(
        "mp", {"project_token": TOKEN, "api_secret": SECRET, "base_url": server.url}
    )
    return fake, server, dest


def event(n: int, **extra):
    return {
        "type": "track",
        "event": "Signed Up",
        "messageId": f"msg-{n}",
        "userId": f"u{n}",
        "timestamp": "2026-11-26T12:00:00Z",
        **extra,
    }


def track(dest: MixpanelDestination, n: int, distinct_id: str | None = None, **properties):
    required = {"event": "Signed Up", "distinct_id": distinct_id or f"user-{n}"}
    return dest.build_payload(
        "custom", MappedEvent(required, user={"plan": "pro"}, properties=properties), event(n)
    )


def test_catalog_marks_credentials_secret():
    entry = MixpanelDestination.catalog
    assert {"project_token", "api_secret", "service_account_secret"} <= entry.secret_fields
    assert entry.max_batch_size == 2000 and entry.max_batch_bytes == 10 * 1024 * 1024
    custom = entry.event_type("custom")
    assert custom is not None and [f.name for f in custom.required] == ["event", "distinct_id"]


def test_event_payload_layout():
    dest = MixpanelDestination("mp", {"project_token": TOKEN})
    payload = track(dest, 1, referrer="friend")
    assert payload == {
        "event": "Signed Up",
        "properties": {
            "plan": "pro",
            "referrer": "friend",
            "time": 1795694400000,
            "distinct_id": "user-1",
            "$insert_id": "msg-1",
            "token": TOKEN,
        },
    }
    assert dest.check_payload("custom", payload) is None


def test_message_ids_mixpanel_would_refuse_are_hashed_stably():
    dest = MixpanelDestination("mp", {"project_token": TOKEN})
    mapped = MappedEvent({"event": "x", "distinct_id": "user-1"})
    weird = event(1, messageId="ajs-next-1700000000000-0c1e2d3f:4a5b/6c7d8e9f")
    first = dest.build_payload("custom", mapped, weird)["properties"]["$insert_id"]
    second = dest.build_payload("custom", mapped, weird)["properties"]["$insert_id"]
    assert first == second and len(first) == 36 and first.isalnum()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"distinct_id": "undefined"}, "placeholder"),
        ({"time": 1000}, "1971"),
        ({"time": "soon"}, "`time`"),
        ({"$insert_id": "has spaces in it"}, "$insert_id"),
    ],
)
def test_check_payload_refuses_what_mixpanel_would(change, message):
    dest = MixpanelDestination("mp", {"project_token": TOKEN})
    payload = track(dest, 1)
    payload["properties"].update(change)
    problem = dest.check_payload("custom", payload)
    assert problem is not None and message in problem


def test_import_uses_strict_mode_and_the_project_secret(mixpanel):
    fake, server, dest = mixpanel
    result = send_batch(dest, "custom", [track(dest, n) for n in range(3)])
    assert [i.status for i in result.items] == [ItemStatus.DELIVERED] * 3
    assert fake.problems == []
    (request,) = server.requests
    assert request.path == "/import?strict=1"
    assert (
        request.headers["authorization"]
        == "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()
    )
    assert set(fake.ingested) == {"msg-0", "msg-1", "msg-2"}


def test_service_account_adds_project_id(module_fake_server):
    fake = FakeMixpanel(token=TOKEN, secret="sa-secret", project_id="12345")
    server = serve(module_fake_server, fake)
    config = {
        "project_token": TOKEN,
        "service_account_username": "sa.user",
        "service_account_secret": "sa-secret",
        "project_id": "12345",
        "base_url": server.url,
    }
    dest = MixpanelDestination("mp", config)
    result = send_batch(dest, "custom", [track(dest, 1)])
    assert result.items[0].status is ItemStatus.DELIVERED
    assert server.requests[0].path == "/import?strict=1&project_id=12345"
    assert fake.problems == []


def test_project_token_alone_authenticates_import(module_fake_server):
    fake = FakeMixpanel(token=TOKEN)
    server = serve(module_fake_server, fake)
    dest = MixpanelDestination("mp", {"project_token": TOKEN, "base_url": server.url})
    assert send_batch(dest, "custom", [track(dest, 1)]).items[0].status is ItemStatus.DELIVERED


def test_strict_mode_fails_only_the_failed_records(mixpanel):
    fake, server, dest = mixpanel
    payloads = [track(dest, n) for n in range(4)]
    payloads[2]["properties"]["time"] = int((time.time() + 86_400) * 1000)  # a day ahead: refused
    result = send_batch(dest, "custom", payloads)
    assert [i.status for i in result.items] == [
        ItemStatus.DELIVERED,
        ItemStatus.DELIVERED,
        ItemStatus.FAILED,
        ItemStatus.DELIVERED,
    ]
    assert "properties.time" in (result.items[2].error or "")
    assert len(server.requests) == 1  # Mixpanel ingested the others: nothing to resend
    assert set(fake.ingested) == {"msg-0", "msg-1", "msg-3"}


def test_wrong_credentials_fail_without_splitting(mixpanel):
    _fake, server, _ = mixpanel
    dest = MixpanelDestination(
        "mp", {"project_token": TOKEN, "api_secret": "nope", "base_url": server.url}
    )
    result = send_batch(dest, "custom", [track(dest, 1), track(dest, 2)])
    assert not result.split
    assert [(i.status, i.status_code) for i in result.items] == [(ItemStatus.FAILED, 401)] * 2
    assert "nope" not in (result.items[0].error or "")


def test_429_retries_with_retry_after(mixpanel):
    fake, _server, dest = mixpanel
    fake.outages.append(
        Reply(429, {"code": 429, "error": "Project exceeded rate limits"}, {"Retry-After": "4"})
    )
    result = send_batch(dest, "custom", [track(dest, 1)])
    assert [(i.status, i.retry_after) for i in result.items] == [(ItemStatus.RETRY, 4.0)]
    assert fake.ingested == {}


def test_413_splits(mixpanel):
    fake, _server, dest = mixpanel
    fake.MAX_BYTES = 500
    result = send_batch(dest, "custom", [track(dest, n, note="x" * 200) for n in range(3)])
    assert result.split and {i.status_code for i in result.items} == {413}


def test_identify_updates_profiles_through_engage(mixpanel):
    fake, server, dest = mixpanel
    mapped = MappedEvent(
        {"distinct_id": "user-7", "set_once": {"first_seen": "2026-11-01"}},
        user={"$email": "a@b.c"},
    )
    payload = dest.build_payload("identify", mapped, event(7))
    assert payload == {
        "$token": TOKEN,
        "$distinct_id": "user-7",
        "$set": {"$email": "a@b.c"},
        "$set_once": {"first_seen": "2026-11-01"},
    }
    assert dest.check_payload("identify", payload) is None
    result = send_batch(dest, "identify", [payload])
    assert result.items[0].status is ItemStatus.DELIVERED
    assert server.requests[0].path == "/engage?verbose=1&ip=0"
    assert fake.profiles == {"user-7": {"first_seen": "2026-11-01", "$email": "a@b.c"}}
    assert fake.problems == []


def test_engage_status_0_is_a_failure_despite_http_200(module_fake_server):
    fake = FakeMixpanel(token="the-real-token")
    server = serve(module_fake_server, fake)
    dest = MixpanelDestination("mp", {"project_token": "a-wrong-token", "base_url": server.url})
    updates = [
        dest.build_payload("identify", MappedEvent({"distinct_id": f"u-{n}"}, user={"a": n}), {})
        for n in range(2)
    ]
    result = send_batch(dest, "identify", updates)
    assert result.split
    assert all(i.status is ItemStatus.FAILED and "$token" in (i.error or "") for i in result.items)
    assert fake.profiles == {}


def test_regions_pick_the_documented_hosts():
    for region, host in [
        ("us", "api.mixpanel.com"),
        ("eu", "api-eu.mixpanel.com"),
        ("in", "api-in.mixpanel.com"),
    ]:
        dest = MixpanelDestination("mp", {"project_token": TOKEN, "region": region})
        assert dest.build_request("custom", [{}]).url == f"https://{host}/import?strict=1"


def test_basic_credentials_stay_out_of_the_headers_preview_prints():
    # httpx builds the Authorization header when sending; the request a preview prints
    # carries the raw secret (which redaction masks), never its base64 encoding.
    dest = MixpanelDestination("mp", {"project_token": TOKEN, "api_secret": SECRET})
    request = dest.build_request("custom", [{}])
    assert "Authorization" not in request.headers
    assert request.auth == (SECRET, "")


def test_a_profile_update_that_sets_nothing_is_refused():
    dest = MixpanelDestination("mp", {"project_token": TOKEN})
    payload = dest.build_payload("identify", MappedEvent({"distinct_id": "user-1"}), {})
    problem = dest.check_payload("identify", payload)
    assert problem is not None and "sets nothing" in problem


@pytest.mark.parametrize("event_type", ["custom", "identify"])
def test_payloads_over_1_mb_are_refused(event_type):
    dest = MixpanelDestination("mp", {"project_token": TOKEN})
    big = {"blob": "x" * (1024 * 1024)}
    required = (
        {"event": "x", "distinct_id": "user-1"}
        if event_type == "custom"
        else {"distinct_id": "user-1"}
    )
    payload = dest.build_payload(event_type, MappedEvent(required, user=big), event(1))
    problem = dest.check_payload(event_type, payload)
    assert problem is not None and "1 MB" in problem
