"""Issue 12's ingest findings against the real listener (uvicorn on 127.0.0.1), with delivery.

Browser SDK forms (beacons with `?writeKey=`, analytics-next batches with a write key
in every event), timestamps outside Python's datetime range, batch-level context
that would overflow the per-event limit, and credentials in webhook headers: no key or
secret reaches the store, a destination or `streamctl tail`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.config.loader import load_project
from streamctl.sources.http_api import MAX_BEACON_BYTES, SourceDirectory
from streamctl.sources.normalise import MAX_BATCH_EVENTS, MAX_EVENT_BYTES
from streamctl.sources.redaction import strip_write_keys
from tests.listener_harness import (
    BASE_CONFIG,
    HOOK_SECRET,
    WEB_KEY,
    ListenerThread,
    write_project,
)

WHOLE_EVENT_MAPPING = """\
event_types:
  - type: custom
    mappings:
      required:
        message_id: { field: messageId }
        whole: { template: "{{ row | json }}" }
"""
SYNCS = {
    "web-to-file": f"name: web-to-file\nsource: web\ndestination: local-file\n{WHOLE_EVENT_MAPPING}",
    "stripe-to-file": (
        f"name: stripe-to-file\nsource: stripe\ndestination: local-file\n{WHOLE_EVENT_MAPPING}"
    ),
}
ORIGIN = "https://shop.example"


class Tail:
    """`streamctl tail --url URL` as a subprocess; its stdout lines collected as they come."""

    def __init__(self, project_dir: Path, url: str) -> None:
        args = [sys.executable, "-m", "streamctl", "tail", "--project", str(project_dir)]
        self.proc = subprocess.Popen(
            [*args, "--url", url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.lines: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> bytes:
        return b"".join(self.lines)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    return predicate()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ListenerThread, Tail]]:
    project_dir = write_project(tmp_path_factory.mktemp("hardening") / "project", syncs=SYNCS)
    with ListenerThread(project_dir) as listener:
        tail = Tail(project_dir, listener.url)
        try:
            # Subscribed once a probe event shows in its output (no sleep to guess it).
            def probe_seen() -> bool:
                probe = {"userId": "u", "event": "probe", "messageId": f"probe-{uuid.uuid4()}"}
                httpx.post(f"{listener.url}/v1/track?writeKey={WEB_KEY}", json=probe)
                return wait_for(lambda: probe["messageId"].encode() in tail.text, timeout=1)

            assert wait_for(probe_seen, timeout=30), "streamctl tail printed nothing"
            yield listener, tail
        finally:
            tail.close()


@pytest.fixture(scope="module")
def listener(running: tuple[ListenerThread, Tail]) -> ListenerThread:
    return running[0]


def out_file(listener: ListenerThread) -> Path:
    return Path(listener.project.root) / "out" / "events.ndjson"


def delivered(listener: ListenerThread) -> dict[str, dict[str, Any]]:
    path = out_file(listener)
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {row["message_id"]: json.loads(row["whole"]) for row in rows}


def stored(listener: ListenerThread) -> dict[str, dict[str, Any]]:
    return {event["messageId"]: event for _, event in listener.queued()}


def store_bytes(listener: ListenerThread) -> bytes:
    """The store's files as bytes: whatever was ever written to them, in any table."""
    files = sorted(listener.store_path.parent.glob(listener.store_path.name + "*"))
    return b"".join(path.read_bytes() for path in files)


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{uuid.uuid4()}" for _ in range(count)]


def assert_json_error(reply: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["success"] is False
    for word in words:
        assert word in body["message"], body
    return dict(body)


# -- browser SDKs ----------------------------------------------------------------------------


def test_a_beacon_with_its_query_string_write_key_and_text_plain_body_is_stored(
    listener: ListenerThread,
) -> None:
    # What @rudderstack/analytics-js v3 sends with useBeacon: navigator.sendBeacon,
    # the key in the URL, a text/plain body (a CORS "simple request": no preflight).
    message_ids = ids("beacon", 2)
    body = {
        "batch": [
            {"type": "track", "event": "Viewed", "anonymousId": "a1", "messageId": message_ids[0]},
            {"type": "page", "name": "Home", "anonymousId": "a1", "messageId": message_ids[1]},
        ],
        "sentAt": "2026-12-03T10:00:00.000Z",
    }
    reply = httpx.post(
        f"{listener.url}/beacon/v1/batch?writeKey={WEB_KEY}",
        content=json.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"success": True}
    # sendBeacon sends credentials: CORS names the origin rather than `*`.
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert reply.headers["access-control-allow-credentials"] == "true"
    events = stored(listener)
    assert [events[m]["type"] for m in message_ids] == ["track", "page"]


def test_a_beacon_preflight_and_a_beacon_over_64_kb(listener: ListenerThread) -> None:
    preflight = httpx.options(
        f"{listener.url}/beacon/v1/batch",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    big = {"batch": [{"type": "track", "userId": "u", "event": "x" * MAX_BEACON_BYTES}]}
    reply = httpx.post(
        f"{listener.url}/beacon/v1/batch?writeKey={WEB_KEY}",
        content=json.dumps(big),
        headers={"Content-Type": "text/plain"},
    )
    assert_json_error(reply, 413, str(MAX_BEACON_BYTES))


def test_the_query_string_write_key_works_on_every_ingest_endpoint(
    listener: ListenerThread,
) -> None:
    [track_id, batch_id] = ids("query-key", 2)
    event = {"userId": "u", "event": "E", "messageId": track_id}
    assert httpx.post(f"{listener.url}/v1/track?writeKey={WEB_KEY}", json=event).status_code == 200
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": batch_id}]}
    assert httpx.post(f"{listener.url}/v1/b?writeKey={WEB_KEY}", json=batch).status_code == 200
    assert {track_id, batch_id} <= stored(listener).keys()
    wrong = httpx.post(f"{listener.url}/v1/track?writeKey=nope", json=event)
    assert_json_error(wrong, 401, "unknown write key")


def test_write_keys_wherever_they_came_are_not_stored_forwarded_or_tailed(
    running: tuple[ListenerThread, Tail],
) -> None:
    listener, tail = running
    batch_ids = ids("analytics-next", 3)
    # @segment/analytics-next in batching mode: writeKey at the top and in every event.
    batch = {
        "batch": [
            {"type": "track", "event": "E", "userId": "u", "messageId": m, "writeKey": WEB_KEY}
            for m in batch_ids
        ],
        "writeKey": WEB_KEY,
        "sentAt": "2026-12-03T10:00:00.000Z",
    }
    reply = httpx.post(
        f"{listener.url}/v1/b", content=json.dumps(batch), headers={"Origin": ORIGIN}
    )
    assert reply.status_code == 200, reply.text
    [track_id, elsewhere_id] = ids("body-key", 2)
    single = {"userId": "u", "event": "E", "messageId": track_id, "writeKey": WEB_KEY}
    assert httpx.post(f"{listener.url}/v1/track", json=single).status_code == 200
    # The key's text somewhere else in the body (a careless snippet): redacted.
    elsewhere = {
        "userId": "u",
        "event": "E",
        "messageId": elsewhere_id,
        "properties": {"note": f"key={WEB_KEY}", WEB_KEY: 1},
        "context": {"library": {"writeKey": WEB_KEY}},
    }
    reply = httpx.post(f"{listener.url}/v1/track?writeKey={WEB_KEY}", json=elsewhere)
    assert reply.status_code == 200
    everything = [*batch_ids, track_id, elsewhere_id]
    out = wait_for(lambda: (d := delivered(listener)).keys() >= set(everything) and d)
    assert out, "the events were not delivered to the file destination"
    assert wait_for(lambda: all(m.encode() in tail.text for m in everything))
    events = stored(listener)
    assert events[elsewhere_id]["properties"] == {"note": "key=[redacted]", "[redacted]": 1}
    assert out[batch_ids[0]]["userId"] == "u"  # the file has whole events
    key = WEB_KEY.encode()
    assert key not in store_bytes(listener)
    assert key not in out_file(listener).read_bytes()
    assert key not in tail.text


def escaped(text: str) -> str:
    """`text` as JSON may spell it inside a string: every character a `\\uXXXX` escape."""
    return "".join(f"\\u{ord(char):04x}" for char in text)


def test_credentials_spelled_with_json_escapes_are_redacted_on_every_output_path(
    running: tuple[ListenerThread, Tail],
) -> None:
    listener, tail = running
    [track_id, hook_id] = ids("escaped-key", 2)
    # The write key in `writeKey` with its first letter escaped (it still authenticates),
    # and elsewhere spelled with escapes: a raw-text search of the body finds none.
    one_escape = escaped(WEB_KEY[0]) + WEB_KEY[1:]
    raw = (
        f'{{"userId":"u","event":"E","messageId":"{track_id}","writeKey":"{one_escape}",'
        f'"properties":{{"note":"key={escaped(WEB_KEY)}","{one_escape}":1,'
        f'"hook":"{escaped(HOOK_SECRET)}"}}}}'
    )
    reply = httpx.post(
        f"{listener.url}/v1/track", content=raw, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 200, reply.text
    # A webhook body with the secrets escaped (JSON) and percent-encoded (a form field).
    hook_raw = json.dumps({"type": f"charge.{escaped(WEB_KEY)}", "note": escaped(WEB_KEY)})
    hook_raw = hook_raw.replace("\\\\", "\\").encode()  # the escapes as escapes
    signature = hmac.new(HOOK_SECRET.encode(), hook_raw, hashlib.sha256).hexdigest()
    reply = httpx.post(
        f"{listener.url}/webhooks/stripe",
        content=hook_raw,
        headers={"Stripe-Signature": signature, "Webhook-Id": hook_id},
    )
    assert reply.status_code == 200, reply.text
    assert wait_for(lambda: delivered(listener).keys() >= {track_id, hook_id})
    assert wait_for(lambda: track_id.encode() in tail.text and hook_id.encode() in tail.text)
    events = stored(listener)
    assert events[track_id]["properties"] == {
        "note": "key=[redacted]",
        "[redacted]": 1,
        "hook": "[redacted]",
    }
    assert events[hook_id]["properties"]["body"]["note"] == "[redacted]"
    assert events[hook_id]["event"] == "charge.[redacted]"  # the name is read after redaction
    root = str(listener.project.root)
    explained = [
        CliRunner().invoke(app, ["explain", message_id, "--json", "--project", root])
        for message_id in (track_id, hook_id)
    ]
    assert all(result.exit_code == 0 for result in explained), explained[0].output
    written = store_bytes(listener) + out_file(listener).read_bytes() + tail.text
    written += b"".join(result.stdout.encode() for result in explained)
    for secret in (WEB_KEY, HOOK_SECRET):
        assert secret.encode() not in written, secret


def test_a_destination_key_and_a_webhook_secret_in_a_body_are_redacted_however_escaped(
    tmp_path: Path,
) -> None:
    dest_key = "dest-write-key-5678"
    config = BASE_CONFIG + f"  crm:\n    type: segment\n    config: {{ write_key: {dest_key} }}\n"
    directory = SourceDirectory.of(load_project(write_project(tmp_path / "p", config)))
    body = json.dumps({"note": f"{escaped(dest_key)} {HOOK_SECRET[:3]}{escaped(HOOK_SECRET[3:])}"})
    raw = body.replace("\\\\", "\\").encode()  # the escapes as escapes
    payload = json.loads(raw)
    assert payload["note"] == f"{dest_key} {HOOK_SECRET}"
    strip_write_keys(payload, raw, directory.body_secrets)
    assert payload == {"note": "[redacted] [redacted]"}


# -- timestamps ------------------------------------------------------------------------------

BAD_TIMESTAMPS = [
    "0001-01-01T00:00:00+01:00",  # year 0 in UTC: OverflowError before
    "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
    "99999-01-01T00:00:00Z",
    "yesterday",
    1e300,
    12345678901234567890,
    -1,
    True,
    ["2026-12-03T10:00:00Z"],
    {"at": "2026-12-03T10:00:00Z"},
]


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt"])
@pytest.mark.parametrize("value", BAD_TIMESTAMPS, ids=repr)
@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_timestamps_outside_the_range_or_of_the_wrong_type_are_400_naming_the_field(
    listener: ListenerThread, field: str, value: Any, path: str
) -> None:
    [message_id] = ids("timestamp", 1)
    event = {"type": "track", "userId": "u", "event": "E", "messageId": message_id, field: value}
    if field == "sentAt":  # with originalTimestamp, sentAt is used for the clock correction
        event["originalTimestamp"] = "2026-12-03T10:00:00Z"
    body = event if path == "/v1/track" else {"batch": [event]}
    reply = httpx.post(f"{listener.url}{path}?writeKey={WEB_KEY}", json=body)
    assert_json_error(reply, 400, field, message_id)
    assert message_id not in stored(listener)


def test_a_batch_level_sent_at_out_of_range_is_400_naming_it(listener: ListenerThread) -> None:
    event = {"type": "track", "userId": "u", "event": "E", "originalTimestamp": "2026-12-03T10:00Z"}
    body = {"batch": [event], "sentAt": "0001-01-01T00:00:00+01:00"}
    reply = httpx.post(f"{listener.url}/v1/batch?writeKey={WEB_KEY}", json=body)
    assert_json_error(reply, 400, "event 0", "sentAt")


def test_a_clock_correction_that_leaves_the_range_is_400_naming_original_timestamp(
    listener: ListenerThread,
) -> None:
    event = {
        "userId": "u",
        "event": "E",
        "originalTimestamp": "0001-01-02T00:00:00Z",
        "sentAt": "9999-12-30T00:00:00Z",
    }
    reply = httpx.post(f"{listener.url}/v1/track?writeKey={WEB_KEY}", json=event)
    assert_json_error(reply, 400, "originalTimestamp")


# -- batch-level context -----------------------------------------------------------------------


def test_batch_context_counts_once_per_event_against_the_request_limit(
    listener: ListenerThread,
) -> None:
    # The 250 KB batch: 2,500 small events and 60 KB of batch context; merged
    # it was 2,500 events of 60 KB stored from one request.
    events = [{"type": "track", "userId": "u", "event": "E"} for _ in range(MAX_BATCH_EVENTS)]
    body = {"batch": events, "context": {"blob": "c" * 60_000}}
    reply = httpx.post(f"{listener.url}/v1/batch?writeKey={WEB_KEY}", json=body, timeout=30)
    assert_json_error(reply, 413, "as stored", "2500 events")


def test_an_event_over_32_kb_with_the_batch_context_merged_is_400_naming_it(
    listener: ListenerThread,
) -> None:
    [small_id, big_id] = ids("merged", 2)
    events = [
        {"type": "track", "userId": "u", "event": "E", "messageId": small_id},
        {
            "type": "track",
            "userId": "u",
            "messageId": big_id,
            "properties": {"blob": "p" * (MAX_EVENT_BYTES // 2)},
        },
    ]
    body = {"batch": events, "context": {"blob": "c" * (MAX_EVENT_BYTES // 2 + 100)}}
    reply = httpx.post(f"{listener.url}/v1/batch?writeKey={WEB_KEY}", json=body)
    assert_json_error(reply, 400, "event 1", big_id, "merged in", str(MAX_EVENT_BYTES))
    assert small_id not in stored(listener)  # a request is accepted whole or refused whole


def test_a_small_batch_context_is_merged_into_each_event(listener: ListenerThread) -> None:
    message_ids = ids("small-context", 3)
    events = [{"type": "track", "userId": "u", "event": "E", "messageId": m} for m in message_ids]
    body = {"batch": events, "context": {"app": {"name": "shop"}}}
    reply = httpx.post(f"{listener.url}/v1/batch?writeKey={WEB_KEY}", json=body)
    assert reply.status_code == 200, reply.text
    events_stored = stored(listener)
    assert all(events_stored[m]["context"] == {"app": {"name": "shop"}} for m in message_ids)


# -- webhook credentials -----------------------------------------------------------------------


def test_webhook_credentials_are_not_stored_forwarded_or_tailed(
    running: tuple[ListenerThread, Tail],
) -> None:
    listener, tail = running
    [delivery_id] = ids("hook", 1)
    raw = json.dumps({"type": "charge.succeeded", "id": "evt_1"}).encode()
    signature = hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    credentials = {
        "Stripe-Signature": f"sha256={signature}",
        "Authorization": "Bearer tok_live_abcdefgh",
        "Cookie": "session=s3cr3t-cookie",
        "X-Gitlab-Token": "glpat-abcdefgh",
        "X-Forwarded-Check": f"v1 {HOOK_SECRET}",  # a header holding the configured secret
    }
    headers = {"Content-Type": "application/json", "Webhook-Id": delivery_id, "X-Benign": "kept"}
    reply = httpx.post(
        f"{listener.url}/webhooks/stripe", content=raw, headers={**headers, **credentials}
    )
    assert reply.status_code == 200, reply.text
    event = stored(listener)[delivery_id]
    assert event["properties"]["headers"]["x-benign"] == "kept"
    assert not {name.lower() for name in credentials} & event["properties"]["headers"].keys()
    out = wait_for(lambda: delivered(listener).get(delivery_id))
    assert out and out["properties"]["headers"]["x-benign"] == "kept"
    assert wait_for(lambda: delivery_id.encode() in tail.text)
    written = store_bytes(listener) + out_file(listener).read_bytes() + tail.text
    for value in [signature, HOOK_SECRET, "tok_live_abcdefgh", "s3cr3t-cookie", "glpat-abcdefgh"]:
        assert value.encode() not in written, value
