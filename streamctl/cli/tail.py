"""`streamctl tail`: the live feed of a running `streamctl run`, as NDJSON on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from streamctl.cli.options import ProjectOption, SourceOption, SyncOption
from streamctl.config.loader import load_project
from streamctl.core.errors import UsageError
from streamctl.monitoring.feed import follow

app = typer.Typer()


@app.command("tail")
def tail(
    project: ProjectOption = Path("."),
    source: SourceOption = None,
    sync: SyncOption = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="The running instance (default: http://listen.host:listen.port)."
        ),
    ] = None,
) -> None:
    """Follow events as they arrive and their stage outcomes as they happen, one JSON per line.

    Lines are {"kind": "event", "source", "message_id", "event"} when an event is stored,
    {"kind": "outcome", "sync", "message_id", "status", "stage", ...} for each outcome,
    and {"kind": "dropped", "count"} when this reader fell behind. Stops on Ctrl-C.
    """
    loaded = load_project(project)
    sources, syncs = source or [], sync or []
    unknown = [s for s in sources if s not in loaded.sources]
    unknown += [s for s in syncs if s not in {x.name for x in loaded.syncs}]
    if unknown:
        msg = f"unknown source or sync: {', '.join(unknown)}"
        raise UsageError(msg)
    target = url or f"http://{loaded.listen.host}:{loaded.listen.port}"
    out = sys.stdout.buffer
    for line in follow(target, sources, syncs):  # until Ctrl-C: exit 130, as `run` and `top`
        out.write(line + b"\n")
        out.flush()
