"""End to end: `streamctl replay` through YAML syncs into fake GA4, Iterable, Customer.io
and Segment APIs, and from `segment` into a second streamctl listener.

Each test writes a project (credentials from `${ENV}`), replays an NDJSON file with the
real CLI, then checks what the fake vendor received (against the vendor's documented
contract), the CLI's exit code and JSON summary, and the outcome of every event in the
SQLite store: only the events the vendor refused (or that break its limits) are archived
or recorded as mapping errors.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.http import FakeServer
from tests.fakes.vendors_b import FakeCustomerIO, FakeGA4, FakeIterable, FakeSegment
from tests.listener_harness import WEB_KEY, ListenerThread
from tests.listener_harness import write_project as write_listener_project
from tests.replay_helpers import FAST_RETRIES, outcomes, replay, track, write_project


@pytest.fixture
def shared_server(module_fake_server):
    return module_fake_server


def serve(server: FakeServer, fake) -> FakeServer:
    server.answer = fake
    return server


def recent(n: int) -> str:
    """A timestamp GA4 still takes (it drops events older than 72 hours)."""
    when = datetime.now(UTC) - timedelta(minutes=30 - n)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- GA4 -----------------------------------------------------------------------------------


def test_replay_into_ga4_groups_clients_and_stops_names_ga4_would_drop(
    tmp_path, shared_server, monkeypatch
):
    fake = serve(shared_server, FakeGA4("G-E2E", "mp-secret")).answer
    monkeypatch.setenv("GA4_API_SECRET", "mp-secret")
    events = [
        track(1, anonymousId="anon-a", timestamp=recent(1)),
        track(2, anonymousId="anon-a", timestamp=recent(2)),
        track(3, anonymousId="anon-b", timestamp=recent(3)),
        track(4, event="Signed Up", anonymousId="anon-b", timestamp=recent(4)),
        track(5, event="2fa enabled", anonymousId="anon-c", timestamp=recent(5)),  # bad GA4 name
    ]
    events_file = write_project(
        tmp_path,
        f"""\
        analytics:
          type: ga4
          config: {{ measurement_id: G-E2E, api_secret: "${{GA4_API_SECRET}}", base_url: "{shared_server.url}" }}
        """,
        f"""\
        source: web
        destination: analytics
        event_types:
          - type: purchase
            filter: {{ field: event, op: eq, value: Order Completed }}
            mappings:
              required:
                client_id: {{ field: anonymousId }}
                user_id: {{ field: userId }}
                transaction_id: {{ field: properties.order_id }}
                currency: {{ field: properties.currency }}
                value: {{ field: properties.total }}
                timestamp: {{ field: timestamp }}
                items:
                  array:
                    - object:
                        item_id: {{ field: properties.order_id }}
                        price: {{ field: properties.total }}
                        quantity: {{ static: 1 }}
          - type: custom
            mappings:
              required:
                client_id: {{ field: anonymousId }}
                name: {{ template: "{{{{ row.event | downcase | replace: ' ', '_' }}}}" }}
              properties:
                source: {{ static: replay }}
        {FAST_RETRIES}
        """,
        events,
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr  # one mapping error
    assert fake.problems == []
    assert "mp-secret" not in stderr + json.dumps(summary)
    bodies = [r.json() for r in fake.requests]
    events_by_client = {}
    for body in bodies:
        names = [e["name"] for e in body["events"]]
        events_by_client.setdefault(body["client_id"], []).extend(names)
    # Event types go out in batches of their own, concurrently: their order is not fixed.
    events_by_client = {client: sorted(names) for client, names in events_by_client.items()}
    assert events_by_client == {
        "anon-a": ["purchase", "purchase"],
        "anon-b": ["purchase", "signed_up"],
    }
    purchase = next(
        e for b in bodies for e in b["events"] if e["params"].get("transaction_id") == "o-1"
    )
    assert purchase["params"]["items"] == [{"item_id": "o-1", "price": 11.5, "quantity": 1}]
    assert isinstance(purchase["timestamp_micros"], int)
    recorded = outcomes(tmp_path)
    assert {m: s for m, (s, _) in recorded.items() if s == "delivered"} == {
        f"msg-{n}": "delivered" for n in (1, 2, 3, 4)
    }
    status, error = recorded["msg-5"]
    assert status == "mapping_error" and "must start with a letter" in (error or "")


# -- Iterable -------------------------------------------------------------------------------


def test_replay_into_iterable_archives_only_the_invalid_email(tmp_path, shared_server, monkeypatch):
    fake = serve(shared_server, FakeIterable("it-key")).answer
    fake.invalid_emails = {"broken-at-example"}
    monkeypatch.setenv("ITERABLE_API_KEY", "it-key")
    events = [
        track(
            n,
            context={
                "traits": {"email": "broken-at-example" if n == 2 else f"user{n}@example.com"}
            },
        )
        for n in range(1, 5)
    ]
    events.append(
        track(5, event="Product Viewed", context={"traits": {"email": "user5@example.com"}})
    )
    events_file = write_project(
        tmp_path,
        f"""\
        iterable-prod:
          type: iterable
          config: {{ api_key: "${{ITERABLE_API_KEY}}", base_url: "{shared_server.url}" }}
        """,
        f"""\
        source: web
        destination: iterable-prod
        event_types:
          - type: purchase
            filter: {{ field: event, op: eq, value: Order Completed }}
            mappings:
              required:
                email: {{ field: context.traits.email }}
                total: {{ field: properties.total }}
                createdAt: {{ field: timestamp }}
                items:
                  array:
                    - object:
                        id: {{ field: properties.order_id }}
                        name: {{ static: Order }}
                        price: {{ field: properties.total }}
                        quantity: {{ static: 1 }}
          - type: custom
            mappings:
              required:
                eventName: {{ field: event }}
                email: {{ field: context.traits.email }}
              properties:
                properties: {{ field: properties }}
        {FAST_RETRIES}
        """,
        events,
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 4, "archived": 1}]
    assert "it-key" not in stderr + json.dumps(summary)
    paths = sorted(r.path for r in fake.requests)
    assert paths == ["/api/commerce/trackPurchase"] * 4 + ["/api/events/trackBulk"]
    recorded = outcomes(tmp_path)
    assert recorded["msg-2"][0] == "archived" and "InvalidEmailAddressError" in (
        recorded["msg-2"][1] or ""
    )
    assert all(recorded[f"msg-{n}"][0] == "delivered" for n in (1, 3, 4, 5))


# -- Customer.io ----------------------------------------------------------------------------


def test_replay_into_customerio_v2_batch_archives_the_entry_customerio_names(
    tmp_path, shared_server, monkeypatch
):
    fake = serve(shared_server, FakeCustomerIO("site-e2e", "cio-key")).answer
    fake.bad_ids = {"user-0003"}
    monkeypatch.setenv("CUSTOMERIO_API_KEY", "cio-key")
    identify = {
        "type": "identify",
        "messageId": "msg-id-1",
        "userId": "user-0009",
        "timestamp": "2026-11-26T09:00:00.000Z",
        "traits": {"email": "nine@example.com", "plan": "pro"},
    }
    events_file = write_project(
        tmp_path,
        f"""\
        cio:
          type: customerio
          config: {{ site_id: site-e2e, api_key: "${{CUSTOMERIO_API_KEY}}", base_url: "{shared_server.url}" }}
        """,
        f"""\
        source: web
        destination: cio
        match: first
        event_types:
          - type: identify
            filter: {{ field: type, op: eq, value: identify }}
            mappings:
              required:
                id: {{ field: userId }}
                email: {{ field: traits.email }}
              user:
                plan: {{ field: traits.plan }}
          - type: custom
            mappings:
              required:
                id: {{ field: userId }}
                name: {{ field: event }}
                timestamp: {{ field: timestamp }}
              properties:
                total: {{ field: properties.total }}
        {FAST_RETRIES}
        """,
        [identify, *(track(n) for n in range(1, 5))],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 4, "archived": 1}]
    assert "cio-key" not in stderr + json.dumps(summary)
    assert {r.path for r in fake.requests} == {"/api/v2/batch"}
    accepted = {(e["action"], e["identifiers"]["id"]) for e in fake.accepted}
    assert accepted == {("identify", "user-0009"), *(("event", f"user-{n:04d}") for n in (1, 2, 4))}
    recorded = outcomes(tmp_path)
    assert recorded["msg-3"][0] == "archived" and "person id is not allowed" in (
        recorded["msg-3"][1] or ""
    )


# -- Segment ----------------------------------------------------------------------------------

SEGMENT_SYNC = f"""\
source: web
destination: forward
event_types:
  - type: track
    filter: {{ field: type, op: eq, value: track }}
    mappings:
      required:
        event: {{ field: event }}
        userId: {{ field: userId }}
        anonymousId: {{ field: anonymousId }}
      properties:
        order_id: {{ field: properties.order_id }}
        total: {{ field: properties.total }}
{FAST_RETRIES}
"""


def test_replay_into_segment_bisects_a_refused_batch(tmp_path, shared_server, monkeypatch):
    fake = serve(shared_server, FakeSegment("seg-key")).answer
    fake.reject_events = {"Poison"}
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "seg-key")
    events_file = write_project(
        tmp_path,
        f"""\
        forward:
          type: segment
          config: {{ write_key: "${{SEGMENT_WRITE_KEY}}", base_url: "{shared_server.url}" }}
        """,
        SEGMENT_SYNC,
        [track(n, event="Poison" if n == 4 else "Order Completed") for n in range(1, 7)],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr
    assert fake.problems == []
    assert summary["syncs"] == [{"sync": "sync", "delivered": 5, "archived": 1}]
    assert "seg-key" not in stderr + json.dumps(summary)
    assert sorted(e["messageId"] for e in fake.accepted) == [f"msg-{n}" for n in (1, 2, 3, 5, 6)]
    recorded = outcomes(tmp_path)
    assert recorded["msg-4"][0] == "archived" and "too large" in (recorded["msg-4"][1] or "")


def test_replay_forwards_into_another_streamctl_listener(tmp_path, monkeypatch):
    downstream = write_listener_project(tmp_path / "downstream")
    with ListenerThread(downstream) as listener:
        monkeypatch.setenv("DOWNSTREAM_WRITE_KEY", WEB_KEY)
        upstream = tmp_path / "upstream"
        upstream.mkdir()
        events_file = write_project(
            upstream,
            f"""\
            forward:
              type: segment
              config: {{ write_key: "${{DOWNSTREAM_WRITE_KEY}}", base_url: "{listener.url}" }}
            """,
            SEGMENT_SYNC,
            [track(n) for n in range(1, 4)],
        )
        code, summary, stderr = replay(upstream, events_file)
        received = listener.queued()
    assert code == 0, stderr
    assert summary["syncs"] == [{"sync": "sync", "delivered": 3}]
    assert WEB_KEY not in stderr + json.dumps(summary)
    by_id = {event["messageId"]: (source, event) for source, event in received}
    assert sorted(by_id) == ["msg-1", "msg-2", "msg-3"]  # messageId kept across the hop
    source, first = by_id["msg-1"]
    assert source == "web"
    assert first["event"] == "Order Completed" and first["userId"] == "user-0001"
    assert first["properties"] == {"order_id": "o-1", "total": 11.5}
    assert first["timestamp"].startswith("2026-11-26T09:00:00")


# -- the example projects ---------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("vendor", "fake_factory", "env"),
    [
        ("ga4", lambda: FakeGA4("G-EXAMPLE", "ga-secret"),
         {"GA4_MEASUREMENT_ID": "G-EXAMPLE", "GA4_API_SECRET": "ga-secret"}),
        ("iterable", lambda: FakeIterable("it-key"), {"ITERABLE_API_KEY": "it-key"}),
        ("customerio", lambda: FakeCustomerIO("site", "cio-key"),
         {"CUSTOMERIO_SITE_ID": "site", "CUSTOMERIO_API_KEY": "cio-key"}),
        ("segment", lambda: FakeSegment("seg-key"), {"SEGMENT_WRITE_KEY": "seg-key"}),
    ],
)  # fmt: skip
def test_example_project_replays_cleanly_into_the_fake(
    vendor, fake_factory, env, tmp_path, shared_server, monkeypatch
):
    fake = serve(shared_server, fake_factory()).answer
    project = tmp_path / vendor
    shutil.copytree(EXAMPLES / vendor, project, ignore=shutil.ignore_patterns(".streamctl"))
    for name, value in {**env, f"{vendor.upper()}_BASE_URL": shared_server.url}.items():
        monkeypatch.setenv(name, value)
    events_file = tmp_path / "events.ndjson"
    with (EXAMPLES / "events.ndjson").open() as source:
        events_file.write_text("".join(line for _, line in zip(range(60), source, strict=False)))
    code, summary, stderr = replay(project, events_file)
    assert code == 0, stderr
    assert fake.problems == []
    counts = summary["syncs"][0]
    assert counts["delivered"] > 0
    assert set(counts) <= {"sync", "delivered", "filtered"}  # nothing archived, no mapping errors
