"""`streamctl init [DIR]`: scaffold a working, commented project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamctl.cli.output import stderr
from streamctl.config.init_project import init_project

app = typer.Typer()


@app.command("init")
def init(
    directory: Annotated[
        Path,
        typer.Argument(help="Folder for the new project (created if missing).", file_okay=False),
    ] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Overwrite files that already exist.")
    ] = False,
) -> None:
    """Create a starter project: streamctl.yaml, a sync, a contract, a function, sample events.

    It validates as is and runs with no credentials:
    `streamctl validate --project DIR`, then `streamctl replay events.ndjson --project DIR`.
    """
    written = init_project(directory, force=force)
    for path in written:
        stderr.print(f"created {path}", markup=False, highlight=False)
    stderr.print(f"next: streamctl validate --project {directory}", markup=False, highlight=False)
