"""`streamctl store prune`: keep the SQLite file from growing forever."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamctl.cli.options import ProjectOption
from streamctl.cli.output import stderr
from streamctl.config.loader import load_project
from streamctl.core.errors import UsageError
from streamctl.core.units import parse_duration
from streamctl.store import SqliteStore

app = typer.Typer(help="Maintenance of the SQLite store.", no_args_is_help=True)


@app.command("prune")
def prune(
    project_dir: ProjectOption = Path("."),
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Delete what was received longer ago (30d, 12h); default: the project's retention.",
        ),
    ] = None,
    vacuum: Annotated[
        bool, typer.Option("--vacuum", help="Then give the freed space back to the disk.")
    ] = False,
) -> None:
    """Delete events older than the retention and everything recorded about them.

    Deliveries still pending or retrying are kept whatever their age. `streamctl run`
    applies the project's retention (retention_days, default 30) every hour.
    """
    project = load_project(project_dir)
    try:
        seconds = parse_duration(older_than) if older_than else project.retention_days * 86400.0
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    with SqliteStore.for_project(project) as store:
        deleted = store.prune(seconds)
        if vacuum:
            store.vacuum()
    parts = ", ".join(f"{n:,} {table}" for table, n in deleted.items())
    stderr.print(f"pruned {parts}", highlight=False)
