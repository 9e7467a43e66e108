"""`streamctl run`: the ingest listener, and the pipeline and delivery in worker processes
(streamctl.server, streamctl.delivery.workers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from streamctl.bus.kafka import BusLocation
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
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Processes running the pipeline and delivery beside the listener (default: "
            "one per core this process may use; 0: all in the listener's process).",
        ),
    ] = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            help="Make this an ingest node: accepted events go to Kafka "
            "(kafka://HOST:PORT[,HOST:PORT...]/PREFIX; default: bus: in streamctl.yaml), "
            "`streamctl worker` processes them.",
        ),
    ] = None,
    no_console: Annotated[
        bool,
        typer.Option(
            "--no-console", help="Do not serve the web console at /console on the same port."
        ),
    ] = False,
) -> None:
    """Start the ingest listener (Segment-compatible HTTP API, webhooks) and delivery workers.

    The web console is at http://HOST:PORT/console (docs/console.md). Stops cleanly on
    SIGTERM or Ctrl-C: in-flight requests finish, accepted events are committed,
    delivery workers record what they were doing.
    """
    loaded = load_project(project)
    location = BusLocation.chosen(bus, loaded.bus)
    count = 0 if location is not None else default_workers() if workers is None else workers
    options = ServeOptions(
        host=host, port=port, watch=watch, console=not no_console, workers=count, bus=location
    )
    run(loaded, options)


def default_workers() -> int:
    """One worker per core this process may run on (its CPU affinity, e.g. a container's
    cpuset), else per core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
