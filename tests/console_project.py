"""The project the console's tests serve: a `run` fed by real requests, delivering to a
fake webhook that fails `Will Fail` events until told to recover (tests/test_console_*).

    root = write_project(path, console_config(destination.url, store), {"web-to-hook": SYNC})
    feed(proc.url)                        # 30 delivered, 3 filtered, fail-1 archived
    track(proc.url, "ok-99", "Signed Up", plan="pro")
    assert wait_for(lambda: status_of(proc.url, "ok-99") == "delivered")
"""

from __future__ import annotations

import base64
import re
import time

import httpx

from tests.fakes.http import Received, Reply
from tests.listener_harness import BASE_CONFIG, WEB_KEY

HOOK_TOKEN = "hook-bearer-secret-0123456789"  # a secret: must never reach a page

SYNC = """\
name: web-to-hook
source: web
destination: hook
delivery: { max_attempts: 1, backoff: { initial: 1s, max: 1s } }
event_types:
  - type: custom
    filter: { field: event, op: neq, value: Ignored }
    mappings:
      required:
        message_id: { field: messageId }
        event: { field: event }
      properties:
        note: { field: properties.note }
"""


def console_config(hook_url: str, store: str | None = None) -> str:
    """streamctl.yaml: the webhook destination, an alert on archived deliveries, and
    `store` (a PostgreSQL URL) instead of the SQLite file when given."""
    base = BASE_CONFIG if store is None else BASE_CONFIG.replace(".streamctl/state.db", store)
    return (
        base
        + f"""\
  hook:
    type: webhook
    config:
      url: {hook_url}/events
      headers: {{ Authorization: "Bearer ${{HOOK_TOKEN}}" }}
alerts:
  interval: 1s
  channels:
    ops: {{ type: webhook, url: "{hook_url}/alerts" }}
  rules:
    - {{ name: anything-archived, sync: "*", when: archived, above: 0, window: 5m, notify: [ops] }}
"""
    )


class Destination:
    """The fake webhook: answers 500 to events named `Will Fail` until told to recover."""

    def __init__(self) -> None:
        self.failing = True

    def __call__(self, request: Received) -> Reply:
        if request.path.startswith("/events"):
            body = request.json()
            if self.failing and body.get("event") == "Will Fail":
                return Reply(500, {"error": "upstream broke"})
        return Reply(200, {"ok": True})


def track(url: str, message_id: str, event: str, **properties: object) -> None:
    auth = base64.b64encode(f"{WEB_KEY}:".encode()).decode()
    reply = httpx.post(
        f"{url}/v1/track",
        json={
            "userId": "user-7",
            "event": event,
            "messageId": message_id,
            "properties": properties,
        },
        headers={"Authorization": f"Basic {auth}"},
    )
    assert reply.status_code == 200, reply.text


def wait_for(predicate, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def status_of(url: str, message_id: str) -> str | None:
    """The first delivery status the console's debugger shows for the event."""
    html = httpx.get(f"{url}/console/debugger/events/{message_id}").text
    found = re.search(r'class="badge (\w+)"', html)
    return found.group(1) if found else None


def feed(url: str) -> None:
    """What the console's tests expect of a fresh `run`: 30 events delivered, 3 filtered
    (`Ignored`), and `fail-1` archived after its one attempt got a 500."""
    for i in range(30):
        track(url, f"ok-{i}", "Signed Up", plan="pro", n=i)
    for i in range(3):
        track(url, f"skip-{i}", "Ignored")
    track(url, "fail-1", "Will Fail", note=f"carries {HOOK_TOKEN}")
    assert wait_for(lambda: status_of(url, "fail-1") == "archived")
