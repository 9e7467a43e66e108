"""`streamctl replay FILE.ndjson`: push recorded events through the pipeline and deliver them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from streamctl.cli.options import ProjectOption, json_flag, source_flag, sync_flag
from streamctl.cli.output import stderr
from streamctl.config.loader import load_project
from streamctl.config.secrets import redact
from streamctl.core.model import Project
from streamctl.delivery.replay import (
    ReplayProgress,
    ReplayReport,
    ReplaySession,
    default_source,
)
from streamctl.sources.ndjson import BadLine

app = typer.Typer()

COLUMNS = (
    ("events", "received"),
    ("delivered", "delivered"),
    ("archived", "archived"),
    ("filtered", "filtered"),
    ("dropped", "dropped"),
    ("blocked", "blocked"),
    ("mapping errors", "mapping_error"),
    ("function errors", "function_error"),
)
DRY_RUN_COLUMNS = (
    ("events", "received"),
    ("would deliver", "would_deliver"),
    ("filtered", "filtered"),
    ("dropped", "dropped"),
    ("blocked", "blocked"),
    ("mapping errors", "mapping_error"),
    ("function errors", "function_error"),
)


@app.command("replay")
def replay(
    file: Annotated[
        Path, typer.Argument(help="NDJSON file: one Segment-spec event per line.", dir_okay=False)
    ],
    project_dir: ProjectOption = Path("."),
    sources: Annotated[
        list[str] | None,
        source_flag("The source the events arrive on (default: the only http source). Repeatable."),
    ] = None,
    syncs: Annotated[
        list[str] | None, sync_flag("Deliver only through this sync. Repeatable.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide every event, store and send nothing.")
    ] = False,
    as_json: Annotated[bool, json_flag("Print the summary as JSON on stdout.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Processes that parse events and run the pipeline (0: none; default: one per CPU for files over 4 MB).",
        ),
    ] = None,
) -> None:
    """Replay events from an NDJSON file: contract, functions, filters, mappings, delivery.

    Bad lines are reported with their line number and the rest go through. Waits
    until every delivery is delivered or archived; exits 1 if any was archived or
    failed (mapping or function error).
    """
    project = load_project(project_dir)
    chosen_sources = sources or [default_source(project)]
    reports = [
        _replay_one(project, file, source, syncs or [], dry_run, workers, show_progress=not as_json)
        for source in chosen_sources
    ]
    if as_json:
        typer.echo(json.dumps([_as_json(r, project.secrets) for r in reports], indent=2))
    else:
        for report in reports:
            stderr.print(summary_table(report))
    if any(r.failed for r in reports) and not dry_run:
        raise typer.Exit(1)


def _replay_one(
    project: Project,
    file: Path,
    source: str,
    syncs: list[str],
    dry_run: bool,
    workers: int | None,
    show_progress: bool,
) -> ReplayReport:
    def report_bad(line: BadLine) -> None:
        text = redact(f"{file}:{line.where()}: {line.message}", project.secrets)
        stderr.print(text, markup=False, highlight=False)

    with (
        ReplaySession(
            project, file, source=source, syncs=syncs, dry_run=dry_run, workers=workers
        ) as session,
        _progress_bar(show_progress) as progress,
    ):  # the bar after the fork
        task = progress.add_task(f"replay {file.name} -> {source}", total=None)

        def update(state: ReplayProgress) -> None:
            progress.update(
                task,
                completed=state.bytes_read,
                total=state.bytes_total or None,
                description=(
                    f"{source}: {state.events:,} in, {state.delivered:,} delivered"
                    + (f", {state.archived:,} archived" if state.archived else "")
                ),
            )

        return session.run(on_progress=update, on_bad_line=report_bad)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=stderr,
        disable=not enabled,
        transient=False,
    )


def summary_table(report: ReplayReport) -> Table:
    """Per sync: how many events each outcome got."""
    title = f"replay into {report.source}" + (
        " (dry run: nothing stored or sent)" if report.dry_run else ""
    )
    caption = (
        f"{report.events:,} events, {report.duplicates:,} duplicates skipped,"
        f" {report.bad_lines:,} bad lines, {report.seconds:.1f}s"
    )
    if not report.drained:
        caption += " - stopped before every delivery finished: they resume on the next start"
    # One column per sync, one row per outcome: a few syncs fit any terminal.
    table = Table(title=title, caption=caption)
    table.add_column("outcome")
    syncs = sorted(report.by_sync.items())
    for sync, _ in syncs:
        table.add_column(sync, justify="right", overflow="fold")
    for header, key in DRY_RUN_COLUMNS if report.dry_run else COLUMNS:
        cells = [f"{report.events if key == 'received' else counts[key]:,}" for _, counts in syncs]
        table.add_row(header, *cells)
    return table


def _as_json(report: ReplayReport, secrets: frozenset[str]) -> dict[str, object]:
    return {
        "source": report.source,
        "dry_run": report.dry_run,
        "events": report.events,
        "duplicates": report.duplicates,
        "bad_lines": report.bad_lines,
        "bad": [{"line": b.line, "message": redact(b.message, secrets)} for b in report.bad],
        "seconds": round(report.seconds, 3),
        "drained": report.drained,
        "syncs": [
            {"sync": sync, **{k: v for k, v in sorted(counts.items()) if v}}
            for sync, counts in sorted(report.by_sync.items())
        ],
    }
