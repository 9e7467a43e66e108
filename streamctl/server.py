"""`streamctl run` assembled: the ingest listener, delivery and hot reload in one process.

    project = load_project(".")
    run(project, ServeOptions(port=8080, watch=True))     # blocks until SIGTERM/SIGINT

One event loop (uvloop) runs uvicorn serving `streamctl.sources.http_api` (and the web
console at /console, streamctl.console, unless `console=False`), the group
committer (its SQLite writes on its own thread), the delivery runtime, the file
watcher and the alert evaluator. Shutdown on SIGTERM or SIGINT, in this order:

1. uvicorn stops accepting connections and lets in-flight requests finish; those
   requests still reach the committer, so every 200 sent is a committed event;
2. kafka sources (streamctl.sources.kafka) finish the poll in hand, commit the
   offsets of what is stored and leave their consumer groups;
3. the committer commits what is pending and stops;
4. the delivery runtime stops its workers (it records what it was doing; what it
   had not recorded is sent again after a restart, nothing is half-recorded);
5. background tasks (watcher, alerts) are cancelled and the store is closed.

Hot reload (`watch`): a changed project file is validated with `check_project`
first; a valid project replaces the running one between two requests (a request
keeps the configuration it started with), an invalid one is reported on stderr and
the running configuration stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import uvicorn
from starlette.types import ASGIApp
from watchfiles import Change, awatch

from streamctl.config.loader import check_project
from streamctl.config.secrets import redact, redact_loaded
from streamctl.core.errors import StreamctlError
from streamctl.core.events import Event
from streamctl.core.heap import tune_garbage_collector
from streamctl.core.model import Project
from streamctl.core.rows import PartitionLag, RejectedInput
from streamctl.monitoring import metrics
from streamctl.monitoring.feed import FEED
from streamctl.monitoring.observe import DeliveryObserver
from streamctl.sources.group_commit import CommitLimits, GroupCommitter
from streamctl.sources.http_api import create_app
from streamctl.sources.http_protocol import ConnectionLimits, guarded_protocol
from streamctl.sources.kafka import KafkaSources, kafka_sources
from streamctl.store import Store
from streamctl.store.backend import open_store
from streamctl.store.queue import EventQueue, QueuedEvent

if TYPE_CHECKING:  # imported when delivery and the console start: `run` listens sooner
    from streamctl.bus.kafka import BusLocation, KafkaIngest
    from streamctl.console import Console
    from streamctl.delivery import Runtime

log = logging.getLogger(__name__)

# Files whose change can change the configuration (SPEC §2 layout).
WATCHED_SUFFIXES = (".yaml", ".yml", ".py")
WATCHED_FOLDERS = ("syncs", "contracts", "functions")


class DeliveryRuntime(Protocol):
    """The delivery engine as `run` drives it (streamctl.delivery)."""

    async def start(self) -> None:
        """Start claiming from the ingest queue and delivering."""

    async def stop(self) -> None:
        """Stop workers after recording what they were doing."""

    def notify(self) -> None:
        """Events were appended to the ingest queue: claim them now."""

    async def reload(self, project: Project) -> None:
        """Deliver for this project from now on (`watch`)."""


RuntimeFactory = Callable[[Project, Store], DeliveryRuntime]
BackgroundService = Callable[["Instance"], Awaitable[None]]
OnStarted = Callable[["Running"], None]


@dataclass(frozen=True)
class IngestFirst:
    """When the listener counts as saturated (either rate, measured over ~250 ms)."""

    events_per_second: float = 10_000.0
    requests_per_second: float = 2_000.0


@dataclass(frozen=True)
class ServeOptions:
    host: str | None = None  # default: the project's listen.host
    port: int | None = None  # default: the project's listen.port; 0 picks a free port
    watch: bool = False
    limits: CommitLimits = field(default_factory=CommitLimits)
    graceful_timeout: int = 30  # seconds for in-flight requests at shutdown
    # Connections, requests in flight, header size and read timeouts (http_protocol).
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    # Ingest first: above this many events/s or requests/s coming in, the delivery
    # processor yields to the listener (the durable queue absorbs the burst, delivery
    # catches up after it). None: never yield.
    ingest_first: IngestFirst | None = field(default_factory=IngestFirst)
    # Processes running the pipeline and delivery (streamctl.delivery.workers); 0: this
    # process runs them beside the listener.
    workers: int = 0
    # An ingest node (`--bus`): accepted events go to Kafka, workers process them
    # (streamctl.bus.kafka); nothing is processed here.
    bus: BusLocation | None = None
    # Extra tasks for the lifetime of the server (the alert evaluator is added by default).
    services: Sequence[BackgroundService] = field(default_factory=tuple)
    console: bool = True  # serve the web console at /console (streamctl.console)


class Instance:
    """The running listener: what the HTTP app asks of it (`http_api.Listener`)."""

    def __init__(
        self,
        project: Project,
        store: Store,
        limits: CommitLimits,
        *,
        err: TextIO = sys.stderr,
        watching: bool = False,
    ) -> None:
        self._project = project
        self.store = store
        self.err = err
        self.watching = watching  # the project may be reloaded (`watch`)
        self.runtime: DeliveryRuntime | None = None
        self.committer = GroupCommitter(store.queue, limits, on_committed=self._committed)
        self.reloads = 0
        store.health.on_change = self.say  # a full disk, and its end, in the log of `run`
        self.publisher: KafkaIngest | None = None  # an ingest node's bus (`run --bus`)

    @property
    def project(self) -> Project:
        return self._project

    async def submit(self, source: str, events: list[Event]) -> None:
        if self.publisher is not None:
            await self.publisher.publish(source, events)
            FEED.publish_received(source, events)
            return
        await self.committer.submit(source, events)

    async def record_rejected(self, rejected: Sequence[RejectedInput]) -> None:
        """A kafka source's messages that are no events (streamctl.sources.kafka)."""
        await self.committer.run_on_writer_thread(self.store.record_rejected, rejected)

    async def record_lag(self, source: str, lags: Sequence[PartitionLag]) -> None:
        await self.committer.run_on_writer_thread(self.store.record_lag, source, lags)

    def check_room(self) -> None:
        if self.publisher is not None:
            self.publisher.check_room()
            return
        self.committer.check_room()

    async def ready(self) -> str | None:
        if not self.committer.running:
            return "the ingest writer is not running"
        try:
            await self.committer.run_on_writer_thread(self.store.check_writable)
        except Exception as exc:  # the store's health names the cause best (a full disk)
            return f"the store cannot be written: {self.store.health.failure or exc}"
        return None

    def say(self, message: str) -> None:
        """A line for the log of `run` (stderr), secrets masked."""
        print(redact(message, self._project.secrets), file=self.err, flush=True)

    def _committed(self, source: str, events: Sequence[Event]) -> None:
        FEED.publish_received(source, events)
        if self.runtime is not None:
            self.runtime.notify()

    async def reload(self, project: Project) -> None:
        """Swap in a validated project: requests from now on use it, delivery follows."""
        old = self._project
        if project.store_location != old.store_location or project.listen != old.listen:
            self.say("streamctl: the store path and listen address change only on restart")
        if _kafka_settings(project) != _kafka_settings(old):
            self.say("streamctl: kafka sources change only on restart")
        if self.runtime is not None:
            await self.runtime.reload(project)
        self._project = project
        self.reloads += 1


def _kafka_settings(project: Project) -> list[tuple[str, object]]:
    return [(source.name, source.kafka) for source in kafka_sources(project)]


@dataclass(frozen=True)
class Running:
    """Handed to `on_started` once the socket is bound (tests, benchmarks, embedding)."""

    url: str  # http://HOST:PORT, with the port actually bound
    instance: Instance
    server: uvicorn.Server
    loop: asyncio.AbstractEventLoop

    def stop(self) -> None:
        """Begin the graceful shutdown, as SIGTERM would; callable from any thread."""
        self.loop.call_soon_threadsafe(setattr, self.server, "should_exit", True)


def run(
    project: Project,
    options: ServeOptions = ServeOptions(),
    *,
    runtime_factory: RuntimeFactory | None = None,
    err: TextIO = sys.stderr,
) -> None:
    """Serve until SIGTERM or SIGINT, on uvloop. Stopped by SIGINT (Ctrl-C), it raises
    KeyboardInterrupt once shut down cleanly, so the command exits 130 as interrupted
    commands do; SIGTERM (a service manager's stop) returns normally."""
    import uvloop

    tune_garbage_collector()  # measured: a third less CPU to parse a batch
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        stopped_by = runner.run(serve(project, options, runtime_factory=runtime_factory, err=err))
    if stopped_by == signal.SIGINT:
        raise KeyboardInterrupt


async def serve(
    project: Project,
    options: ServeOptions = ServeOptions(),
    *,
    runtime_factory: RuntimeFactory | None = None,
    err: TextIO = sys.stderr,
    on_started: OnStarted | None = None,
) -> int | None:
    """Serve until stopped; returns the signal that stopped it (None: `Running.stop`)."""
    with redacted_logs(err):
        return await _serve(project, options, runtime_factory, err, on_started)


async def _serve(
    project: Project,
    options: ServeOptions,
    runtime_factory: RuntimeFactory | None,
    err: TextIO,
    on_started: OnStarted | None,
) -> int | None:
    store = open_store(project, shared_queue=options.workers > 0)
    instance = Instance(project, store, options.limits, err=err, watching=options.watch)
    metrics.set_queue_depth(store.queue.depth)
    # Each request may hold a 500 KB body: the app answers 503 past this many in flight,
    # so memory is bounded (idle connections are bounded by the protocol).
    app: ASGIApp = create_app(instance, max_in_flight=options.connections.max_connections)
    console = None
    if options.console:
        console = _console(instance, options)
        app = console.mount(app)
    server = _Server(_uvicorn_config(app, project, options))
    _quiet_after_uvicorn_signals()
    tasks: list[asyncio.Task[None]] = []
    consumers: KafkaSources | None = None
    try:
        await instance.committer.start()
        if options.bus is not None:
            from streamctl.bus.kafka import KafkaIngest

            instance.publisher = KafkaIngest(options.bus)
            await instance.publisher.start()
        elif runtime_factory is not None:
            instance.runtime = runtime_factory(project, store)
        elif options.workers > 0:
            from streamctl.delivery.workers import DeliveryWorkers

            instance.runtime = DeliveryWorkers(project, options.workers, err=err, queue=store.queue)
        else:
            yielding = _ingest_first(instance.committer, options.ingest_first)
            instance.runtime = RunDelivery(project, store, yield_to_ingest=yielding)
        if instance.runtime is not None:
            await instance.runtime.start()
        consumers = KafkaSources.start(project, instance)
        services = [*options.services, run_alerts]
        if options.watch:
            services.append(watch_project)
        if console is not None:
            services.append(functools.partial(_roll_up_for, console))
        tasks = [asyncio.create_task(_guarded(service, instance)) for service in services]
        tasks.append(asyncio.create_task(_announce(server, instance, err, on_started)))
        try:
            await server.serve()
        except SystemExit:  # uvicorn's way of saying it could not bind
            config = server.config
            msg = f"cannot listen on {config.host}:{config.port} (the reason is logged above)"
            raise StreamctlError(msg) from None
    finally:
        if consumers is not None:  # first: what they stored is committed, before the writer stops
            await consumers.stop()
        await instance.committer.close()
        if instance.publisher is not None:
            await instance.publisher.close()
        if instance.runtime is not None:
            await instance.runtime.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if console is not None:
            console.source.close()
        store.close()
    return server.stopped_by


LOGGERS = ("streamctl", "uvicorn")  # every record of these reaches `err`, redacted


class RedactingFormatter(logging.Formatter):
    """Log lines with the secrets of every loaded project and every credential a URL or
    header carries masked (streamctl.config.secrets), tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_loaded(super().format(record))


@contextlib.contextmanager
def redacted_logs(err: TextIO) -> Iterator[None]:
    """While serving, streamctl's and uvicorn's warnings and errors go to `err` through
    `RedactingFormatter` (uvicorn's own logging setup is off: it would print them raw)."""
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(RedactingFormatter("streamctl: %(levelname)s: %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved, strict=True):
            logger.handlers, logger.propagate = handlers, propagate


class _Server(uvicorn.Server):
    stopped_by: int | None = None  # the first signal received (SIGINT: Ctrl-C)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        # Live feed responses never end by themselves: end them first, or uvicorn
        # would wait for them until its graceful timeout.
        FEED.end_all()
        await super().shutdown(sockets)


def _console(instance: Instance, options: ServeOptions) -> Console:
    """The web console on the listener's port, reading the project as reloads leave it."""
    from streamctl.console import Console, ConsoleAccess, ConsoleSource  # only when served

    project = instance.project
    host = options.host or project.listen.host
    source = ConsoleSource(lambda: instance.project, live=True)
    access = ConsoleAccess.for_project(project, host)
    if access.bound_beyond_loopback and access.token is None:
        instance.say(
            f"streamctl: listening on {host}: the console at /console answers loopback clients"
            " only until a console token is set (console.token or STREAMCTL_CONSOLE_TOKEN)"
        )
    return Console(source, access)


async def _roll_up_for(console: Console, _instance: Instance) -> None:
    from streamctl.console import keep_rolling_up

    await keep_rolling_up(console)


def _uvicorn_config(app: ASGIApp, project: Project, options: ServeOptions) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=options.host or project.listen.host,
        port=project.listen.port if options.port is None else options.port,
        loop="none",  # ours: run() already chose uvloop
        # httptools with timeouts, a header limit, idle-connection eviction and JSON
        # protocol errors: streamctl.sources.http_protocol.
        http=guarded_protocol(options.connections),
        ws="none",  # no WebSocket endpoints: an Upgrade request is plain HTTP
        lifespan="off",
        access_log=False,
        log_config=None,  # logged through `redacted_logs`
        log_level="warning",
        proxy_headers=False,  # no X-Forwarded-* rewriting on the hot path
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=options.graceful_timeout,
        backlog=4096,
        # Not limit_concurrency: it counts idle connections too, and once they pile up
        # it answers every request 503, /healthz included.
        limit_concurrency=None,
    )


def _quiet_after_uvicorn_signals() -> None:
    """uvicorn re-raises the signal that stopped it once it has shut down; with the
    default SIGTERM handler that would kill the process before the committer flushes
    and delivery stops. Handlers that ignore it let `serve` finish its shutdown."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)


async def _announce(
    server: uvicorn.Server, instance: Instance, err: TextIO, on_started: OnStarted | None
) -> None:
    """Tell people (and tests) the address once bound: `listening on http://HOST:PORT`."""
    while not server.started:
        await asyncio.sleep(0.01)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    url = f"http://{host}:{port}"
    print(f"streamctl: listening on {url}", file=err, flush=True)
    if on_started is not None:
        on_started(Running(url, instance, server, asyncio.get_running_loop()))


async def _guarded(service: BackgroundService, instance: Instance) -> None:
    """A background service that fails is reported, never takes the listener down."""
    try:
        await service(instance)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        instance.say(f"streamctl: {getattr(service, '__name__', service)} stopped: {exc}")


# -- default services ----------------------------------------------------------------------


class RunDelivery:
    """The delivery runtime of streamctl.delivery as `run` drives it.

    It processes the ingest queue the listener appends to (woken by `notify` after
    each commit), reports to `/metrics` and the live feed (its observer,
    streamctl.monitoring.observe.DeliveryObserver), and follows reloads: the running
    runtime stops (in-flight sends finish, every outcome is written), the queue is
    rewound to its oldest unprocessed event, and a runtime for the new project starts
    and resumes every open delivery from the store.

    `yield_to_ingest` says when the listener is saturated: the processor then claims
    nothing (and polls again shortly), leaving the CPU to ingest. Events wait safely
    in the queue; delivery catches up when the burst ends.
    """

    def __init__(
        self, project: Project, store: Store, *, yield_to_ingest: Callable[[], bool] | None = None
    ) -> None:
        self.store = store
        self.project = project
        self.runtime: Runtime | None = None
        self.observer = DeliveryObserver()  # outlives reloads: attempts of old deliveries too
        self._saturated = yield_to_ingest
        queue = store.queue
        self.queue = queue if yield_to_ingest is None else IngestFirstQueue(queue, yield_to_ingest)

    async def start(self) -> None:
        from streamctl.delivery import Runtime

        runtime = Runtime(self.project, self.store, retention=True, observer=self.observer)
        await runtime.start()
        runtime.process_queue(self.queue)
        self.runtime = runtime

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None

    def notify(self) -> None:
        """The committer appended events: the processor claims them now (unless ingest is
        saturated: it would claim nothing, and waking it after every commit costs CPU)."""
        if self.runtime is not None and (self._saturated is None or not self._saturated()):
            self.runtime.notify()

    async def reload(self, project: Project) -> None:
        await self.stop()
        # Events the stopped processor claimed but did not record are still in the queue:
        # the next processor claims them again.
        self.store.queue.rewind()
        self.project = project
        await self.start()


class IngestFirstQueue:
    """The ingest queue as the delivery processor sees it: no claims while ingest is
    saturated; every other operation is the wrapped queue's."""

    def __init__(self, queue: EventQueue, saturated: Callable[[], bool]) -> None:
        self._queue = queue
        self._saturated = saturated

    @property
    def max_depth(self) -> int:
        return self._queue.max_depth

    def claim(self, limit: int) -> list[QueuedEvent]:
        if self._saturated():
            return []
        return self._queue.claim(limit)

    def append(self, source: str, events: Sequence[Event]) -> None:
        self._queue.append(source, events)

    def append_many(self, groups: Sequence[tuple[str, Sequence[Event]]]) -> None:
        self._queue.append_many(groups)

    def ack(self, ids: Sequence[int]) -> None:
        self._queue.ack(ids)

    def rewind(self) -> None:
        self._queue.rewind()

    def depth(self) -> int:
        return self._queue.depth()


def _ingest_first(
    committer: GroupCommitter, threshold: IngestFirst | None
) -> Callable[[], bool] | None:
    """Saturated: over a threshold, and the queue less than half full (past that,
    delivery must go on or the listener would soon refuse everything)."""
    if threshold is None:
        return None
    queue = committer.queue
    half = queue.max_depth // 2
    rate = committer.ingest_rate

    def saturated() -> bool:
        busy = (
            rate.events_per_second > threshold.events_per_second
            or rate.requests_per_second > threshold.requests_per_second
        )
        return busy and queue.depth() < half

    return saturated


async def run_alerts(instance: Instance) -> None:
    """The alert evaluator of streamctl.monitoring.alerts, every `alerts.interval`.

    Reads windowed counts from the store (`StoreMetrics`) and notifies channels in its
    own tasks, so neither a slow query nor a dead channel holds delivery back. Rules
    and channels are those of the running configuration: with `watch`, a reload
    changes them from the next evaluation.
    """
    if not instance.project.alerts.rules and not instance.watching:
        return
    import httpx

    from streamctl.monitoring.alerts import AlertEvaluator
    from streamctl.store.backend import open_alert_state
    from streamctl.store.metrics import StoreMetrics

    readings = StoreMetrics.for_project(instance.project)
    state = open_alert_state(instance.project)
    try:
        async with httpx.AsyncClient() as client:
            evaluator = AlertEvaluator(instance.project, readings, client, state=state)
            await evaluator.run_forever(configuration=lambda: instance.project)
    finally:
        readings.close()
        state.close()


async def watch_project(instance: Instance) -> None:
    """Reload the project when one of its files changes; keep it running when invalid."""
    root = instance.project.root
    async for changes in awatch(root, watch_filter=_is_project_file(root), debounce=200):
        changed = ", ".join(sorted({str(Path(path).relative_to(root)) for _, path in changes}))
        project, problems = await asyncio.to_thread(check_project, root)
        errors = [p for p in problems if p.severity == "error"]
        for problem in problems:
            instance.say(str(problem))
        if project is None or errors:
            instance.say(
                f"streamctl: {changed} changed; not reloaded, {len(errors)} error(s): "
                "the running configuration stays"
            )
            continue
        await instance.reload(project)
        instance.say(f"streamctl: {changed} changed; configuration reloaded")


def _is_project_file(root: Path) -> Callable[[Change, str], bool]:
    def wanted(_change: Change, path: str) -> bool:
        relative = Path(path).relative_to(root) if path.startswith(str(root)) else Path(path)
        if not relative.name.endswith(WATCHED_SUFFIXES):
            return False
        parts = relative.parts
        return parts == ("streamctl.yaml",) or (len(parts) > 1 and parts[0] in WATCHED_FOLDERS)

    return wanted
