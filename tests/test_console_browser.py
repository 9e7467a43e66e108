"""The web console in a real browser (Debian's chromium, driven by playwright-python).

One `streamctl run` (a subprocess) for the module, fed by real HTTP requests, delivering
to a fake webhook server; one headless Chromium. Every page must draw from the running
instance, and no page may request anything off this machine. Screenshots go to the
test run's folder (`console-screenshots/` under pytest's base temp directory, or
$STREAMCTL_SCREENSHOTS).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

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

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CONSOLE_TOKEN = "console-token-abcdef0123456789"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("STREAMCTL_SCREENSHOTS") or tmp_path_factory.getbasetemp())
    folder = folder / "console-screenshots" if "STREAMCTL_SCREENSHOTS" not in os.environ else folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def destination():  # type: ignore[no-untyped-def]
    answer = Destination()
    with FakeServer(answer) as server:
        server.behaviour = answer  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, destination: FakeServer) -> Path:
    root = tmp_path_factory.mktemp("console") / "project"
    return write_project(root, console_config(destination.url), syncs={"web-to-hook": SYNC})


@pytest.fixture(scope="module")
def running(project: Path, destination: FakeServer):  # type: ignore[no-untyped-def]
    with ListenerProcess(project, env={"HOOK_TOKEN": HOOK_TOKEN}) as proc:
        feed(proc.url)
        yield proc


@pytest.fixture(scope="module")
def browser() -> Browser:  # type: ignore[misc]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser):  # type: ignore[no-untyped-def]
    """A page that records every URL it requests; the test fails if one leaves 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    requested: list[str] = []
    opened.on("request", lambda request: requested.append(request.url))
    yield opened
    context.close()
    off_machine = [u for u in requested if urlsplit(u).hostname not in ("127.0.0.1", None)]
    assert requested and not off_machine, off_machine


def test_overview_draws_charts_from_the_running_instance(running, page: Page, shots: Path):
    page.goto(f"{running.url}/console/")
    volume = page.locator('figure[data-chart="volume"]')
    volume.locator("canvas").wait_for()
    for chart in ("volume", "latency", "error_rate"):
        figure = page.locator(f'figure[data-chart="{chart}"]')
        assert figure.get_attribute("data-drawn") == "true"
        assert int(figure.get_attribute("data-points") or 0) > 0, chart
    row = page.locator('#summary tr[data-sync="web-to-hook"] td')
    assert row.nth(1).inner_text() == "34"  # received: every event reached the sync
    assert row.nth(3).inner_text() == "3"  # filtered: the three Ignored
    assert row.nth(5).inner_text() == "1"  # archived
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    track(running.url, "late-1", "Signed Up")  # htmx refreshes the page every 15 s
    cards = page.locator(".card b").first
    assert wait_for(lambda: cards.inner_text() == "35", timeout=25), cards.inner_text()
    page.locator('figure[data-chart="volume"][data-drawn="true"] canvas').wait_for()
    page.click("text=last week")
    page.locator('figure[data-chart="volume"] canvas').wait_for()
    assert "window=week" in page.url
    page.click("a.chip >> text=web-to-hook")  # one sync's charts
    page.locator('figure[data-chart="latency"] canvas').wait_for()
    assert "sync=web-to-hook" in page.url and "Overview: web-to-hook" in page.inner_text("h1")
    assert int(page.locator('figure[data-chart="latency"]').get_attribute("data-points") or 0)


def test_syncs_page_shows_each_sync_as_its_flow(running, page: Page, shots: Path):
    page.goto(f"{running.url}/console/syncs")
    flow = page.locator("#sync-web-to-hook ol.flow li.step")
    assert flow.count() == 5
    text = page.locator("#sync-web-to-hook").inner_text()
    assert "web" in text and "hook" in text and "webhook" in text
    assert "neq" in text and "Ignored" in text  # the filter as written
    assert "max attempts" in text
    funnel = page.locator("#sync-web-to-hook table.funnel").inner_text()
    assert re.search(r"filtered\s+3", funnel), funnel
    page.screenshot(path=str(shots / "syncs.png"), full_page=True)


def test_errors_filter_and_retry_redelivers_an_archived_event(
    running, page: Page, destination: FakeServer, shots: Path
):
    page.goto(f"{running.url}/console/errors")
    rows = page.locator("#error-rows tr.status-archived")
    assert rows.count() == 1
    assert "500" in rows.first.inner_text()
    page.select_option('select[name="status"]', "retrying")  # htmx swaps the rows
    page.locator("#error-rows td.empty").wait_for()
    page.select_option('select[name="status"]', "archived")
    rows.first.wait_for()
    page.fill('input[name="code"]', "502")
    page.press('input[name="code"]', "Enter")
    page.locator("#error-rows td.empty").wait_for()
    page.fill('input[name="code"]', "500")
    page.press('input[name="code"]', "Enter")
    rows.first.wait_for()
    page.screenshot(path=str(shots / "errors.png"), full_page=True)

    rows.first.locator("a").first.click()
    page.wait_for_url(re.compile(r"/console/errors/\d+$"))
    story = page.locator("main").inner_text()
    assert "upstream broke" in story and "fail-1" in story
    assert HOOK_TOKEN not in page.content()  # the secret in the event is masked
    assert "carries ***" in page.content()
    page.screenshot(path=str(shots / "delivery.png"), full_page=True)

    destination.behaviour.failing = False  # type: ignore[attr-defined]
    sent_before = len([r for r in destination.requests if r.path.startswith("/events")])
    page.click("button.retry")
    page.locator("#retry-result .retried").wait_for()
    assert wait_for(lambda: status_of(running.url, "fail-1") == "delivered")
    resent = [r for r in destination.requests[sent_before:] if r.path.startswith("/events")]
    assert [r.json()["message_id"] for r in resent].count("fail-1") == 1  # sent once more
    page.reload()
    assert page.locator("#delivery-status").inner_text() == "delivered"


def test_debugger_shows_an_event_sent_after_the_page_opened(running, page: Page, shots: Path):
    page.goto(f"{running.url}/console/debugger")
    page.locator('#stream-state[data-state="live"]').wait_for()
    track(running.url, "live-1", "Order Completed", total=42)
    row = page.locator('tr.live-event[data-message-id="live-1"]')
    row.wait_for()
    row.locator(".badge.outcome.delivered").wait_for()
    assert "web-to-hook: delivered" in row.inner_text()

    page.fill("#f-user", "nobody")  # filters hide rows that do not match
    assert row.is_hidden()
    page.fill("#f-user", "user-7")
    assert row.is_visible()

    page.click("#pause")
    track(running.url, "live-2", "Order Completed", total=1)
    page.locator('#stream-state[data-state="paused"]').wait_for()
    state = page.locator("#stream-state")
    assert wait_for(lambda: re.search(r"paused \([1-9]\d* waiting\)", state.inner_text()))
    assert page.locator('tr[data-message-id="live-2"]').count() == 0
    page.click("#pause")
    page.locator('tr[data-message-id="live-2"]').wait_for()

    row.click()
    page.locator("#event-story .receipt").wait_for()
    detail = page.locator("#event-detail").inner_text()
    assert '"total": 42' in detail and "payload sent to hook" in detail
    page.locator('#event-story .preview[data-sync="web-to-hook"] pre.request-body').wait_for()
    assert "POST http://127.0.0.1" in detail  # the exact request a preview would send
    assert '"message_id": "live-1"' in page.locator("pre.request-body").inner_text()
    assert '"Authorization": "***"' in page.content() and HOOK_TOKEN not in page.content()
    page.screenshot(path=str(shots / "debugger.png"), full_page=True)


def test_alerts_page_lists_rules_state_and_notifications(running, page: Page, shots: Path):
    def fired() -> bool:
        page.goto(f"{running.url}/console/alerts")
        return "firing" in page.locator("#alert-history tbody").inner_text()

    assert wait_for(fired, timeout=20)
    state = page.locator("#alert-rules tbody tr .badge").first.inner_text()
    assert state in ("firing", "ok")  # evaluated: ok once the retry delivered the event
    rule = page.locator("#alert-rules tbody tr").first.inner_text()
    assert "anything-archived" in rule and "web-to-hook" in rule
    history = page.locator("#alert-history tbody").inner_text()
    assert "ops" in history and "firing" in history
    page.screenshot(path=str(shots / "alerts.png"), full_page=True)


def test_actions_need_the_csrf_token_and_same_origin(running):
    url = f"{running.url}/console/errors/1/retry"
    page = httpx.get(f"{running.url}/console/errors").text
    csrf = re.search(r'name="csrf-token" content="(\w+)"', page).group(1)  # type: ignore[union-attr]
    assert httpx.post(url).status_code == 403
    assert httpx.post(url, headers={"X-CSRF-Token": "forged"}).status_code == 403
    foreign = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert httpx.post(url, headers=foreign).status_code == 403
    assert httpx.get(url).status_code == 405  # actions are POSTs only
    assert httpx.post(url, headers={"X-CSRF-Token": csrf}).status_code == 200


def test_a_console_token_is_required_when_configured(project: Path, browser: Browser):
    with ListenerProcess(
        project, env={"HOOK_TOKEN": HOOK_TOKEN, "STREAMCTL_CONSOLE_TOKEN": CONSOLE_TOKEN}
    ) as proc:
        assert httpx.get(f"{proc.url}/console/").status_code == 401
        assert httpx.get(f"{proc.url}/console/?token=wrong-token").status_code == 401
        bearer = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
        assert httpx.get(f"{proc.url}/console/syncs", headers=bearer).status_code == 200
        assert httpx.get(f"{proc.url}/healthz").status_code == 200  # ingest is not guarded
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{proc.url}/console/errors?token={CONSOLE_TOKEN}")
        assert "token=" not in page.url  # traded for a cookie
        page.locator("#errors").wait_for()
        page.goto(f"{proc.url}/console/syncs")  # the cookie carries on
        assert page.locator("#sync-web-to-hook").count() == 1
        context.close()


def test_console_command_serves_the_store_alone(project: Path, running, browser: Browser):
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamctl", "console", "--project", str(project), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOOK_TOKEN": HOOK_TOKEN},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = re.search(r"(http://\S+)/console", line).group(1)  # type: ignore[union-attr]
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/console/debugger")
        page.locator('#stream-state[data-state="live"]').wait_for()
        track(running.url, "polled-1", "Signed Up")  # the other node ingests it
        page.locator('tr.live-event[data-message-id="polled-1"]').wait_for()
        page.goto(f"{url}/console/")
        assert int(page.locator('figure[data-chart="volume"]').get_attribute("data-points") or 0)
        context.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_report_is_one_self_contained_file(
    project: Path, running, destination: FakeServer, browser: Browser, shots: Path
):
    destination.behaviour.failing = True  # type: ignore[attr-defined]
    track(running.url, "fail-2", "Will Fail")
    assert wait_for(lambda: status_of(running.url, "fail-2") == "archived")
    out = project / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "streamctl", "report", "--project", str(project),
         "--html", str(out), "--since", "2h"],
        capture_output=True, text=True, env={**os.environ, "HOOK_TOKEN": HOOK_TOKEN},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "<script src" not in html and "<link" not in html and HOOK_TOKEN not in html
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(out.as_uri())
    page.locator('figure[data-chart="volume"] canvas').wait_for()
    assert int(page.locator('figure[data-chart="volume"]').get_attribute("data-points") or 0) > 0
    assert "fail-2" in page.locator("#error-rows tr.status-archived").inner_text()
    assert requested == [out.as_uri()]
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    context.close()


def test_bad_input_never_gets_a_server_error(running):
    paths = [
        "/console/?window=century&sync=%00nope",
        "/console/errors?status=bogus&stage=%27;drop&code=abc,500x&since=yesterday&until=2026-13-45",
        "/console/errors/rows?since=99999d&until=1999-01-01T00:00:00Z",
        "/console/errors/not-a-number",
        "/console/errors/v999999",
        "/console/errors/123456789",
        "/console/debugger/events/" + "x" * 5000,
        "/console/static/../../streamctl.yaml",
        "/console/nowhere",
    ]
    for path in paths:
        reply = httpx.get(running.url + path)
        assert reply.status_code < 500, (path, reply.status_code)
        assert HOOK_TOKEN not in reply.text
    page = httpx.get(f"{running.url}/console/errors").text
    csrf = re.search(r'name="csrf-token" content="(\w+)"', page).group(1)  # type: ignore[union-attr]
    retry = httpx.post(f"{running.url}/console/errors/abc/retry", headers={"X-CSRF-Token": csrf})
    assert retry.status_code == 200 and "not a delivery id" in retry.text
