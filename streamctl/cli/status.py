"""`streamctl status`: the funnel of every sync, its error rate and latency, over a window."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from streamctl.cli.errors import parse_since
from streamctl.cli.options import JsonOption, ProjectOption, SyncOption, since_flag
from streamctl.cli.output import stdout
from streamctl.config.loader import load_project
from streamctl.config.secrets import redact
from streamctl.monitoring.sparkline import SyncTrend, sync_trends, trend_header
from streamctl.monitoring.store_metrics import StoreMetrics
from streamctl.store.db import Store, store_path
from streamctl.store.queries import empty_status, sync_status

app = typer.Typer()

DEFAULT_WINDOW = "24h"
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
    if store_path(project).exists():
        with Store.for_project(project, readonly=True) as store:
            rows = sync_status(store, window_start, names)
            trends = sync_trends(StoreMetrics(store), names, since=window_start, until=time.time())
    else:
        rows = sync_status_empty(names)
    for row in rows:  # per-minute volume and errors (streamctl.monitoring.sparkline)
        if row["sync"] in trends:
            row["trend"] = trends[row["sync"]].as_json()
    if syncs:
        rows = [r for r in rows if r["sync"] in set(syncs)]
    if as_json:
        typer.echo(redact(orjson.dumps({"since": since, "syncs": rows}).decode(), project.secrets))
        return
    stdout.print(status_table(rows, title=f"streamctl status, last {since}", trends=trends))


def sync_status_empty(names: list[str]) -> list[dict[str, Any]]:
    return [empty_status(name) for name in names]


def status_table(
    rows: list[dict[str, Any]],
    title: str = "streamctl status",
    trends: Mapping[str, SyncTrend] | None = None,
) -> Table:
    """The status table; extend it (sparklines, rates) by adding columns to what this returns
    and cells through `row_cells`."""
    table = Table(title=title)
    table.add_column("sync")
    for header, _ in FUNNEL_COLUMNS:
        table.add_column(header, justify="right")
    for header in ("error rate", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(header, justify="right")
    if trends:
        per_char = max(t.minutes_per_char for t in trends.values())
        table.add_column(trend_header("volume", per_char), no_wrap=True)
        table.add_column(trend_header("errors", per_char), style="red", no_wrap=True)
    for row in rows:
        trend = trends.get(row["sync"]) if trends else None
        sparklines = [trend.volume, trend.errors] if trend else ["", ""]
        table.add_row(*row_cells(row), *(sparklines if trends else []))
    return table


def row_cells(row: dict[str, Any]) -> list[str]:
    latency = row["latency_ms"]
    cells = [str(row["sync"])]
    cells += [f"{row[key]:,}" for _, key in FUNNEL_COLUMNS]
    cells.append(f"{row['error_rate'] * 100:.1f}%" if row["attempts"] else "-")
    cells += ["-" if latency[p] is None else f"{latency[p]:,.1f}" for p in ("p50", "p95", "p99")]
    return cells
