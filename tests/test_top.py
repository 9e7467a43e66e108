"""`streamctl top`: rates from snapshots, the render function, and the real thing in a
pseudo-terminal against a store being written to."""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.cli.top import render_top
from streamctl.core.rows import PartitionLag, bus_lag_name
from streamctl.monitoring.top import Snapshot, TopSampler, top_rows
from streamctl.store import SqliteStore
from streamctl.store.metrics import SyncCounters
from tests.fakes.metrics import RecordedMetrics
from tests.fakes.traffic import Traffic
from tests.listener_harness import FILE_SYNC, WEB_KEY, ListenerThread, write_project

T0 = 1_800_000_000.0


def screen_text(*args, **kwargs) -> str:
    console = Console(record=True, width=160, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render_top(*args, **kwargs))
    return console.export_text()


def test_rates_are_the_growth_between_snapshots() -> None:
    before = Snapshot(
        T0, {"s": SyncCounters("s", received=100, delivered=90, failed=4, attempts=100)}
    )
    after = Snapshot(
        T0 + 2,
        {
            "s": SyncCounters(
                "s",
                received=130,
                delivered=110,
                failed=10,
                attempts=126,
                retrying=3,
                queued=7,
                latency_p95_ms=41.6,
            )
        },
    )

    (first,) = top_rows(before, None)
    (row,) = top_rows(after, before)

    assert first.received.per_second is None and first.received.total == 100
    assert (row.received.total, row.received.per_second) == (130, 15.0)
    assert (row.delivered.per_second, row.failed.per_second, row.archived.per_second) == (
        10.0,
        3.0,
        0.0,
    )
    assert (row.retrying, row.queued, row.latency_p95_ms) == (3, 7, 41.6)
    assert row.error_rate == pytest.approx(10 / 126)


def test_render_shows_totals_rates_and_gauges_per_sync() -> None:
    before = Snapshot(
        T0, {"to-braze": SyncCounters("to-braze"), "to-file": SyncCounters("to-file")}
    )
    after = Snapshot(
        T0 + 1,
        {
            "to-braze": SyncCounters(
                "to-braze", received=1234, delivered=1200, filtered=4, failed=30, archived=2,
                attempts=1230, retrying=12, queued=40, latency_p95_ms=250.4,
            ),
            "to-file": SyncCounters("to-file"),
        },
    )  # fmt: skip

    text = screen_text(top_rows(after, before), since=T0 - 900, now=T0 + 1, live=True)

    assert "totals since 07:45:00 UTC, now 08:00:01 UTC" in text and "q quits" in text
    braze = next(line for line in text.splitlines() if line.startswith("to-braze"))
    assert braze.split() == [
        "to-braze", "1,234", "(1234.0/s)", "1,200", "(1200.0/s)", "4", "(4.0/s)", "30", "(30.0/s)",
        "2", "(2.0/s)", "12", "40", "2.4%", "250", "ms",
    ]  # fmt: skip
    idle = next(line for line in text.splitlines() if line.startswith("to-file"))
    assert idle.split()[-2:] == ["-", "-"]  # no attempts: no error rate, no latency


def test_sampler_measures_rates_over_the_last_few_snapshots() -> None:
    metrics, now = RecordedMetrics(), [T0]
    sampler = TopSampler(metrics, ["s"], since=T0 - 60, clock=lambda: now[0])
    for second in range(8):
        now[0] = T0 + second
        for _ in range(second):  # 0, 1, 2, ... attempts per second: an accelerating sync
            metrics.attempt("s", at=now[0] - 0.5, ok=True)
        sampler.sample()

    (row,) = sampler.rows()

    assert row.delivered.total == 28
    assert row.delivered.per_second == (28 - 3) / 5  # snapshots at T0+2 .. T0+7


PROJECT = """\
version: 1
store: state.db
sources:
  web: { type: http, write_keys: [dev-key] }
destinations:
  hook: { type: webhook, config: { url: "http://127.0.0.1:9/never" } }
"""
SYNC = """\
source: web
destination: hook
event_types:
  - type: custom
    mappings:
      required:
        event: { field: event }
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "streamctl.yaml").write_text(PROJECT)
    (tmp_path / "syncs").mkdir()
    (tmp_path / "syncs" / "to-hook.yaml").write_text(SYNC)
    return tmp_path


def test_once_prints_one_table_on_stdout(project: Path) -> None:
    with SqliteStore.open(project / "state.db", synchronous="NORMAL") as store:
        traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
        traffic.attempt(traffic.receive(3, at=time.time()), ok=True, at=time.time())

    result = CliRunner().invoke(
        app, ["top", "--project", str(project), "--once", "--interval", "0.05"]
    )

    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("to-hook"))
    assert row.split()[:4] == ["to-hook", "3", "(0.0/s)", "3"]
    assert "q quits" not in result.stdout


def test_unknown_sync_is_a_usage_error(project: Path) -> None:
    result = CliRunner().invoke(app, ["top", "--project", str(project), "--sync", "nope", "--once"])
    assert result.exit_code == 2
    assert "--sync 'nope': no such sync (known: to-hook)" in result.stderr


ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Z0-9]|[=>])")


def watch_top(
    project: Path, sync: str, frames_wanted: int = 3, quit_with: str = "q"
) -> tuple[int, list[tuple[int, float]], str]:
    """Run `streamctl top` in a pseudo-terminal until the delivered total of `sync` took
    `frames_wanted` different values, then press q (or Ctrl-C: SIGINT). Returns the exit
    code, every (delivered total, delivered rate) seen, and the screen text."""
    row = re.compile(rf"{re.escape(sync)}\s+[\d,]+ \([\d.]+/s\)\s+([\d,]+) \(([\d.]+)/s\)")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "streamctl", "top", "--project", str(project), "--interval", "0.2"],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "30"},
    )  # fmt: skip
    os.close(slave)
    screen, seen = "", []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len({total for total, _ in seen}) < frames_wanted:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                screen += os.read(master, 65536).decode(errors="replace")
                text = ANSI.sub("", screen)
                seen = [(int(m[0].replace(",", "")), float(m[1])) for m in row.findall(text)]
        if quit_with == "q":
            os.write(master, b"q")
        else:
            process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return exit_code, seen, ANSI.sub("", screen)


def assert_rates_moved(seen: list[tuple[int, float]], screen: str) -> None:
    totals = [total for total, _ in seen]
    assert len(set(totals)) >= 3, textwrap.shorten(screen, 2000)
    assert totals == sorted(totals)  # totals only grow
    assert any(rate > 0 for _, rate in seen)  # the rate moved off zero


@pytest.mark.parametrize("quit_with", ["q", "ctrl-c"])
def test_live_screen_in_a_pty_shows_rates_moving_and_quits(project: Path, quit_with: str) -> None:
    stop = threading.Event()

    def write_traffic() -> None:  # what the delivery engine writes while top watches
        with SqliteStore.open(project / "state.db", synchronous="NORMAL") as store:
            traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
            while not stop.is_set():
                traffic.attempt(traffic.receive(5, at=time.time()), ok=True, at=time.time())
                time.sleep(0.05)

    SqliteStore.open(project / "state.db").close()  # migrated before either side starts
    writer = threading.Thread(target=write_traffic, daemon=True)
    writer.start()
    try:
        exit_code, seen, screen = watch_top(project, "to-hook", quit_with=quit_with)
    finally:
        stop.set()
        writer.join(5)

    assert exit_code == (0 if quit_with == "q" else 130)  # Ctrl-C: interrupted, as any command
    assert_rates_moved(seen, screen)


def test_top_follows_a_live_streamctl_run(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project", syncs={"web-to-file": FILE_SYNC})
    stop = threading.Event()
    with ListenerThread(project) as listener:

        def send_events() -> None:  # an app tracking steadily through the real listener
            with httpx.Client(base_url=listener.url, auth=(WEB_KEY, "")) as client:
                for i in itertools.count():
                    if stop.is_set():
                        return
                    client.post("/v1/track", json={"event": "Tick", "userId": f"u{i}"})
                    time.sleep(0.02)

        sender = threading.Thread(target=send_events, daemon=True)
        sender.start()
        try:
            exit_code, seen, screen = watch_top(project, "web-to-file")
        finally:
            stop.set()
            sender.join(5)

    assert exit_code == 0
    assert_rates_moved(seen, screen)


def test_the_kafka_sources_lag_and_the_bus_groups_lag_are_two_tables() -> None:
    rows = top_rows(Snapshot(T0, {"to-file": SyncCounters("to-file")}), None)
    lags = [
        PartitionLag("orders", "orders", 0, 10, 4, T0 - 3),
        PartitionLag(bus_lag_name("shop.workers"), "shop.web", 1, 254, 240, T0 - 1),
    ]

    text = screen_text(rows, since=T0 - 60, now=T0, lags=lags)

    lines = [line.split() for line in text.splitlines() if line.strip()]
    assert lines[-4][:5] == ["kafka", "source", "topic", "partition", "lag"]
    assert lines[-3] == ["orders", "orders", "0", "6", "4", "10", "3s", "ago"]
    assert lines[-2][:5] == ["bus", "group", "topic", "partition", "lag"]
    assert lines[-1] == ["shop.workers", "shop.web", "1", "14", "240", "254", "1s", "ago"]
