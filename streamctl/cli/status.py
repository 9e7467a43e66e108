"""`streamctl status`: the funnel of every sync, its error rate and latency, over a window."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from streamctl.cli.errors import parse_since
from streamctl.cli.options import JsonOption, ProjectOption, SyncOption, since_flag
from streamctl.cli.output import natural_width, stdout
from streamctl.cli.top import lag_tables
from streamctl.config.loader import load_project
from streamctl.config.secrets import redact
from streamctl.core.rows import PartitionLag
from streamctl.core.timestamps import iso
from streamctl.monitoring.sparkline import SyncTrend, sync_trends, trend_header
from streamctl.store.backend import open_store, store_exists
from streamctl.store.metrics import StoreMetrics
from streamctl.store.queries import empty_status

app = typer.Typer()

DEFAULT_WINDOW = "24h"
LATENCY = ("p50", "p95", "p99")
# (header, key) of the funnel columns, in pipeline order.
FUNNEL_COLUMNS = (
    ("received", "received"),
    ("blocked", "blocked"),
    ("dropped", "dropped"),
    ("filtered", "filtered"),
    ("mapping errors", "mapping_errors"),
    ("delivered", "delivered"),
    ("retrying", "retrying"),
    ("archived", "archived"),
)


@app.command("status")
def status(
    project_dir: ProjectOption = Path("."),
    since: Annotated[
        str, since_flag("The window: a duration back from now (5m, 24h, 7d) or an ISO time.")
    ] = DEFAULT_WINDOW,
    syncs: SyncOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per sync: received, blocked, dropped, filtered, mapping errors, delivered, retrying,
    archived, error rate (failed attempts / attempts) and request latency p50/p95/p99."""
    project = load_project(project_dir)
    window_start = parse_since(since) or time.time() - 86400
    names = [s.name for s in project.syncs]
    trends: dict[str, SyncTrend] = {}
    lags: list[PartitionLag] = []
    rejected: dict[str, int] = {}
    if store_exists(project):
        with closing(open_store(project, readonly=True)) as store:
            rows = store.sync_status(window_start, names)
            lags = store.partition_lags()
            rejected = store.rejected_counts(window_start)
        with closing(StoreMetrics.for_project(project)) as metrics:
            trends = sync_trends(metrics, names, since=window_start, until=time.time())
    else:
        rows = sync_status_empty(names)
    for row in rows:  # per-minute volume and errors (streamctl.monitoring.sparkline)
        if row["sync"] in trends:
            row["trend"] = trends[row["sync"]].as_json()
    if syncs:
        rows = [r for r in rows if r["sync"] in set(syncs)]
    if as_json:
        document = {"since": since, "syncs": rows,
                    "kafka_lag": [lag_json(g) for g in lags if g.bus_group is None],
                    "bus_lag": [lag_json(g) for g in lags if g.bus_group is not None],
                    "rejected_input": rejected}  # fmt: skip
        typer.echo(redact(orjson.dumps(document).decode(), project.secrets))
        return
    stdout.print(status_table(rows, title=f"streamctl status, last {since}", trends=trends))
    for what, table in lag_tables(lags, time.time()):
        stdout.print(Text(f"\n{what}", style="bold"))
        stdout.print(table)
    if rejected:
        counts = ", ".join(f"{source} {count:,}" for source, count in rejected.items())
        stdout.print(f"\nrejected input (`streamctl errors --stage source`): {counts}")


def lag_json(lag: PartitionLag) -> dict[str, Any]:
    consumer = {"group": lag.bus_group} if lag.bus_group is not None else {"source": lag.source}
    return {
        **consumer, "topic": lag.topic, "partition": lag.partition, "lag": lag.lag,
        "committed": lag.committed, "high_watermark": lag.end_offset,
        "measured_at": iso(lag.updated_at),
    }  # fmt: skip


def sync_status_empty(names: list[str]) -> list[dict[str, Any]]:
    return [empty_status(name) for name in names]


# The columns after `sync`: (header, key of the row), in the order shown.
COLUMNS = (
    *FUNNEL_COLUMNS,
    ("error rate", "error_rate"),
    ("p50 ms", "p50"),
    ("p95 ms", "p95"),
    ("p99 ms", "p99"),
)
# When the table is wider than the terminal, these columns give way one at a time,
# least looked-at first, until it fits (a wider terminal or --json shows them all).
# received, delivered, archived and the error rate always stay; the sparklines move
# to a table of their own (volume above errors) before any column goes.
GIVE_WAY = ("p50", "p99", "dropped", "blocked", "filtered", "mapping_errors", "p95", "retrying")


@dataclass(frozen=True)
class Layout:
    """Which columns the status table shows and where the sparklines go."""

    hidden: tuple[str, ...] = ()  # keys of COLUMNS left out
    trends_beside: bool = True  # sparkline columns in the table; False: a table below
    wrap_headers: bool = False  # two-word headers on two lines

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [(header, key) for header, key in COLUMNS if key not in self.hidden]


def layouts() -> list[Layout]:
    """Widest first. The first whose natural width fits the terminal is drawn, so that a
    sync's name is never squeezed or cut (its numbers neither)."""
    narrower = [Layout(), Layout(wrap_headers=True)]
    narrower += [
        Layout(GIVE_WAY[:count], trends_beside=False, wrap_headers=True)
        for count in range(len(GIVE_WAY) + 1)
    ]
    return narrower


def status_table(
    rows: list[dict[str, Any]],
    title: str = "streamctl status",
    trends: Mapping[str, SyncTrend] | None = None,
    width: int | None = None,
) -> RenderableType:
    """The status of `rows` in the widest layout that fits `width` columns (default: the
    terminal's), with the volume and error sparklines of `trends`."""
    width = width or stdout.width
    tables: list[Table] = []
    for layout in layouts():
        tables = _layout_tables(layout, rows, title, trends or {})
        if all(natural_width(table) <= width for table in tables):
            break
    return Group(*tables)


def _layout_tables(
    layout: Layout, rows: list[dict[str, Any]], title: str, trends: Mapping[str, SyncTrend]
) -> list[Table]:
    hidden = [header for header, key in COLUMNS if key in layout.hidden]
    caption = f"hidden at this width (see --json): {', '.join(hidden)}" if hidden else None
    table = Table(title=title, caption=caption)
    table.add_column("sync", no_wrap=True)
    for header, _ in layout.columns:
        shown = header.replace(" ", "\n") if layout.wrap_headers else header
        table.add_column(shown, justify="right", no_wrap=True)
    beside = bool(trends) and layout.trends_beside
    per_char = max((t.minutes_per_char for t in trends.values()), default=1)
    if beside:
        table.add_column(trend_header("volume", per_char), no_wrap=True)
        table.add_column(trend_header("errors", per_char), style="red", no_wrap=True)
    for row in rows:
        cells = row_cells(row, layout.columns)
        if beside:
            trend = trends.get(row["sync"])
            cells += [trend.volume, trend.errors] if trend else ["", ""]
        table.add_row(*cells)
    if not trends or beside:
        return [table]
    return [table, _trends_below(rows, trends, per_char)]


def _trends_below(
    rows: list[dict[str, Any]], trends: Mapping[str, SyncTrend], per_char: int
) -> Table:
    """The sparklines on a table of their own: volume above errors, one sync a row."""
    table = Table(title="trends")
    table.add_column("sync", no_wrap=True)
    header = Text.assemble(
        trend_header("volume", per_char), "\n", (trend_header("errors", per_char), "red")
    )
    table.add_column(header, no_wrap=True)
    for row in rows:
        trend = trends.get(row["sync"])
        lines = Text.assemble(trend.volume, "\n", (trend.errors, "red")) if trend else Text("")
        table.add_row(str(row["sync"]), lines)
    return table


def row_cells(row: dict[str, Any], columns: Sequence[tuple[str, str]] = COLUMNS) -> list[str]:
    return [str(row["sync"]), *(_cell(row, key) for _, key in columns)]


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "error_rate":
        return f"{row['error_rate'] * 100:.1f}%" if row["attempts"] else "-"
    if key in LATENCY:
        value = row["latency_ms"][key]
        return "-" if value is None else f"{value:,.1f}"
    return f"{row[key]:,}"
