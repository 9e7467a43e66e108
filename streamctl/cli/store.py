"""`streamctl store migrate` and `streamctl store prune`: the store's upkeep."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from streamctl.cli.options import ProjectOption
from streamctl.cli.output import stderr
from streamctl.config.loader import load_project
from streamctl.config.secrets import redact
from streamctl.core.errors import UsageError
from streamctl.core.units import parse_duration
from streamctl.store.backend import migrate_store, open_store

app = typer.Typer(help="Maintenance of the store (SQLite or PostgreSQL).", no_args_is_help=True)


@app.command("migrate")
def migrate(project_dir: ProjectOption = Path(".")) -> None:
    """Bring the store's schema to this streamctl's version (creating it if new).

    Every command that writes does this on start; run it alone to upgrade a shared
    PostgreSQL store before the nodes restart. Safe while other processes start:
    they wait for each other (an advisory lock on PostgreSQL, the write lock on SQLite).
    """
    project = load_project(project_dir)
    before, after = migrate_store(project)
    where = redact(project.store_location, project.secrets)
    if before == after:
        stderr.print(f"{where}: schema version {after}, up to date", highlight=False)
    else:
        stderr.print(f"{where}: migrated from schema version {before} to {after}", highlight=False)


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
    with closing(open_store(project)) as store:
        deleted = store.prune(seconds)
        if vacuum:
            store.vacuum()
    parts = ", ".join(f"{n:,} {table}" for table, n in deleted.items())
    stderr.print(f"pruned {parts}", highlight=False)
