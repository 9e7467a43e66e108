"""The runtime shared by `streamctl run` and `streamctl replay`: process, record, deliver.

    store = open_store(project)
    async with Runtime(project, store) as runtime:        # start(): lanes resume open deliveries
        await runtime.submit("web", events)               # replay: events already normalised
        runtime.process_queue(store.queue)                # run: a task claiming from the EventQueue
        await runtime.drain()                             # everything delivered or archived
    # __aexit__ = stop(): in-flight sends finish (or resume next start), outcomes written

`submit(source, events, ack=ids)` is the processor step: dedupe on (source,
messageId) over 24 h, run the Pipeline, then in ONE store transaction record the
events, every Decision, contract violation and function error, the PENDING
deliveries, and ack the queue ids; then hand the deliveries to the engine. A crash
before that commit leaves the events in the queue (processed again, nothing lost);
after it, the deliveries are in the store and the next start sends them.

The pipeline runs on its own thread and SQLite on the store thread (one writer, in
submission order), so the event loop stays free for the lanes' HTTP traffic.
Pass `client` to inject an `httpx.AsyncClient` (tests use `MockTransport`s or
servers on 127.0.0.1), `destinations` to inject Destination objects, `syncs` to
run only some syncs (`--sync`), `observer` to be told every decision and attempt as
it happens (streamctl.delivery.observer; `streamctl run` reports to /metrics and the
live feed that way). A queue producer calls `notify()` after appending, so the
processor claims at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from streamctl.core.errors import StoreUnavailable, UsageError
from streamctl.core.events import Event
from streamctl.core.model import Project, SyncConfig
from streamctl.core.rows import DuplicateRow, EncodedResults, encode_results
from streamctl.delivery.engine import DEFAULT_LANE_CAPACITY, DeliveryEngine
from streamctl.delivery.observer import RuntimeObserver
from streamctl.delivery.transport import LeanTransport
from streamctl.destinations import registry
from streamctl.destinations.base import Destination
from streamctl.pipeline.process import Pipeline
from streamctl.store.backend import AnyStore
from streamctl.store.queue import EventQueue

log = logging.getLogger(__name__)

CLAIM_BATCH = 5_000
PACE_READY = 4_000
QUEUE_POLL = 0.02  # seconds between claims when the queue is empty
RETENTION_EVERY = 3600.0  # seconds between retention passes in `streamctl run`
STORE_RETRY_MIN = 0.2  # seconds before trying an unreachable store again, doubling
STORE_RETRY_MAX = 5.0


@dataclass
class SubmitSummary:
    """What one `submit` decided: decision statuses per sync, and duplicates skipped."""

    events: int = 0
    duplicates: int = 0
    by_sync: dict[str, Counter[str]] = field(default_factory=dict)


def select_syncs(project: Project, names: Sequence[str] = ()) -> tuple[SyncConfig, ...]:
    """The project's syncs, or those named (`--sync`), refusing unknown names."""
    if not names:
        return project.syncs
    known = {s.name for s in project.syncs}
    unknown = [n for n in names if n not in known]
    if unknown:
        msg = f"unknown sync {unknown[0]!r}; known: {', '.join(sorted(known)) or 'none'}"
        raise UsageError(msg)
    return tuple(s for s in project.syncs if s.name in set(names))


def create_destinations(project: Project, syncs: Sequence[SyncConfig]) -> dict[str, Destination]:
    """The runtime Destination of every destination these syncs deliver to."""
    return {
        name: registry.create(project.destinations[name])
        for name in dict.fromkeys(s.destination for s in syncs)
    }


def default_client() -> httpx.AsyncClient:
    """Pooled keep-alive connections, shared by every lane: on LeanTransport (under a
    third of httpcore's CPU per request), limits per origin; on httpx's own transport
    when the environment names a proxy, since LeanTransport does not speak to proxies."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=128)
    proxies = urllib.request.getproxies_environment()  # HTTP(S)_PROXY, ALL_PROXY, any case
    if proxies.keys() & {"http", "https", "all"}:
        return DeliveryClient(limits=limits, timeout=30.0)
    return DeliveryClient(transport=LeanTransport(limits=limits), timeout=30.0)


class DeliveryClient(httpx.AsyncClient):
    """httpx's client, minus a cookie jar and a reference cycle per response.

    httpx binds every response's stream to the response itself, a cycle that keeps
    the response, its request and the request's body (a 100-event batch: ~27 KB) alive
    until a full garbage collection: replaying 1,000,000 events, the process grew by
    about 170 MB. A response read whole has no use for that stream: it is replaced.

    Deliveries keep no cookies: what one API response sets is never sent with later
    requests, to that API or any other (Segment's destinations, on fetch, keep none
    either). Reading every response's Set-Cookie through http.cookiejar cost about a
    quarter of the CPU of a request."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cookies = _NoCookies()

    async def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        response = await super().send(request, stream=stream, **kwargs)
        if not stream:
            response.stream = httpx.ByteStream(response.content)
        return response


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing (`DeliveryClient`)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class Runtime:
    """The processor and the delivery engine of one project over one store."""

    def __init__(
        self,
        project: Project,
        store: AnyStore,
        client: httpx.AsyncClient | None = None,
        *,
        syncs: Sequence[str] = (),
        destinations: Mapping[str, Destination] | None = None,
        pipeline: Pipeline | None = None,
        lane_capacity: int = DEFAULT_LANE_CAPACITY,
        retention: bool = False,
        observer: RuntimeObserver | None = None,
    ) -> None:
        self.project = project
        self.store = store
        self.syncs = select_syncs(project, syncs)
        self.sync_names = [s.name for s in self.syncs]
        self._narrowed = bool(syncs)
        self._own_client = client is None
        self.client = client or default_client()
        self._own_destinations = destinations is None
        self.destinations = dict(destinations or create_destinations(project, self.syncs))
        self.pipeline = pipeline or Pipeline(project, self.destinations)
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="streamctl-store")
        self._pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="streamctl-pipeline")
        self.engine = DeliveryEngine(
            store,
            self.client,
            self.destinations,
            self.syncs,
            store_thread=self._store_thread,
            lane_capacity=lane_capacity,
            observer=observer,
        )
        self.observer = self.engine.observer  # guarded: a failing report never stops delivery
        self._sync_destination = {s.name: s.destination for s in project.syncs}
        self._retention = retention
        self._tasks: list[asyncio.Task[None]] = []
        self._appended = asyncio.Event()
        self.processed = SubmitSummary(by_sync={name: Counter() for name in self.sync_names})

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every lane; each reads its open deliveries back from the store first."""
        await self.engine.start()
        if self._retention:
            self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))

    async def drain(self, timeout: float | None = None) -> bool:
        """Until the queue (when processed here) is empty and every delivery is delivered or
        archived; False when `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue is not None and self._queue.depth() > 0:
            if deadline is not None and time.monotonic() > deadline:
                return False
            await asyncio.sleep(QUEUE_POLL)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await self.engine.wait_idle(remaining)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop processing and sending, write every outcome, release connections and files."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.engine.stop(grace)
        self._store_thread.shutdown(wait=True)
        self._pipeline_thread.shutdown(wait=True)
        if self._own_destinations:
            for destination in self.destinations.values():
                with contextlib.suppress(Exception):
                    await destination.aclose()
        if self._own_client:
            await self.client.aclose()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- processing -----------------------------------------------------------------------------

    _queue: EventQueue | None = None

    async def submit(
        self, source: str, events: Sequence[Event], *, ack: Sequence[int] = (), pace: bool = True
    ) -> SubmitSummary:
        """Process normalised events of `source`: dedupe, pipeline, record, enqueue deliveries.

        With `pace`, wait first while a lane has a large backlog ready to send, so a
        fast reader does not outrun delivery (lanes that spilled to the store do not
        count: a stuck destination never holds the others back).
        """
        if pace:
            await self.wait_for_room()
        message_ids = [str(e.get("messageId", "")) for e in events]
        seen = await self._in_store(self.store.seen_message_ids, source, message_ids)
        fresh, duplicates = _split_duplicates(source, events, message_ids, seen)
        encoded = await self._in_pipeline(source, fresh)
        return await self._record(encoded, duplicates, ack)

    async def submit_encoded(self, encoded: EncodedResults, *, pace: bool = True) -> SubmitSummary:
        """`submit` for events the pipeline already ran on (replay's worker processes):
        duplicates are found now and recorded as such, their decisions discarded."""
        if pace:
            await self.wait_for_room()
        seen = await self._in_store(
            self.store.seen_message_ids, encoded.source, encoded.message_ids
        )
        fresh, duplicates = encoded.split_duplicates(seen)
        return await self._record(fresh, duplicates, ())

    async def _record(
        self, encoded: EncodedResults, duplicates: list[DuplicateRow], ack: Sequence[int]
    ) -> SubmitSummary:
        recorded = await self._in_store(
            functools.partial(
                self.store.record_encoded,
                encoded,
                destinations=self._sync_destination,
                duplicates=duplicates,
                ack=ack,
            )
        )
        self.engine.offer(recorded.pending)
        return self._count(encoded, len(duplicates))

    async def wait_for_room(self) -> None:
        """While a lane has more than `PACE_READY` deliveries ready to send (a few
        seconds of work at full speed), wait: memory stays flat whatever the input."""
        limit = min(self.engine.lane_capacity // 2, PACE_READY)
        while self.engine.ready_backlog() > limit:
            if self.engine.failure is not None:
                raise self.engine.failure
            await asyncio.sleep(0.005)

    def process_queue(self, queue: EventQueue, *, claim: int = CLAIM_BATCH) -> asyncio.Task[None]:
        """Start the processor over `queue` (`streamctl run`); stopped by `stop()`."""
        self._queue = queue
        task = asyncio.create_task(self._process_queue(queue, claim), name="processor")
        self._tasks.append(task)
        return task

    def notify(self) -> None:
        """Events were appended to the queue: claim now, not at the next poll.
        Call it on the event loop's thread (the group committer does, after a commit)."""
        self._appended.set()

    async def _process_queue(self, queue: EventQueue, claim: int) -> None:
        """Claim, process, record and ack until stopped. While the store is unreachable
        (PostgreSQL down or restarting) it waits and tries again; what it had claimed
        and not recorded is handed out again (`rewind`) once the store answers."""
        pause = STORE_RETRY_MIN
        while True:
            try:
                await self._process_claims(queue, claim)
            except StoreUnavailable as exc:
                if pause == STORE_RETRY_MIN:
                    log.warning("processing waits for the store: %s", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, STORE_RETRY_MAX)
                rewind = getattr(queue, "rewind", None)
                if rewind is not None:
                    with contextlib.suppress(StoreUnavailable):
                        await self._in_store(rewind)
                        pause = STORE_RETRY_MIN

    async def _process_claims(self, queue: EventQueue, claim: int) -> None:
        forget = getattr(queue, "forget", None)  # the SQLite queue is acked by record_results
        appended = self._appended
        while True:
            appended.clear()  # before the claim: an append during it wakes the next wait
            batch = await self._in_store(queue.claim, claim)
            if not batch:
                # The poll stays for producers that do not notify (another process).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(appended.wait(), QUEUE_POLL)
                continue
            by_source: dict[str, tuple[list[Event], list[int]]] = {}
            for item in batch:
                events, ids = by_source.setdefault(item.source, ([], []))
                events.append(item.event)
                if not ids or ids[-1] != item.id:  # the events of one append share its id
                    ids.append(item.id)
            for source, (events, ids) in by_source.items():
                if forget is not None:
                    await self.submit(source, events, ack=ids, pace=False)
                    forget(len(events))
                else:
                    await self.submit(source, events, pace=False)
                    await self._in_store(queue.ack, ids)

    async def _in_store(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, fn, *args)

    async def _in_pipeline(self, source: str, events: list[Event]) -> EncodedResults:
        narrowed = self.sync_names if self._narrowed else None

        def run() -> EncodedResults:
            results = self.pipeline.process(source, events, narrowed) if events else []
            self.observer.on_decisions(results)
            return encode_results(source, results)

        return await asyncio.get_running_loop().run_in_executor(self._pipeline_thread, run)

    def _count(self, encoded: EncodedResults, duplicates: int) -> SubmitSummary:
        pairs = Counter((row[2], row[4]) for row in encoded.decisions)  # counted in C
        return self.count_decisions(pairs, len(encoded.events), duplicates)

    def count_decisions(
        self, pairs: Counter[tuple[str, str]], events: int, duplicates: int
    ) -> SubmitSummary:
        """Add decisions made elsewhere (replay's workers) to `processed`."""
        summary = SubmitSummary(events, duplicates, {})
        total = self.processed
        total.events += events
        total.duplicates += duplicates
        for (sync, status), n in pairs.items():
            summary.by_sync.setdefault(sync, Counter())[status] += n
            total.by_sync.setdefault(sync, Counter())[status] += n
        return summary

    async def next_delivery_id(self) -> int:
        """The id the next recorded delivery will get (replay's workers write them)."""

        return int(await self._in_store(self.store.next_delivery_id))

    async def _retention_loop(self) -> None:
        older_than = self.project.retention_days * 86400.0
        while True:
            with contextlib.suppress(StoreUnavailable):  # the next pass catches up
                await self._in_store(self.store.prune, older_than)
            await asyncio.sleep(RETENTION_EVERY)


def _split_duplicates(
    source: str, events: Sequence[Event], message_ids: list[str], seen: set[str]
) -> tuple[list[Event], list[DuplicateRow]]:
    fresh: list[Event] = []
    duplicates: list[DuplicateRow] = []
    this_batch: set[str] = set()
    for event, message_id in zip(events, message_ids, strict=True):
        if message_id in seen or message_id in this_batch:
            duplicates.append((source, message_id, orjson.dumps(event).decode()))
        else:
            this_batch.add(message_id)
            fresh.append(event)
    return fresh, duplicates
