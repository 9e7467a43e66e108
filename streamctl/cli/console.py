"""`streamctl console` (the web console from the store alone) and `streamctl report --html`.

The console's modules (Jinja2 and the page code) are imported by these commands only:
they added 20-270 ms (measured on a loaded machine) to the start of every command."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer

from streamctl.cli.errors import parse_since
from streamctl.cli.options import ProjectOption, since_flag
from streamctl.cli.output import stderr
from streamctl.config.loader import load_project
from streamctl.core.errors import UsageError
from streamctl.store.backend import open_console_store, store_exists

app = typer.Typer()

DEFAULT_PORT = 8090


@app.command("console")
def console(
    project: ProjectOption = Path("."),
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Interface to serve on. Beyond loopback a console token is required"
            " (console.token or STREAMCTL_CONSOLE_TOKEN).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to serve on (0 picks a free one).")
    ] = DEFAULT_PORT,
) -> None:
    """Serve the web console from the store alone, without ingesting or delivering.

    For a store other nodes write (`streamctl run` elsewhere on the same SQLite file, or
    on the same PostgreSQL database): its Debugger polls the store, and "retry" requeues
    deliveries for a running node to send.
    """
    from streamctl.console import Console, ConsoleAccess, ConsoleSource, keep_rolling_up

    loaded = load_project(project)
    access = ConsoleAccess.for_project(loaded, host)
    if access.bound_beyond_loopback and access.token is None:
        msg = (
            f"--host {host} is beyond loopback: set a console token first"
            " (console.token in streamctl.yaml, or STREAMCTL_CONSOLE_TOKEN)"
        )
        raise UsageError(msg)
    open_console_store(
        loaded
    ).close()  # create and migrate before serving: a clear error if it cannot
    served = Console(ConsoleSource(lambda: loaded, live=False), access)

    async def lifespan(_app: object) -> AsyncIterator[None]:
        task = asyncio.create_task(keep_rolling_up(served))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        served.source.close()

    served.app.router.lifespan_context = contextlib.asynccontextmanager(lifespan)
    import uvicorn

    config = uvicorn.Config(
        served,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,  # open debugger streams never end by themselves
    )
    asyncio.run(_serve(uvicorn.Server(config)))


async def _serve(server: Any) -> None:
    """Serve, saying where once bound (`--port 0` picks the port)."""
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        stderr.print(f"streamctl: console at http://{host}:{port}/console", highlight=False)
    await serving


@app.command("report")
def report(
    html: Annotated[
        Path, typer.Option("--html", help="Write the report to this HTML file.", dir_okay=False)
    ],
    project: ProjectOption = Path("."),
    since: Annotated[
        str, since_flag("The window: a duration back from now (1h, 24h, 7d) or an ISO time.")
    ] = "24h",
) -> None:
    """The Overview and Errors as one self-contained HTML file (charts included) to attach
    to an incident ticket."""
    from streamctl.console.report import render_report

    loaded = load_project(project)
    window_start = parse_since(since) or time.time() - 86400
    if not store_exists(loaded):
        msg = f"no store at {loaded.store_file}: nothing has been received yet"
        raise UsageError(msg)
    with contextlib.closing(open_console_store(loaded)) as store:
        text = render_report(loaded, store, window_start)
    html.write_text(text)
    stderr.print(f"wrote {html} ({len(text.encode()) // 1024} KiB)", highlight=False)
