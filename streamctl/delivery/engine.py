"""The delivery engine: one lane per sync (grouped by destination) and the store writer.

    engine = DeliveryEngine(store, client, destinations, syncs)
    await engine.start()          # lanes start spilled: every open delivery resumes
    engine.offer(recorded.pending)
    await engine.wait_idle()      # everything delivered or archived
    await engine.stop()

Attempts are buffered and written every `flush_interval` (or sooner when many are
waiting) by the single store thread, in one transaction per flush. A crash can
therefore lose the record of sends made in the last moments, and those deliveries
are sent again at the next start: an event is delivered twice only if the crash
came between the send and its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from streamctl.core.errors import StoreError, StoreUnavailable
from streamctl.core.model import SyncConfig
from streamctl.core.rows import AttemptRecord, PendingDelivery
from streamctl.delivery.lane import SyncLane
from streamctl.delivery.observer import GuardedObserver, RuntimeObserver
from streamctl.destinations.base import Destination
from streamctl.store import Store

T = TypeVar("T")

DEFAULT_LANE_CAPACITY = 20_000
FLUSH_INTERVAL = 0.05  # seconds
FLUSH_AT = 5_000  # deliveries with buffered attempts that trigger a flush at once
REQUEUE_POLL = 1.0  # seconds between checks for `streamctl errors retry` (and take-overs)
UNAVAILABLE_PAUSE = 5.0  # seconds at most between flushes while the store is away

log = logging.getLogger(__name__)


class DeliveryEngine:
    """Every sync's lane, the buffered store writes of their attempts, and counters."""

    def __init__(
        self,
        store: Store,
        client: httpx.AsyncClient,
        destinations: Mapping[str, Destination],
        syncs: Sequence[SyncConfig],
        *,
        store_thread: ThreadPoolExecutor | None = None,
        lane_capacity: int = DEFAULT_LANE_CAPACITY,
        flush_interval: float = FLUSH_INTERVAL,
        observer: RuntimeObserver | None = None,
    ) -> None:
        self.store = store
        self.observer = GuardedObserver(observer)
        self.client = client
        self.lane_capacity = lane_capacity
        self.flush_interval = flush_interval
        self._own_thread = store_thread is None
        self.store_thread = store_thread or ThreadPoolExecutor(
            1, thread_name_prefix="streamctl-store"
        )
        self.lanes: dict[str, SyncLane] = {
            sync.name: SyncLane(sync, destinations[sync.destination], self) for sync in syncs
        }
        # Outcomes per sync since start: delivered, archived, retried (attempts that will retry).
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in self.lanes}
        self._records: list[AttemptRecord] = []
        self._recorded = 0  # deliveries in `_records`
        self._archived: list[tuple[list[PendingDelivery], str, float]] = []
        self._flush_now = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._flushing = False
        self.failure: BaseException | None = None  # a store write failed: stop trusting memory

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.in_store(self.store.clear_requeued, list(self.lanes))
        for lane in self.lanes.values():
            self._tasks.append(asyncio.create_task(lane.run(), name=f"lane:{lane.name}"))
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="delivery-flush"))
        self._tasks.append(asyncio.create_task(self._requeue_loop(), name="delivery-requeue"))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop sending; in-flight requests get `grace` seconds; every outcome is written."""
        lanes = list(self.lanes.values())
        for task in self._tasks[: len(lanes)]:
            task.cancel()
        await asyncio.gather(*(lane.stop(grace) for lane in lanes), return_exceptions=True)
        for task in self._tasks[len(lanes) :]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        try:
            await self.flush()
        except StoreError as exc:  # sent, not recorded: sent again after a restart
            log.warning("attempts not recorded at shutdown: %s", exc)
        if self._own_thread:
            self.store_thread.shutdown(wait=True)

    # -- store access -------------------------------------------------------------------------

    async def in_store(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the store thread (one writer, in submission order)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.store_thread, fn, *args)

    async def open_deliveries(self, sync: str, after_id: int, limit: int) -> list[PendingDelivery]:
        """A lane's next page of open deliveries from the store (`LaneHost`)."""
        return await self.in_store(self.store.open_deliveries, [sync], after_id, limit)

    # -- feeding --------------------------------------------------------------------------------

    def offer(self, deliveries: Sequence[PendingDelivery]) -> None:
        """Hand freshly recorded PENDING deliveries (ascending ids) to their lanes."""
        by_sync: dict[str, list[PendingDelivery]] = {}
        for delivery in deliveries:
            by_sync.setdefault(delivery.sync, []).append(delivery)
        for name, group in by_sync.items():
            lane = self.lanes.get(name)
            if lane is not None:
                lane.offer(group)
        self.observer.on_offered(deliveries)

    def ready_backlog(self) -> int:
        """The most deliveries any lane has ready to send now (for the processor's pacing)."""
        return max((lane.ready_count for lane in self.lanes.values()), default=0)

    @property
    def idle(self) -> bool:
        return (
            all(lane.idle for lane in self.lanes.values())
            and not self._records
            and not self._archived
            and not self._flushing
        )

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Until every delivery is delivered or archived and recorded; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.idle:
            if self.failure is not None:
                raise self.failure
            self._changed.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining or 0.25, 0.25))
        return True

    def changed(self) -> None:
        self._changed.set()
        if self._records and all(lane.idle for lane in self.lanes.values()):
            # Nothing left to send: write the outcomes now rather than at the next
            # interval (the end of a replay waits for exactly this).
            self._flush_now.set()

    # -- recording --------------------------------------------------------------------------

    def record(self, sync: str, records: list[AttemptRecord]) -> None:
        counts = self.counts[sync]
        for record in records:
            deliveries = len(record.delivery_ids)
            counts[record.new_status.value] += deliveries
            self._recorded += deliveries
        self._records.extend(records)
        if self._recorded >= FLUSH_AT:
            self._flush_now.set()
        self.observer.on_attempts(sync, records)

    def archive(
        self, sync: str, deliveries: list[PendingDelivery], reason: str, now: float
    ) -> None:
        self.counts[sync]["archived"] += len(deliveries)
        self._archived.append((deliveries, reason, now))
        self._flush_now.set()
        self.observer.on_archived(sync, deliveries, reason)

    async def flush(self) -> None:
        records, self._records, self._recorded = self._records, [], 0
        archived, self._archived = self._archived, []
        if not records and not archived:
            return
        self._flushing = True
        try:
            await self.in_store(self._write, records, archived)
        except BaseException:
            # Not written: kept, in order, for the next flush (a store that was away).
            self._records[:0] = records
            self._recorded += sum(len(r.delivery_ids) for r in records)
            self._archived[:0] = archived
            raise
        finally:
            self._flushing = False
            self._changed.set()

    def _write(
        self, records: list[AttemptRecord], archived: list[tuple[list[PendingDelivery], str, float]]
    ) -> None:
        """Write and empty `records`, then `archived` one group at a time; on a failure the
        lists keep exactly what was not written (nothing is recorded twice)."""
        if records:
            self.store.record_attempts(records)
            records.clear()
        while archived:
            self.store.archive(*archived[0])
            del archived[0]

    async def _flush_loop(self) -> None:
        pause = self.flush_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), pause)
            self._flush_now.clear()
            try:
                await self.flush()
            except StoreError as exc:  # kept in memory; written once the store takes writes
                # (a full disk is said by the store's health, once)
                if pause == self.flush_interval and isinstance(exc, StoreUnavailable):
                    log.warning("attempts wait for the store: %s", exc)
                pause = min(pause * 2, UNAVAILABLE_PAUSE)
                continue
            except Exception as exc:  # surfaced by wait_idle / the runtime
                log.exception("recording delivery outcomes failed: delivery stops")
                self.failure = exc
                self._changed.set()
                raise
            pause = self.flush_interval

    async def _requeue_loop(self) -> None:
        names = list(self.lanes)
        while True:
            await asyncio.sleep(REQUEUE_POLL)
            try:
                deliveries = await self.in_store(self.store.take_requeued, names)
            except StoreError:  # away, or a full disk: they stay requeued, taken later
                continue
            if deliveries:
                by_sync: dict[str, list[PendingDelivery]] = {}
                for delivery in deliveries:
                    by_sync.setdefault(delivery.sync, []).append(delivery)
                for name, group in by_sync.items():
                    self.lanes[name].requeue(group)
