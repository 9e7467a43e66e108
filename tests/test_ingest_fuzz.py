"""A seeded, bounded fuzz of the ingest endpoints against the live listener (hypothesis).

Requests mix valid and hostile parts: every call type and endpoint (tracking API,
browser short forms, beacons, webhooks), each auth form, timestamps of every type and
range, batch-level context, deep nesting, numbers JSON cannot hold, bodies that are
not JSON, Latin-1 bytes, charsets and media types JSON parsers do not expect, gzip,
bad gzip and encodings the API refuses, odd methods; and raw bytes on a socket. What must hold for each:
no 5xx, every error answered with the JSON error shape, and every event of a 200 in
the store. `derandomize=True`: the same examples on every run (no flaky failures, no
example database), bounded to a few seconds.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamctl.core.events import CALL_TYPES
from streamctl.sources.http_protocol import ConnectionLimits
from tests.listener_harness import WEB_KEY, ListenerThread, write_project
from tests.test_http_protocol import address, read_until_closed, responses
from tests.test_listener import idle_runtime

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LIMITS = ConnectionLimits(header_timeout=0.3, body_timeout=0.3)

TIMESTAMPS = st.one_of(
    st.sampled_from(
        [
            "2026-12-03T10:00:00.000Z",
            "2026-12-03T10:00:00+05:30",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "99999-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "",
        ]
    ),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
IDS = st.one_of(st.text(min_size=1, max_size=12), st.none(), st.just(""), st.integers())


HOSTILE = {
    "type": st.sampled_from([*CALL_TYPES, "bogus", 7]),
    "userId": IDS,
    "anonymousId": IDS,
    "event": SCALARS,
    "properties": VALUES,
    "context": VALUES,
    "integrations": VALUES,
    "timestamp": TIMESTAMPS,
    "originalTimestamp": TIMESTAMPS,
    "sentAt": TIMESTAMPS,
    "writeKey": st.sampled_from([WEB_KEY, "wrong"]),
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event, then (half the time) a few of its fields set to anything at all."""
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(CALL_TYPES)),
        "userId": "u1",
        "event": "Fuzzed",
        "messageId": f"fuzz-{uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))}",
        "properties": draw(st.dictionaries(st.text(max_size=8), VALUES, max_size=3)),
        "originalTimestamp": "2026-12-03T10:00:00.000Z",
    }
    for key in draw(st.lists(st.sampled_from(sorted(HOSTILE)), max_size=3)):
        event[key] = draw(HOSTILE[key])
    return event


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]]]:
    """The body, and the events it carries (for the stored check)."""
    kind = draw(st.sampled_from(["event", "event", "batch", "batch", "raw", "json", "deep"]))
    if kind == "raw":
        return draw(st.binary(max_size=64)), []
    if kind == "json":
        return json.dumps(draw(VALUES)).encode(), []
    if kind == "deep":  # nesting past Python's recursion limit
        depth = draw(st.integers(500, 1100))
        return b'{"batch": [' + b"[" * depth + b"]" * depth + b"]}", []
    if kind == "event":
        event = draw(events())
        return json.dumps(event).encode(), [event]
    batch = draw(st.lists(events(), max_size=5))
    body: dict[str, Any] = {"batch": batch}
    for key, strategy in (
        ("context", VALUES),
        ("integrations", VALUES),
        ("sentAt", TIMESTAMPS),
        ("writeKey", st.sampled_from([WEB_KEY, "wrong"])),
    ):
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(strategy)
    return json.dumps(body).encode(), batch


PATHS = [
    "/v1/track", "/v1/t", "/v1/identify", "/v1/page", "/v1/batch", "/v1/b",
    "/beacon/v1/batch", "/webhooks/plain", "/webhooks/stripe", "/v1/nope", "/healthz",
    "/readyz", "/metrics", "/webhooks/nope", "/beacon/v1/nope",
]  # fmt: skip
AUTH = st.sampled_from(["basic", "basic", "query", "none", "wrong"])


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerThread]:
    project_dir = write_project(tmp_path_factory.mktemp("fuzz") / "project")
    with ListenerThread(project_dir, runtime_factory=idle_runtime, connections=LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def client(listener: ListenerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=listener.url, timeout=10) as http:
        yield http


def assert_error_shape(status: int, content_type: str, body: bytes) -> None:
    assert status < 500, body
    assert content_type == "application/json", (status, content_type, body)
    payload = json.loads(body)
    assert payload["success"] is False and isinstance(payload["message"], str), payload


@FUZZ
@given(
    method=st.sampled_from(["POST"] * 10 + ["GET", "PUT", "OPTIONS"]),
    path=st.sampled_from(PATHS),
    auth=AUTH,
    body_and_events=bodies(),
    encoding=st.sampled_from(
        [None] * 6 + ["gzip", "broken-gzip", "br", "GZIP", "x-gzip", "gzip, identity", "deflate"]
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
            "text/plain;charset=ISO-8859-1",
            "application/x-www-form-urlencoded; charset=latin-1",
            "application/json; charset=utf-16",
            "multipart/form-data; boundary=x",
            "application/vnd.api+json",
        ]
    ),
    latin1=st.booleans(),
)
def test_ingest_endpoints_answer_json_never_5xx_and_store_every_200(
    listener: ListenerThread,
    client: httpx.Client,
    method: str,
    path: str,
    auth: str,
    body_and_events: tuple[bytes, list[dict[str, Any]]],
    encoding: str | None,
    content_type: str,
    latin1: bool,
) -> None:
    body, sent_events = body_and_events
    if latin1:  # the text as Latin-1 bytes (what charset=latin-1 says), not UTF-8
        body = body.decode("utf-8", "replace").encode("latin-1", "replace") + b"\xe9"
    headers = {"Origin": "https://shop.example"}
    if content_type:
        headers["Content-Type"] = content_type
    if auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{WEB_KEY}:".encode()).decode()
    elif auth == "wrong":
        headers["Authorization"] = "Basic !!!"
    url = path + (f"?writeKey={WEB_KEY}" if auth == "query" else "")
    if encoding in ("gzip", "GZIP"):
        body, headers["Content-Encoding"] = gzip.compress(body), encoding
    elif encoding is not None:
        headers["Content-Encoding"] = "gzip" if encoding == "broken-gzip" else encoding
    reply = client.request(method, url, content=body, headers=headers)
    # `--hypothesis-show-statistics` shows what the examples covered.
    hypothesis.event(f"{method} {path.split('/')[1]} {reply.status_code}")
    if reply.status_code != 200:
        assert_error_shape(reply.status_code, reply.headers.get("content-type", ""), reply.content)
        return
    if method == "POST" and path.startswith(("/v1/", "/beacon/")):
        assert reply.json() == {"success": True}
        stored = {event["messageId"] for _, event in listener.queued()}
        assert {event["messageId"] for event in sent_events} <= stored


CHARSETS = [
    "utf-8", "latin-1", "ISO-8859-1", "windows-1252", "utf-16", "utf-32", "ascii",
    "unicode_escape", "base64", "idna", "no-such-charset", '"utf-8"', "",
]  # fmt: skip


@FUZZ
@given(
    path=st.sampled_from(
        ["/webhooks/plain", "/webhooks/stripe", f"/beacon/v1/batch?writeKey={WEB_KEY}"]
    ),
    media_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "text/csv"]
    ),
    charset=st.sampled_from(CHARSETS),
    text=st.one_of(
        st.text(max_size=40),
        st.builds(json.dumps, VALUES),
        st.builds(
            lambda d: "&".join(f"{k}={v}" for k, v in d.items()),
            st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
        ),
    ),
    raw=st.one_of(st.none(), st.binary(max_size=40)),
    gzipped=st.booleans(),
)
def test_webhooks_and_beacons_in_any_charset_answer_json_never_5xx_and_store_every_200(
    listener: ListenerThread,
    client: httpx.Client,
    path: str,
    media_type: str,
    charset: str,
    text: str,
    raw: bytes | None,
    gzipped: bool,
) -> None:
    # The body in the charset it declares (or raw bytes whatever it declares).
    codec = charset.strip('"') if charset not in ("", "no-such-charset") else "utf-8"
    try:
        body = text.encode(codec) if raw is None else raw
    except (LookupError, UnicodeError, TypeError):
        body = text.encode("utf-8", "surrogatepass")
    delivery_id = f"fuzz-hook-{uuid.uuid4()}"
    headers = {"Webhook-Id": delivery_id}
    if media_type:
        headers["Content-Type"] = media_type + (f"; charset={charset}" if charset else "")
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    reply = client.post(path, content=body, headers=headers)
    hypothesis.event(f"{path.split('/')[1]} {reply.status_code}")
    if reply.status_code != 200:
        assert_error_shape(reply.status_code, reply.headers.get("content-type", ""), reply.content)
    elif path.startswith("/webhooks/"):
        assert delivery_id in {event["messageId"] for _, event in listener.queued()}


@settings(FUZZ, max_examples=40)  # an unfinished request waits for a timeout
@given(
    prefix=st.sampled_from([b"", b"POST /v1/track HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\n"]),
    noise=st.binary(max_size=120),
)
def test_raw_bytes_get_json_errors_or_a_closed_connection(
    listener: ListenerThread, prefix: bytes, noise: bytes
) -> None:
    with socket.create_connection(address(listener), timeout=5) as sock:
        sock.sendall(prefix + noise)
        raw = read_until_closed(sock)  # the header or body timeout ends what is unfinished
    for status, headers, body in responses(raw):
        if status != 200:
            assert_error_shape(status, headers.get("content-type", ""), body)
