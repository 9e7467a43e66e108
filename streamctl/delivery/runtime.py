"""The runtime shared by `streamctl run` and `streamctl replay`: process, record, deliver.

    store = open_store(project)                           # SQLite or PostgreSQL
    async with Runtime(project, store) as runtime:        # start(): lanes resume open deliveries
        await runtime.submit("web", events)               # replay: events already normalised
        runtime.process_queue(store.queue)                # run: a task claiming from the EventQueue
        await runtime.drain()                             # everything delivered or archived
    # __aexit__ = stop(): in-flight sends finish (or resume next start), outcomes written

The one way into the engine: `submit` (events), `process_queue` (the ingest queue)
and `deliver` (deliveries replay's worker processes recorded); `delivery_counts`
and `waiting` report on it.

`submit(source, events, ack=ids)` is the processor step: dedupe on (source,
messageId) over 24 h, run the Pipeline, then in ONE store transaction record the
events, every Decision, contract violation and function error, the PENDING
deliveries, and ack the queue ids (`Store.record_and_ack`); then hand the deliveries to the engine. A crash
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
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from streamctl.core.errors import StoreError, StoreUnavailable, UsageError
from streamctl.core.events import Event
from streamctl.core.model import Project, SyncConfig
from streamctl.core.rows import (
    DuplicateRow,
    EncodedResults,
    PendingDelivery,
    RecordedResults,
    duplicates_among,
    encode_results,
)
from streamctl.delivery.client import default_client
from streamctl.delivery.engine import DEFAULT_LANE_CAPACITY, DeliveryEngine
from streamctl.delivery.observer import RuntimeObserver
from streamctl.destinations import registry
from streamctl.destinations.base import Destination
from streamctl.pipeline.process import Pipeline
from streamctl.store import Store
from streamctl.store.queue import EventQueue

CLAIM_BATCH = 5_000
PACE_READY = 4_000
QUEUE_POLL = 0.02  # seconds between claims when the queue is empty
RETENTION_EVERY = 3600.0  # seconds between retention passes in `streamctl run`
STORE_RETRY_MIN = 0.2  # seconds before trying an unreachable store again, doubling
STORE_RETRY_MAX = 5.0

log = logging.getLogger(__name__)


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


class Runtime:
    """The processor and the delivery engine of one project over one store."""

    def __init__(
        self,
        project: Project,
        store: Store,
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
        `ack`: entries of `store.queue` these events came from, acknowledged in the
        transaction that records their outcomes (`Store.record_and_ack`).

        With `pace`, wait first while a lane has a large backlog ready to send, so a
        fast reader does not outrun delivery (lanes that spilled to the store do not
        count: a stuck destination never holds the others back).
        """
        if pace:
            await self.wait_for_room()
        message_ids = [str(e.get("messageId", "")) for e in events]
        seen = await self._in_store(self.store.seen_message_ids, source, message_ids)
        # Duplicates are found before the pipeline: they are recorded, never processed.
        fresh, duplicates = _without_duplicates(source, events, message_ids, seen)
        encoded = await self._in_pipeline(source, fresh)
        recorded: RecordedResults = await self._in_store(self._record, encoded, duplicates, ack)
        self.engine.offer(recorded.pending)
        return self._count(encoded, len(duplicates))

    def _record(
        self, encoded: EncodedResults, duplicates: list[DuplicateRow], ack: Sequence[int]
    ) -> RecordedResults:
        """On the store thread: the outcomes, and the queue entries they came from."""
        destinations = self._sync_destination
        if ack:
            return self.store.record_and_ack(
                encoded, ack, destinations=destinations, duplicates=duplicates
            )
        return self.store.record_encoded(encoded, destinations=destinations, duplicates=duplicates)

    def deliver(self, pending: Sequence[PendingDelivery]) -> None:
        """Hand deliveries recorded elsewhere (replay's worker processes) to the lanes,
        in ascending ids."""
        self.engine.offer(pending)

    async def wait_for_room(self) -> None:
        """While a lane has more than `PACE_READY` deliveries ready to send (a few
        seconds of work at full speed), wait: memory stays flat whatever the input."""
        limit = min(self.engine.lane_capacity // 2, PACE_READY)
        while self.engine.ready_backlog() > limit:
            if self.engine.failure is not None:
                raise self.engine.failure
            await asyncio.sleep(0.005)

    def process_queue(self, queue: EventQueue, *, claim: int = CLAIM_BATCH) -> asyncio.Task[None]:
        """Start the processor over `queue` (`streamctl run`); stopped by `stop()`. `queue`
        is `store.queue`, or a view of it that claims differently (the listener's
        `IngestFirstQueue`): entries are acknowledged by `store.record_and_ack`."""
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
        (PostgreSQL down or restarting) or cannot be written (a full disk: its `health`
        says so in the log and /readyz) it waits and tries again; what it had claimed and
        not recorded is handed out again (`rewind`). Any other failure is logged and
        retried the same way: processing never stops unseen."""
        pause = STORE_RETRY_MIN
        while True:
            try:
                await self._process_claims(queue, claim)
            except Exception as exc:
                if isinstance(exc, StoreUnavailable):
                    if pause == STORE_RETRY_MIN:
                        log.warning("processing waits for the store: %s", exc)
                elif not isinstance(exc, StoreError):
                    log.exception("event processing failed; trying again in %.2f s", pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, STORE_RETRY_MAX)
                with contextlib.suppress(StoreError):
                    await self._in_store(queue.rewind)
                    if isinstance(exc, StoreUnavailable):  # it answers again
                        pause = STORE_RETRY_MIN

    async def _process_claims(self, queue: EventQueue, claim: int) -> None:
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
                await self.submit(source, events, ack=ids, pace=False)

    async def _in_store(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, fn, *args)

    async def _in_pipeline(self, source: str, events: Sequence[Event]) -> EncodedResults:
        narrowed = self.sync_names if self._narrowed else None

        def run() -> EncodedResults:
            results = self.pipeline.process(source, events, narrowed) if events else []
            self.observer.on_decisions(results)
            return encode_results(source, results)

        return await asyncio.get_running_loop().run_in_executor(self._pipeline_thread, run)

    def _count(self, encoded: EncodedResults, duplicates: int) -> SubmitSummary:
        return self.count_decisions(encoded.status_counts(), len(encoded.events), duplicates)

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

    def delivery_counts(self) -> dict[str, Counter[str]]:
        """Per sync, deliveries delivered and archived (and attempts retried) since start."""
        return self.engine.counts

    def waiting(self) -> dict[str, int]:
        """Per sync, deliveries not yet delivered nor archived (in memory or spilled)."""
        return {name: lane.size for name, lane in self.engine.lanes.items()}

    async def _retention_loop(self) -> None:
        older_than = self.project.retention_days * 86400.0
        while True:
            with contextlib.suppress(StoreError):  # away, or a full disk: the next pass
                await self._in_store(self.store.prune, older_than)
            await asyncio.sleep(RETENTION_EVERY)


def _without_duplicates(
    source: str, events: Sequence[Event], message_ids: list[str], seen: set[str]
) -> tuple[Sequence[Event], list[DuplicateRow]]:
    """The events to process, and the others as duplicate rows (`duplicates_among`)."""
    found = duplicates_among(message_ids, seen)
    if not found:
        return events, []
    dropped = set(found)
    fresh = [event for i, event in enumerate(events) if i not in dropped]
    dumps = orjson.dumps
    return fresh, [DuplicateRow(source, message_ids[i], dumps(events[i]).decode()) for i in found]
