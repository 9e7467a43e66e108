"""`streamctl top`: a live, full-screen table of every sync's rates, errors and latency."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamctl.cli.options import ProjectOption, SyncOption, since_flag
from streamctl.cli.output import natural_width, stdout, table_console
from streamctl.config.loader import load_project
from streamctl.core.errors import UsageError
from streamctl.core.rows import PartitionLag
from streamctl.core.units import parse_duration
from streamctl.monitoring.top import Rate, TopRow, TopSampler
from streamctl.store.metrics import StoreMetrics

app = typer.Typer()


@app.command("top")
def top(
    project: ProjectOption = Path("."),
    sync: SyncOption = None,
    since: Annotated[
        str, since_flag("Count totals from this long before start (30s, 15m, 1h).")
    ] = "15m",
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between refreshes.", min=0.05)
    ] = 1.0,
    once: Annotated[
        bool,
        typer.Option("--once", help="Print one table (after measuring one interval) and exit."),
    ] = False,
) -> None:
    """Live per-sync table of rates, errors and latency, read from the store.

    Events in, delivered, filtered, failed (attempts) and archived show `total (rate/s)`; retrying and queue are deliveries in that state now. Quit with q or Ctrl-C.
    """
    loaded = load_project(project)
    names = [s.name for s in loaded.syncs]
    for name in sync or []:
        if name not in names:
            msg = f"--sync {name!r}: no such sync (known: {', '.join(names) or 'none'})"
            raise UsageError(msg)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    metrics = StoreMetrics.for_project(loaded)
    sampler = TopSampler(metrics, sync or names, since=time.time() - window)
    try:
        if once:
            sampler.sample()
            time.sleep(interval)
            sampler.sample()
            _print_plain(sampler)
        elif stdout.is_terminal:
            _live(sampler, interval)
        else:  # piped or logged: a table per interval, appended, never a screen
            sampler.sample()
            while True:
                time.sleep(interval)
                sampler.sample()
                _print_plain(sampler)
    finally:
        metrics.close()


def _print_plain(sampler: TopSampler) -> None:
    console = table_console()
    screen = render_top(
        sampler.rows(), since=sampler.since, now=time.time(), width=console.width,
        lags=sampler.lags(),
    )  # fmt: skip
    console.print(screen)
    console.file.flush()


def _live(sampler: TopSampler, interval: float) -> None:
    console = Console()
    sampler.sample()
    # Ctrl-C leaves through the `with`s (the terminal restored), then exits 130.
    with (
        _keys() as read_key,
        Live(console=console, screen=True, auto_refresh=False, transient=True) as live,
    ):
        while True:
            rows = sampler.rows()
            screen = render_top(
                rows, since=sampler.since, now=time.time(), live=True, width=console.width,
                lags=sampler.lags(),
            )  # fmt: skip
            live.update(screen, refresh=True)
            if read_key(interval) in ("q", "Q"):
                return
            sampler.sample()


@contextlib.contextmanager
def _keys() -> Iterator[_KeyReader]:
    """Single keys from a terminal in cbreak mode (Ctrl-C still interrupts); restored on exit."""
    if not sys.stdin.isatty():
        yield _KeyReader(None)
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield _KeyReader(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _KeyReader:
    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def __call__(self, timeout: float) -> str | None:
        """The key pressed within `timeout` seconds, if any (else None, after waiting)."""
        if self.fd is None:
            time.sleep(timeout)
            return None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        return os.read(self.fd, 1).decode(errors="replace")


# Narrower screens first put each counter's rate under its total, then leave out these
# columns, one at a time, least looked-at first (the caption names them).
GIVE_WAY = ("filtered", "queue", "p95", "retrying")


def render_top(
    rows: Sequence[TopRow],
    *,
    since: float,
    now: float,
    live: bool = False,
    width: int = 200,
    lags: Sequence[PartitionLag] = (),
) -> Group:
    """Pure: the screen for these rows, in the widest layout that fits `width` columns.
    Counters read `total (rate/s)`, or the rate under the total when narrow."""
    started = datetime.fromtimestamp(since, UTC).strftime("%H:%M:%S")
    clock = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S")
    title = Text.assemble(
        ("streamctl top", "bold"), f"  totals since {started} UTC, now {clock} UTC"
    )
    if live:
        title.append("  q quits", "dim")
    if not rows:
        return Group(title, Text("no syncs in this project"))
    layouts = [(False, ()), *((True, GIVE_WAY[:count]) for count in range(len(GIVE_WAY) + 1))]
    for stacked, hidden in layouts:
        table = _top_table(rows, stacked, hidden)
        if natural_width(table) <= width:
            break
    below = [part for _, lag in lag_tables(lags, now) for part in (Text(""), lag)]
    return Group(title, Text(""), table, *below)


def lag_tables(lags: Sequence[PartitionLag], now: float) -> list[tuple[str, Table]]:
    """(what, table) of the kafka sources' lag, then of the bus workers' group's lag
    (`status` shows them too, with `what` above each)."""
    sources = [g for g in lags if g.bus_group is None]
    bus = [g for g in lags if g.bus_group is not None]
    return [
        (what, lag_table(rows, now, heading))
        for rows, heading, what in (
            (sources, "kafka source", "kafka source lag (messages not yet stored)"),
            (bus, "bus group", "bus lag (messages the workers have not yet processed)"),
        )
        if rows
    ]


def lag_table(lags: Sequence[PartitionLag], now: float, heading: str = "kafka source") -> Table:
    """Consumer lag per partition: of kafka sources, or of the bus's workers (`heading`:
    "bus group")."""
    table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    for name in (heading, "topic", "partition"):
        table.add_column(name, no_wrap=True)
    for heading in ("lag", "committed", "high watermark", "measured"):
        table.add_column(heading, justify="right", no_wrap=True)
    for lag in lags:
        style = "yellow" if lag.lag else ""
        table.add_row(
            lag.bus_group or lag.source, lag.topic, str(lag.partition), Text(f"{lag.lag:,}", style),
            f"{lag.committed:,}", f"{lag.end_offset:,}", f"{max(0.0, now - lag.updated_at):.0f}s ago",
        )  # fmt: skip
    return table


def _top_table(rows: Sequence[TopRow], stacked: bool, hidden: Sequence[str]) -> Table:
    caption = f"hidden at this width: {', '.join(hidden)}" if hidden else None
    table = Table(box=None, header_style="bold", pad_edge=False, expand=False, caption=caption)
    table.add_column("sync", no_wrap=True)
    for row in rows:
        cells = {
            "in": _rate(row.received, "", stacked),
            "delivered": _rate(row.delivered, "green", stacked),
            "filtered": _rate(row.filtered, "", stacked),
            "failed": _rate(row.failed, "red", stacked),
            "archived": _rate(row.archived, "red", stacked),
            "retrying": Text(str(row.retrying)),
            "queue": Text(str(row.queued)),
            "error rate": Text("-" if row.error_rate is None else f"{row.error_rate:.1%}"),
            "p95": Text("-" if row.latency_p95_ms is None else f"{row.latency_p95_ms:.0f} ms"),
        }
        shown = {heading: cell for heading, cell in cells.items() if heading not in hidden}
        if not table.rows:
            for heading in shown:
                table.add_column(heading, justify="right", no_wrap=True)
        table.add_row(row.sync, *shown.values())
    return table


def _rate(rate: Rate, style: str = "", stacked: bool = False) -> Text:
    per_second = "…" if rate.per_second is None else f"{rate.per_second:.1f}/s"
    moving = style if rate.per_second else ""
    if stacked:
        return Text.assemble(f"{rate.total:,}\n", (per_second, moving or "dim"))
    return Text.assemble(f"{rate.total:,} ", (f"({per_second})", moving))
