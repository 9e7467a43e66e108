"""The ingest listener under uvicorn on 127.0.0.1: SPEC §4's endpoints, auth, limits, webhooks."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import tracemalloc

import httpx
import pytest

from streamctl.sources.group_commit import CommitLimits
from tests.listener_harness import (
    HOOK_SECRET,
    MOBILE_KEY,
    WEB_KEY,
    ListenerThread,
    write_project,
)


class IdleRuntime:
    """A delivery runtime that never claims: events stay in the queue for inspection."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def notify(self) -> None:
        pass

    async def reload(self, project) -> None:
        pass


def idle_runtime(project, store):
    return IdleRuntime()


@pytest.fixture(scope="module")
def listener(tmp_path_factory):
    project_dir = write_project(tmp_path_factory.mktemp("listener"))
    with ListenerThread(project_dir, runtime_factory=idle_runtime) as running:
        yield running


@pytest.fixture(scope="module")
def client(listener):
    with httpx.Client(base_url=listener.url, timeout=10) as http:
        yield http


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stored(listener, message_id: str) -> list[tuple[str, dict]]:
    return [(s, e) for s, e in listener.queued() if e["messageId"] == message_id]


def track(message_id: str, **extra) -> dict:
    return {"userId": "u1", "event": "Signed Up", "messageId": message_id, **extra}


# -- auth -----------------------------------------------------------------------------


def test_basic_auth_key_selects_the_source_and_the_event_is_stored(listener, client):
    reply = client.post("/v1/track", json=track("auth-basic"), headers=basic(MOBILE_KEY))
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"success": True}
    [(source, event)] = stored(listener, "auth-basic")
    assert source == "mobile"
    assert event["type"] == "track"
    assert event["receivedAt"].endswith("Z")


def test_write_key_in_the_body_works_and_is_not_stored(listener, client):
    reply = client.post("/v1/track", json=track("auth-body", writeKey=WEB_KEY))
    assert reply.status_code == 200, reply.text
    [(source, event)] = stored(listener, "auth-body")
    assert source == "web"
    assert "writeKey" not in event
    assert WEB_KEY not in json.dumps(event)


@pytest.mark.parametrize(
    "headers, body_key",
    [
        (basic("not-a-key"), None),
        ({}, "not-a-key"),
        ({}, None),
        ({"Authorization": "Bearer x"}, WEB_KEY),
    ],
    ids=["wrong-basic", "wrong-body", "no-key", "not-basic"],
)
def test_an_unknown_or_missing_write_key_is_401(listener, client, headers, body_key):
    body = track("auth-wrong") | ({"writeKey": body_key} if body_key else {})
    reply = client.post("/v1/track", json=body, headers=headers)
    assert reply.status_code == 401
    assert reply.json()["success"] is False
    assert "not-a-key" not in reply.text  # a key is never echoed
    assert stored(listener, "auth-wrong") == []


# -- endpoints ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, call_type",
    [
        ("t", "track"), ("i", "identify"), ("p", "page"), ("s", "screen"), ("g", "group"),
        ("a", "alias"), ("identify", "identify"), ("page", "page"), ("screen", "screen"),
        ("group", "group"), ("alias", "alias"),
    ],
)  # fmt: skip
def test_typed_endpoints_and_browser_short_forms_set_the_call_type(
    listener, client, path, call_type
):
    message_id = f"short-{path}"
    reply = client.post(f"/v1/{path}", json=track(message_id, writeKey=WEB_KEY))
    assert reply.status_code == 200, reply.text
    [(_, event)] = stored(listener, message_id)
    assert event["type"] == call_type


@pytest.mark.parametrize("path", ["batch", "b"])
def test_batch_merges_context_and_stores_every_event(listener, client, path):
    batch = {
        "batch": [
            {"type": "track", "event": "A", "userId": "u1", "messageId": f"{path}-1"},
            {
                "type": "identify",
                "anonymousId": "anon",
                "messageId": f"{path}-2",
                "traits": {"x": 1},
            },
        ],
        "context": {"library": {"name": "test"}},
    }
    reply = client.post(f"/v1/{path}", json=batch, headers=basic(WEB_KEY))
    assert reply.status_code == 200, reply.text
    [(_, first)] = stored(listener, f"{path}-1")
    [(_, second)] = stored(listener, f"{path}-2")
    assert first["context"]["library"] == {"name": "test"}
    assert second["type"] == "identify"


def test_an_unknown_endpoint_is_404(client):
    assert client.post("/v1/nope", json=track("x"), headers=basic(WEB_KEY)).status_code == 404


# -- limits and malformed requests ------------------------------------------------------


def test_bad_json_is_400(listener, client):
    reply = client.post(
        "/v1/track",
        content=b'{"userId": "u1", ',
        headers=basic(WEB_KEY) | {"Content-Type": "application/json"},
    )
    assert reply.status_code == 400
    assert reply.json()["code"] == "invalid_json"


def test_a_request_over_500_kb_is_413(listener, client):
    body = track("too-big", properties={"blob": "x" * (501 * 1024)})
    reply = client.post("/v1/track", json=body, headers=basic(WEB_KEY))
    assert reply.status_code == 413
    assert stored(listener, "too-big") == []


def test_a_chunked_request_over_500_kb_is_413(client):
    def chunks():
        yield b'{"userId": "u1", "properties": {"blob": "'
        for _ in range(600):
            yield b"x" * 1024
        yield b'"}}'

    reply = client.post("/v1/track", content=chunks(), headers=basic(WEB_KEY))
    assert reply.status_code == 413


GZIP_ENDPOINTS = ["/v1/track", f"/beacon/v1/track?writeKey={WEB_KEY}", "/webhooks/plain"]


@pytest.mark.parametrize("path", GZIP_ENDPOINTS)
def test_a_gzip_bomb_is_413_without_inflating_it(client, path):
    # 50 MB of zeros compress to ~50 KB: under the cap on the wire, far over it inflated.
    bomb = gzip.compress(b'{"userId": "u1", "p": "' + b"0" * (50 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024
    headers = basic(WEB_KEY) | {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    tracemalloc.start()  # the listener runs in this process: its allocations count too
    try:
        reply = client.post(path, content=bomb, headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reply.status_code == 413, reply.text
    assert reply.json()["code"] == "too_large"
    assert peak < 8 * 1024 * 1024, peak  # never the 50 MB, nor much past the 500 KB cap


@pytest.mark.parametrize("path", GZIP_ENDPOINTS)
def test_gzip_bodies_are_accepted_on_every_ingest_endpoint(listener, client, path):
    # Segment's libraries send gzip when asked (analytics-python's `gzip=True` posts
    # /v1/batch with Content-Encoding: gzip), so the API takes it, as Segment's does.
    message_id = f"gzipped-{path.split('/')[1]}"
    body = json.dumps({"userId": "u1", "event": "Zipped", "messageId": message_id}).encode()
    headers = basic(WEB_KEY) | {"Content-Encoding": "gzip", "Webhook-Id": message_id}
    reply = client.post(path, content=gzip.compress(body), headers=headers)
    assert reply.status_code == 200, reply.text
    [(_, event)] = stored(listener, message_id)
    if path.startswith("/webhooks/"):
        assert event["properties"]["body"]["event"] == "Zipped"  # inflated, then parsed
    else:
        assert event["event"] == "Zipped"


def test_an_event_over_32_kb_is_400_naming_it(listener, client):
    batch = {
        "batch": [
            track("small-ok", type="track"),
            track("huge-one", type="track", properties={"blob": "x" * (33 * 1024)}),
        ]
    }
    reply = client.post("/v1/batch", json=batch, headers=basic(WEB_KEY))
    assert reply.status_code == 400
    assert "huge-one" in reply.json()["message"]
    assert "event 1" in reply.json()["message"]
    assert stored(listener, "small-ok") == []  # all or nothing: no 200, nothing stored


def test_an_event_without_identity_is_400_naming_it(listener, client):
    batch = {"batch": [{"type": "track", "event": "A", "messageId": "nobody"}]}
    reply = client.post("/v1/batch", json=batch, headers=basic(WEB_KEY))
    assert reply.status_code == 400
    assert "nobody" in reply.json()["message"]
    assert stored(listener, "nobody") == []


def test_a_batch_over_2500_events_is_400(client):
    batch = {"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2501}
    reply = client.post("/v1/batch", json=batch, headers=basic(WEB_KEY))
    assert reply.status_code == 400
    assert "2501" in reply.json()["message"]


def test_gzip_bodies_are_accepted(listener, client):
    body = gzip.compress(json.dumps(track("gzipped", writeKey=WEB_KEY)).encode())
    reply = client.post(
        "/v1/track",
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    assert len(stored(listener, "gzipped")) == 1


def test_a_corrupt_gzip_body_is_400(client):
    reply = client.post(
        "/v1/track",
        content=b"\x1f\x8bnot gzip",
        headers=basic(WEB_KEY) | {"Content-Encoding": "gzip"},
    )
    assert reply.status_code == 400


# -- browsers -------------------------------------------------------------------------------


def test_cors_preflight_allows_browsers(client):
    reply = client.options(
        "/v1/t",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == "*"
    allowed = reply.headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed and "authorization" in allowed


def test_cors_header_on_a_simple_browser_post(client):
    body = json.dumps(track("from-browser", writeKey=WEB_KEY))
    reply = client.post(
        "/v1/t",
        content=body,
        headers={"Origin": "https://shop.example", "Content-Type": "text/plain"},
    )
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == "*"


# -- webhooks -------------------------------------------------------------------------------


def sign(body: bytes, secret: str = HOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("prefix", ["", "sha256="])
def test_a_signed_webhook_becomes_a_track_event(listener, client, prefix):
    body = json.dumps({"type": "charge.succeeded", "id": f"evt_{prefix or 'bare'}"}).encode()
    reply = client.post(
        "/webhooks/stripe",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": prefix + sign(body),
            "Authorization": "Bearer do-not-store",
            "Cookie": "session=do-not-store",
            "Webhook-Id": f"hook-{prefix or 'bare'}",
            "X-Custom": "kept",
        },
    )
    assert reply.status_code == 200, reply.text
    [(source, event)] = stored(listener, f"hook-{prefix or 'bare'}")
    assert source == "stripe"
    assert event["type"] == "track"
    assert event["event"] == "charge.succeeded"
    assert event["properties"]["body"] == {
        "type": "charge.succeeded",
        "id": f"evt_{prefix or 'bare'}",
    }
    headers = event["properties"]["headers"]
    assert headers["x-custom"] == "kept"
    assert not {"authorization", "cookie", "stripe-signature"} & set(headers)
    assert "do-not-store" not in json.dumps(event)


@pytest.mark.parametrize(
    "signature",
    [None, "0" * 64, "sha256=" + "f" * 64, "not hex at all"],
    ids=["missing", "wrong", "wrong-prefixed", "garbage"],
)
def test_a_webhook_with_a_missing_or_wrong_signature_is_401(listener, client, signature):
    body = b'{"type": "forged", "id": "evt_forged"}'
    headers = {"Content-Type": "application/json", "Webhook-Id": "forged"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    reply = client.post("/webhooks/stripe", content=body, headers=headers)
    assert reply.status_code == 401
    assert sign(body) not in reply.text
    assert stored(listener, "forged") == []


def test_a_signature_over_another_body_is_401(client):
    reply = client.post(
        "/webhooks/stripe",
        content=b'{"type": "tampered"}',
        headers={"Stripe-Signature": sign(b'{"type": "original"}')},
    )
    assert reply.status_code == 401


def test_an_unsigned_webhook_source_takes_form_posts(listener, client):
    reply = client.post(
        "/webhooks/plain",
        data={"From": "+15550100", "Body": "hi"},
        headers={"X-Request-Id": "form-1"},
    )
    assert reply.status_code == 200, reply.text
    [(source, event)] = stored(listener, "form-1")
    assert source == "plain"
    assert event["event"] == "plain"
    assert event["properties"]["body"] == {"From": "+15550100", "Body": "hi"}


def test_an_unknown_webhook_source_is_404(client):
    assert client.post("/webhooks/nope", content=b"{}").status_code == 404


# -- operations -----------------------------------------------------------------------------


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_metrics_count_accepted_and_rejected_events(client):
    def sample(text: str, name: str, labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(f"{name}{{{labels}}}"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = client.get("/metrics").text
    client.post(
        "/v1/batch",
        json={"batch": [track("m1", type="track"), track("m2", type="track")]},
        headers=basic(MOBILE_KEY),
    )
    client.post("/v1/track", content=b"{", headers=basic(MOBILE_KEY))
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    accepted = 'source="mobile"'
    assert (
        sample(after.text, "streamctl_events_accepted_total", accepted)
        - sample(before, "streamctl_events_accepted_total", accepted)
        == 2
    )
    rejected = 'reason="invalid_json",source="mobile"'
    assert (
        sample(after.text, "streamctl_events_rejected_total", rejected)
        - sample(before, "streamctl_events_rejected_total", rejected)
        == 1
    )
    assert "streamctl_queue_depth" in after.text
    assert "streamctl_ingest_commit_seconds_bucket" in after.text


# -- backpressure ---------------------------------------------------------------------------


def test_a_full_queue_answers_429_with_retry_after(tmp_path):
    project_dir = write_project(tmp_path / "bp")
    limits = CommitLimits(max_queue_depth=3)
    with (
        ListenerThread(project_dir, runtime_factory=idle_runtime, limits=limits) as listener,
        httpx.Client(base_url=listener.url) as http,
    ):
        batch = {"batch": [track(f"bp-{i}", type="track") for i in range(3)]}
        assert http.post("/v1/batch", json=batch, headers=basic(WEB_KEY)).status_code == 200
        reply = http.post("/v1/track", json=track("bp-over"), headers=basic(WEB_KEY))
        assert reply.status_code == 429
        assert int(reply.headers["retry-after"]) >= 1
        assert stored(listener, "bp-over") == []
        # Refused before its body is read: even a body that is not JSON gets the 429.
        garbled = http.post("/v1/track", content=b"{not json", headers=basic(WEB_KEY))
        assert (garbled.status_code, garbled.json()["code"]) == (429, "overloaded")


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/x-www-form-urlencoded; charset=latin-1", b"note=caf\xe9", {"note": "café"}),
        ("application/x-www-form-urlencoded; charset=ISO-8859-1", b"note=caf%E9", {"note": "café"}),
        ("text/plain; charset=latin-1", b"caf\xe9", "café"),
        ("application/json; charset=windows-1252", b'{"note": "caf\xe9 \x80"}', {"note": "café €"}),
        ("text/plain; charset=base64", b"caf\xc3\xa9", "café"),  # no text charset: UTF-8
        ("text/plain", b"caf\xe9", "caf\ufffd"),  # not UTF-8, and no charset said
    ],
)
def test_a_webhook_body_is_read_in_the_charset_its_content_type_names(
    listener, client, content_type, body, expected
):
    delivery_id = f"charset-{hashlib.sha256(content_type.encode() + body).hexdigest()[:12]}"
    headers = {"Content-Type": content_type, "Webhook-Id": delivery_id}
    reply = client.post("/webhooks/plain", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    [(_, event)] = stored(listener, delivery_id)
    assert event["properties"]["body"] == expected
