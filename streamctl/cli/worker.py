"""`streamctl worker --bus kafka://...`: process and deliver what ingest nodes put on Kafka."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import start_http_server

from streamctl.bus.kafka import BusLocation
from streamctl.cli.options import ProjectOption
from streamctl.cli.output import stderr
from streamctl.config.loader import load_project
from streamctl.core.errors import UsageError
from streamctl.core.heap import tune_garbage_collector
from streamctl.core.model import Project
from streamctl.delivery.bus_worker import consume
from streamctl.monitoring import metrics
from streamctl.store.backend import open_store

app = typer.Typer()


@app.command("worker")
def worker_command(
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            help="The Kafka bus the ingest nodes produce to: kafka://HOST:PORT[,...]/PREFIX "
            "(default: bus: of streamctl.yaml).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve this worker's Prometheus metrics (its delivery counters, the bus "
            "group's lag) at http://127.0.0.1:PORT/metrics; 0 picks a free port.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="The address --metrics-port listens on.")
    ] = "127.0.0.1",
    project: ProjectOption = Path("."),
) -> None:
    """Join the workers' consumer group on the bus: run the pipeline on each event, record
    the outcome in the store (PostgreSQL when workers are many), deliver, and commit the
    offsets only after recording. Stops cleanly on SIGTERM or Ctrl-C."""
    loaded = load_project(project)
    location = BusLocation.chosen(bus, loaded.bus)
    if location is None:
        msg = "say which bus to consume with --bus kafka://HOST:PORT/PREFIX (or bus: in streamctl.yaml)"
        raise UsageError(msg)
    tune_garbage_collector()
    if metrics_port is not None:
        serve_metrics(metrics_host, metrics_port)
    asyncio.run(_work(loaded, location))


def serve_metrics(host: str, port: int) -> None:
    """/metrics on a thread of its own (prometheus_client's server): a worker has no
    listener, and scraping must not wait for its event loop."""
    try:
        server, _ = start_http_server(port, addr=host, registry=metrics.REGISTRY)
    except OSError as exc:
        msg = f"cannot serve metrics on {host}:{port}: {exc.strerror}"
        raise UsageError(msg) from None
    stderr.print(
        f"streamctl: worker metrics at http://{host}:{server.server_port}/metrics", markup=False
    )


async def _work(project: Project, bus: BusLocation) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    store = open_store(project)
    try:
        stderr.print(
            f"streamctl: worker consuming {bus.prefix}.* as group {bus.group}", markup=False
        )
        await consume(project, store, bus, stopping)
    finally:
        store.close()
