"""`streamctl run` end to end: real SDK clients, crash safety, shutdown, hot reload, tail."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from streamctl.monitoring.feed import FEED, follow
from tests.fakes.http import FakeServer
from tests.listener_harness import (
    BASE_CONFIG,
    FILE_SYNC,
    MOBILE_KEY,
    WEB_KEY,
    ListenerProcess,
    ListenerThread,
    queue_row_events,
    queued_events,
    write_project,
)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@pytest.fixture
def delivering(tmp_path):
    """A listener with the real delivery runtime and a sync writing to out/events.ndjson."""
    project_dir = write_project(tmp_path / "project", syncs={"web-to-file": FILE_SYNC})
    with ListenerThread(project_dir) as listener:
        yield listener, project_dir / "out" / "events.ndjson"


def delivered_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["message_id"] for line in path.read_text().splitlines() if line]


# -- real SDKs ------------------------------------------------------------------------------


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_python_sdk_events_are_stored_and_delivered(delivering, gzip):
    listener, out = delivering
    errors: list[Exception] = []
    client = SegmentClient(
        WEB_KEY,
        host=listener.url,
        sync_mode=True,
        gzip=gzip,
        max_retries=0,
        on_error=lambda exc, batch: errors.append(exc),
    )
    client.track("user-1", "Order Completed", {"total": 42}, message_id="seg-track")
    client.identify("user-1", {"email": "u@example.com"}, message_id="seg-identify")
    client.page("user-1", "Docs", "Install", message_id="seg-page")
    client.flush()
    assert errors == []
    stored = {event["messageId"]: (source, event) for source, event in listener.queued()}
    assert {"seg-track", "seg-identify", "seg-page"} <= set(stored)
    source, track = stored["seg-track"]
    assert source == "web"
    assert track["type"] == "track"
    assert track["properties"] == {"total": 42}
    assert track["context"]["library"]["name"] == "analytics-python"
    assert stored["seg-identify"][1]["traits"] == {"email": "u@example.com"}
    # The file sync on `web` delivers them.
    assert wait_for(lambda: {"seg-track", "seg-identify", "seg-page"} <= set(delivered_ids(out)))


def test_rudderstack_python_sdk_events_are_stored(tmp_path):
    project_dir = write_project(tmp_path / "project")
    with ListenerThread(project_dir) as listener:
        errors: list[Exception] = []
        client = RudderClient(
            MOBILE_KEY,
            host=listener.url,
            sync_mode=True,
            max_retries=0,
            on_error=lambda exc, batch: errors.append(exc),
        )
        client.track("user-2", "Signed Up", {"plan": "pro"}, message_id="rudder-track")
        client.screen("user-2", "Home", message_id="rudder-screen")
        client.flush()
        assert errors == []
        stored = {event["messageId"]: (source, event) for source, event in listener.queued()}
    assert stored["rudder-track"][0] == "mobile"
    assert stored["rudder-track"][1]["event"] == "Signed Up"
    assert stored["rudder-screen"][1]["type"] == "screen"


def test_an_sdk_with_a_wrong_key_gets_401(tmp_path):
    from segment.analytics.request import APIError

    project_dir = write_project(tmp_path / "project")
    with ListenerThread(project_dir) as listener:
        client = SegmentClient("wrong-key", host=listener.url, sync_mode=True, max_retries=0)
        with pytest.raises(APIError) as refused:
            client.track("user-1", "Order Completed", message_id="wrong-key-event")
        assert refused.value.status == 401
        assert "wrong-key" not in str(refused.value)
        assert all(e["messageId"] != "wrong-key-event" for _, e in listener.queued())


# -- crash safety and shutdown -----------------------------------------------------------


def test_a_killed_listener_loses_no_event_it_answered_200_for(tmp_path):
    project_dir = write_project(tmp_path / "project", syncs={"web-to-file": FILE_SYNC})
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def send_until_killed(worker: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=5) as http:
            for n in range(100_000):
                if stop.is_set():
                    return
                ids = [f"w{worker}-{n}-{i}" for i in range(20)]
                batch = {
                    "batch": [
                        {"type": "track", "event": "E", "userId": "u", "messageId": m} for m in ids
                    ]
                }
                try:
                    reply = http.post("/v1/batch", json=batch, headers=basic(WEB_KEY))
                except httpx.TransportError:
                    return  # the process died under us: no answer, no promise
                if reply.status_code == 200:
                    with lock:
                        answered.extend(ids)

    with ListenerProcess(project_dir) as proc, ThreadPoolExecutor(8) as pool:
        for worker in range(8):
            pool.submit(send_until_killed, worker, proc.url)
        wait_for(lambda: len(answered) >= 2000, timeout=30)
        proc.kill()  # SIGKILL, mid-traffic
        stop.set()
    assert len(answered) >= 2000

    store_path = project_dir / ".streamctl" / "state.db"
    with ListenerProcess(project_dir) as proc:  # restart: the queue is processed again
        stored = {event["messageId"] for _, event in queued_events(store_path)}
        missing = set(answered) - stored
        assert not missing, f"{len(missing)} events answered 200 are not stored"
        out = project_dir / "out" / "events.ndjson"
        delivered = wait_for(lambda: set(answered) <= set(delivered_ids(out)), timeout=60)
        assert delivered, "every accepted event is delivered after the restart"
        assert proc.terminate() == 0


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly(tmp_path):
    project_dir = write_project(tmp_path / "project", syncs={"web-to-file": FILE_SYNC})
    with ListenerProcess(project_dir) as proc:
        batch = {
            "batch": [
                {"type": "track", "event": "E", "userId": "u", "messageId": f"t-{i}"}
                for i in range(50)
            ]
        }
        assert (
            httpx.post(f"{proc.url}/v1/batch", json=batch, headers=basic(WEB_KEY)).status_code
            == 200
        )
        assert proc.terminate() == 0
        assert "Traceback" not in proc.stderr
    store = sqlite3.connect(project_dir / ".streamctl" / "state.db")
    # Nothing half-recorded: every event is either still queued or fully recorded.
    ids = {row[0] for row in store.execute("SELECT message_id FROM events")}
    queued = {
        event["messageId"]
        for (text,) in store.execute("SELECT event FROM queue")
        for event in queue_row_events(text)
    }
    assert {f"t-{i}" for i in range(50)} <= ids | queued
    assert not ids & queued


# -- hot reload ------------------------------------------------------------------------------


def test_watch_swaps_in_a_valid_change_and_keeps_running_on_an_invalid_one(tmp_path):
    project_dir = write_project(tmp_path / "project")
    config = project_dir / "streamctl.yaml"
    with (
        ListenerThread(project_dir, watch=True) as listener,
        httpx.Client(base_url=listener.url) as http,
    ):
        instance = listener.running.instance
        new_key = "test-web-key-rotated"
        assert (
            http.post(
                "/v1/track", json={"userId": "u", "event": "E"}, headers=basic(new_key)
            ).status_code
            == 401
        )

        config.write_text(BASE_CONFIG.replace(f'["{WEB_KEY}"]', f'["{WEB_KEY}", "{new_key}"]'))
        assert wait_for(lambda: instance.reloads == 1, timeout=15), listener.err.getvalue()
        assert (
            http.post(
                "/v1/track", json={"userId": "u", "event": "E"}, headers=basic(new_key)
            ).status_code
            == 200
        )
        assert "configuration reloaded" in listener.err.getvalue()

        config.write_text(BASE_CONFIG.replace("type: http", "type: nonsense", 1))
        assert wait_for(
            lambda: "running configuration stays" in listener.err.getvalue(), timeout=15
        )
        assert instance.reloads == 1
        assert "streamctl.yaml:" in listener.err.getvalue()  # the problem, located
        assert (
            http.post(
                "/v1/track", json={"userId": "u", "event": "E"}, headers=basic(new_key)
            ).status_code
            == 200
        )


# -- tail ---------------------------------------------------------------------------------------


def test_tail_shows_events_and_their_outcomes_as_they_happen(delivering):
    listener, _ = delivering
    lines: list[dict] = []
    reader = threading.Thread(
        target=lambda: [
            lines.append(json.loads(line)) for line in follow(listener.url, sources=["web"])
        ],
        daemon=True,
    )
    reader.start()
    time.sleep(0.3)  # subscribed
    httpx.post(
        f"{listener.url}/v1/track",
        json={"userId": "u", "event": "Tailed", "messageId": "tail-1"},
        headers=basic(WEB_KEY),
    )
    httpx.post(
        f"{listener.url}/v1/track",
        json={"userId": "u", "event": "Other", "messageId": "tail-2"},
        headers=basic(MOBILE_KEY),
    )
    assert wait_for(lambda: any(r.get("status") == "delivered" for r in lines), timeout=10), lines
    kinds = [(r["kind"], r.get("status")) for r in lines if r.get("message_id") == "tail-1"]
    assert kinds[0] == ("event", None)
    assert ("outcome", "pending") in kinds and ("outcome", "delivered") in kinds
    delivered = next(r for r in lines if r.get("status") == "delivered")
    assert delivered["sync"] == "web-to-file" and delivered["stage"] == "delivery"
    assert all(r.get("message_id") != "tail-2" for r in lines)  # --source web only


def test_the_tail_command_reports_a_listener_that_is_not_running(tmp_path):
    from typer.testing import CliRunner

    from streamctl.cli.main import app

    project_dir = write_project(tmp_path / "project")
    result = CliRunner().invoke(
        app, ["tail", "--project", str(project_dir), "--url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert "no streamctl run answering" in result.stderr
    assert result.stdout == ""
    unknown = CliRunner().invoke(app, ["tail", "--project", str(project_dir), "--source", "nope"])
    assert unknown.exit_code == 2
    assert "nope" in unknown.stderr


def test_tail_command_prints_ndjson(delivering):
    import subprocess
    import sys

    listener, _ = delivering
    project_dir = Path(listener.project.root)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamctl",
            "tail",
            "--project",
            str(project_dir),
            "--url",
            listener.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # the command starts and subscribes (seconds on a loaded machine: poll, never guess)
        assert wait_for(lambda: FEED.active or proc.poll() is not None, timeout=60)
        httpx.post(
            f"{listener.url}/v1/track",
            json={"userId": "u", "event": "E", "messageId": "cli-tail"},
            headers=basic(WEB_KEY),
        )
        first = json.loads(proc.stdout.readline())
        assert first["kind"] == "event"
        assert first["message_id"] == "cli-tail"
        assert first["event"]["event"] == "E"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130  # interrupted, as every command stopped by Ctrl-C


def test_watch_reload_starts_delivering_to_a_new_sync(tmp_path):
    project_dir = write_project(tmp_path / "project")
    out = project_dir / "out" / "events.ndjson"
    with (
        ListenerThread(project_dir, watch=True) as listener,
        httpx.Client(base_url=listener.url) as http,
    ):
        event = {"userId": "u", "event": "Before", "messageId": "before-reload"}
        assert http.post("/v1/track", json=event, headers=basic(WEB_KEY)).status_code == 200
        (project_dir / "syncs" / "web-to-file.yaml").write_text(FILE_SYNC)
        assert wait_for(lambda: listener.running.instance.reloads == 1, timeout=15), (
            listener.err.getvalue()
        )
        event = {"userId": "u", "event": "After", "messageId": "after-reload"}
        assert http.post("/v1/track", json=event, headers=basic(WEB_KEY)).status_code == 200
        assert wait_for(lambda: "after-reload" in delivered_ids(out), timeout=10)
        assert "before-reload" not in delivered_ids(out)  # processed before the sync existed


def test_watch_reload_starts_evaluating_alert_rules_added_to_the_project(tmp_path):
    project_dir = write_project(tmp_path / "project", syncs={"web-to-file": FILE_SYNC})
    with FakeServer() as hook, ListenerThread(project_dir, watch=True) as listener:
        alerts = f"""\
alerts:
  interval: 50ms
  channels:
    hook: {{ type: webhook, url: "{hook.url}" }}
  rules:
    - {{ name: web is quiet, sync: web-to-file, when: no_events, window: 1m, notify: [hook] }}
"""
        (project_dir / "streamctl.yaml").write_text(BASE_CONFIG + alerts)
        assert wait_for(lambda: listener.running.instance.reloads == 1, timeout=15), (
            listener.err.getvalue()
        )
        assert wait_for(lambda: hook.requests, timeout=10), listener.err.getvalue()
    [notice] = hook.bodies()
    assert (notice["rule"], notice["sync"], notice["state"]) == (
        "web is quiet", "web-to-file", "firing",
    )  # fmt: skip


def test_run_exits_1_naming_the_address_when_the_port_is_taken(tmp_path):
    import socket
    import subprocess
    import sys

    project_dir = write_project(tmp_path / "project")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamctl",
                "run",
                "--project",
                str(project_dir),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert result.stdout == ""


def test_metrics_count_deliveries_per_sync(delivering):
    listener, _ = delivering

    def delivered_count() -> float:
        text = httpx.get(f"{listener.url}/metrics").text
        prefix = 'streamctl_sync_events_total{status="delivered",sync="web-to-file"} '
        return next(
            (float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)),
            0.0,
        )

    before = delivered_count()
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "M", "messageId": f"metric-{i}"}
            for i in range(3)
        ]
    }
    assert (
        httpx.post(f"{listener.url}/v1/batch", json=batch, headers=basic(WEB_KEY)).status_code
        == 200
    )
    assert wait_for(lambda: delivered_count() - before == 3, timeout=10)
    text = httpx.get(f"{listener.url}/metrics").text
    assert 'streamctl_delivery_attempts_total{outcome="success",sync="web-to-file"}' in text
    assert 'streamctl_delivery_latency_seconds_count{sync="web-to-file"}' in text
