"""`streamctl run`: the ingest listener and delivery workers, in one process (streamctl.server)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamctl.cli.options import ProjectOption
from streamctl.config.loader import load_project
from streamctl.server import ServeOptions, run

app = typer.Typer()


@app.command("run")
def run_command(
    project: ProjectOption = Path("."),
    host: Annotated[
        str | None, typer.Option("--host", help="Interface to listen on (default: listen.host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="Port to listen on, 0-65535 (default: listen.port; 0 picks a free one).",
            min=0,
            max=65535,
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Reload when a project file changes (validated first; an invalid change keeps "
            "the running configuration).",
        ),
    ] = False,
) -> None:
    """Start the ingest listener (Segment-compatible HTTP API, webhooks) and delivery workers.

    Stops cleanly on SIGTERM or Ctrl-C: in-flight requests finish, accepted events are
    committed, delivery workers record what they were doing.
    """
    loaded = load_project(project)
    run(loaded, ServeOptions(host=host, port=port, watch=watch))
