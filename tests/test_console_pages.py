"""The console's pages over HTTP, on each store: the same figures on SQLite and PostgreSQL.

One `streamctl run` (a subprocess) per store for the module, fed by real requests and
delivering to a fake webhook; each page's figures are read from the HTML it serves
(the browser's view of the same pages is tests/test_console_browser.py, on SQLite).
On PostgreSQL this is what a node of a shared store serves: `/console` in `run`,
`streamctl console` polling the store, `streamctl report --html`, retry handing the
delivery back for a node to claim.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.console_project import (
    HOOK_TOKEN,
    SYNC,
    Destination,
    console_config,
    feed,
    status_of,
    track,
    wait_for,
)
from tests.fakes.http import FakeServer
from tests.listener_harness import ListenerProcess, write_project

ENV = {"HOOK_TOKEN": HOOK_TOKEN}


@pytest.fixture(scope="module")
def destination() -> Iterator[FakeServer]:
    answer = Destination()
    with FakeServer(answer) as server:
        server.behaviour = answer  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def project(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    destination: FakeServer,
) -> Path:
    store = (
        request.getfixturevalue("postgres").create_database()
        if request.param == "postgres"
        else None
    )
    root = tmp_path_factory.mktemp(f"console-{request.param}") / "project"
    return write_project(root, console_config(destination.url, store), {"web-to-hook": SYNC})


@pytest.fixture(scope="module")
def running(project: Path, destination: FakeServer) -> Iterator[ListenerProcess]:
    destination.behaviour.failing = True  # type: ignore[attr-defined]
    with ListenerProcess(project, env=ENV) as proc:
        feed(proc.url)
        assert wait_for(lambda: _summary(proc.url)[2] == "30"), proc.stderr  # every delivery
        yield proc


def _summary(url: str, query: str = "") -> list[str]:
    """The web-to-hook row of the Overview's summary: sync, received, delivered, filtered,
    failed attempts, archived, error rate, p50, p95, p99, open."""
    page = httpx.get(f"{url}/console/{query}").text
    row = re.search(r'<tr data-sync="web-to-hook">(.*?)</tr>', page, re.S)
    assert row is not None, page[:500]
    return [
        re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row[1], re.S)
    ]


def _charts(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S)
    assert found is not None
    return orjson.loads(html.unescape(found[1]))  # type: ignore[no-any-return]


def _csrf(url: str) -> str:
    page = httpx.get(f"{url}/console/errors").text
    return re.search(r'name="csrf-token" content="(\w+)"', page)[1]  # type: ignore[index]


def _archived_id(url: str, message_id: str) -> int:
    rows = httpx.get(f"{url}/console/errors/rows?status=archived").text
    found = re.search(
        rf'<a href="/console/errors/(\d+)">\d+</a></td>\s*<td>[^<]*</td><td class="mono">{message_id}<',
        rows,
    )
    assert found is not None, rows
    return int(found[1])


def test_overview_counts_every_outcome(running: ListenerProcess) -> None:
    _, received, delivered, filtered, failed, archived, rate, p50, *_ = _summary(running.url)
    assert (received, delivered, filtered, failed, archived) == ("34", "30", "3", "1", "1")
    assert rate == "3.2%" and p50.endswith("ms")  # 1 failed attempt of 31
    page = httpx.get(f"{running.url}/console/?window=week&sync=web-to-hook").text
    charts = _charts(page)
    volume = dict(charts["volume"])
    assert sum(volume["received"]) == 34 and sum(volume["delivered"]) == 30
    assert sum(volume["archived"]) == 1
    assert any(v is not None for v in dict(charts["latency"])["p95"])
    overall = _charts(httpx.get(f"{running.url}/console/?window=day").text)
    assert sum(dict(overall["volume"])["received"]) == 34  # events received, every sync


def test_syncs_page_shows_the_funnel(running: ListenerProcess) -> None:
    page = httpx.get(f"{running.url}/console/syncs").text
    funnel = re.search(r'<table class="grid kv funnel">(.*?)</table>', page, re.S)
    assert funnel is not None
    cells = dict(re.findall(r"<th>([^<]+)</th><td>([^<]+)</td>", funnel[1]))
    assert cells["filtered"] == "3" and cells["failed attempts"] == "1"
    assert int(cells["received"].replace(",", "")) >= 34


def test_errors_filters_and_the_delivery_story(running: ListenerProcess) -> None:
    rows = f"{running.url}/console/errors/rows"
    archived = httpx.get(rows, params={"status": "archived", "code": "500"}).text
    assert archived.count('class="status-archived"') == 1 and "fail-1" in archived
    for params in (
        {"status": "retrying"},
        {"code": "502"},
        {"sync": "elsewhere"},
        {"since": "1d", "until": "2d"},
    ):
        assert "Nothing failed" in httpx.get(rows, params=params).text, params
    story = httpx.get(f"{running.url}/console/errors/{_archived_id(running.url, 'fail-1')}").text
    assert "upstream broke" in story and "fail-1" in story
    assert HOOK_TOKEN not in story and "carries ***" in story


def test_retry_sends_an_archived_delivery_again(
    running: ListenerProcess, destination: FakeServer
) -> None:
    track(running.url, "fail-retry", "Will Fail")
    assert wait_for(lambda: status_of(running.url, "fail-retry") == "archived")
    delivery = _archived_id(running.url, "fail-retry")
    destination.behaviour.failing = False  # type: ignore[attr-defined]
    try:
        sent_before = len(destination.requests)
        reply = httpx.post(
            f"{running.url}/console/errors/{delivery}/retry",
            headers={"X-CSRF-Token": _csrf(running.url)},
        )
        assert reply.status_code == 200 and "retried" in reply.text
        assert wait_for(lambda: status_of(running.url, "fail-retry") == "delivered")
        resent = [
            r.json().get("message_id")
            for r in destination.requests[sent_before:]
            if r.path.startswith("/events")
        ]
        assert resent.count("fail-retry") == 1
    finally:
        destination.behaviour.failing = True  # type: ignore[attr-defined]


def _stream_until(
    console: str, ingest: str, prefix: str, seen: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Read the debugger's stream at `console` while events `prefix`-N are tracked at
    `ingest`, one every 2 s (one sent before the stream subscribed is not shown),
    until `seen(records)`."""
    records: list[dict[str, Any]] = []
    done = threading.Event()

    def keep_sending() -> None:
        for n in range(10):
            if done.wait(0 if n == 0 else 2.0):
                return
            track(ingest, f"{prefix}-{n}", "Order Completed", total=n)

    deadline = time.monotonic() + 30
    try:
        with httpx.stream("GET", f"{console}/console/debugger/stream", timeout=20) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            threading.Thread(target=keep_sending, daemon=True).start()
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    records.append(orjson.loads(line[len("data: ") :]))
                if seen(records) or time.monotonic() > deadline:
                    break
    finally:
        done.set()
    return records


def _event_seen(prefix: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda records: any(
        r["kind"] == "event" and r["message_id"].startswith(prefix) for r in records
    )


def _delivered_live(prefix: str) -> Callable[[list[dict[str, Any]]], bool]:
    def seen(records: list[dict[str, Any]]) -> bool:
        events = {
            r["message_id"]
            for r in records
            if r["kind"] == "event" and r["message_id"].startswith(prefix)
        }
        return any(
            r["kind"] == "outcome"
            and r["message_id"] in events
            and r["status"] == "delivered"
            and r["sync"] == "web-to-hook"
            for r in records
        )

    return seen


def test_debugger_streams_events_and_their_outcomes(running: ListenerProcess) -> None:
    records = _stream_until(running.url, running.url, "live", _delivered_live("live"))
    assert _delivered_live("live")(records), records
    event = next(r for r in records if r["kind"] == "event" and r["message_id"].startswith("live"))
    assert event["source"] == "web" and event["event"]["event"] == "Order Completed"
    story = httpx.get(f"{running.url}/console/debugger/events/{event['message_id']}").text
    assert "web-to-hook" in story and "POST http://127.0.0.1" in story  # what it would send
    assert HOOK_TOKEN not in story


def test_alerts_page_shows_the_rule_firing(running: ListenerProcess) -> None:
    def history() -> str:
        page = httpx.get(f"{running.url}/console/alerts").text
        found = re.search(r'<table[^>]*id="alert-history".*?</table>', page, re.S)
        return found[0] if found else ""

    assert "firing" in wait_for(history, timeout=20)
    assert "anything-archived" in history() and "ops" in history()


def test_console_command_serves_the_store_alone(project: Path, running: ListenerProcess) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamctl", "console", "--project", str(project), "--port", "0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV},
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        said = ""
        while (found := re.search(r"(http://\S+)/console", said)) is None:
            line = proc.stderr.readline()  # a warning may come first; EOF: it exited
            assert line, f"streamctl console exited: {said}"
            said += line
        url = found[1]
        received = _summary(url)[1]
        assert received == _summary(running.url)[1]  # the same figures as the node's own
        records = _stream_until(url, running.url, "polled", _event_seen("polled"))
        assert _event_seen("polled")(records), records  # the other node ingested it
    finally:
        proc.terminate()
        proc.wait(10)


def test_report_is_one_file_with_the_errors(project: Path, running: ListenerProcess) -> None:
    track(running.url, "fail-report", "Will Fail")
    assert wait_for(lambda: status_of(running.url, "fail-report") == "archived")
    out = project / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "streamctl", "report", "--project", str(project),
         "--html", str(out), "--since", "2h"],
        capture_output=True, text=True, env={**os.environ, **ENV},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "<script src" not in text and "<link" not in text and HOOK_TOKEN not in text
    assert "fail-report" in text and "fail-1" in text
    volume = dict(_charts(text)["volume"])
    assert sum(volume["received"]) >= 36 and sum(volume["archived"]) >= 2
