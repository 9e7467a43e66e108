"""One sync's delivery lane: its own queue, batches, rate, concurrency and retries.

Every sync gets a lane and every lane its own dispatcher task, so a destination that
hangs or fails only fills its own lanes (one slow or failing destination never
slows another). A lane holds a bounded window of the sync's open deliveries in
memory; the store holds all of them. When the window is full the lane "spills":
new deliveries stay only in the store, and the lane reads them back in id order
once it has room. That keeps memory flat whatever the backlog, and is also how a
restart resumes: a new lane starts spilled, with its cursor at 0.

    ready    per event type, oldest first: sent in batches of up to batch_size
    delayed  a heap by next_attempt_at: retries waiting for their backoff / Retry-After
    held     per user (ordering: per_user): later events of a user whose earlier
             event is in flight or retrying
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, cast

import httpx
import orjson

from streamctl.core.errors import StoreUnavailable
from streamctl.core.model import SyncConfig
from streamctl.core.outcomes import Status
from streamctl.core.rows import AttemptRecord, PendingDelivery
from streamctl.delivery.policy import AdaptiveConcurrency, AdaptiveRate, RetryPolicy
from streamctl.destinations.base import (
    BatchResult,
    Destination,
    ItemResult,
    ItemStatus,
    Payload,
)


class LaneHost(Protocol):
    """What a lane needs from the engine that runs it (`DeliveryEngine`): the shared
    client, the store's open deliveries, and where attempts and archivals go."""

    lane_capacity: int

    @property
    def client(self) -> httpx.AsyncClient: ...

    async def open_deliveries(self, sync: str, after_id: int, limit: int) -> list[PendingDelivery]:
        """Open deliveries of `sync` with id > after_id, oldest first (read on the store thread)."""

    def record(self, sync: str, records: list[AttemptRecord]) -> None:
        """Attempts made, to be counted, reported and written."""

    def archive(
        self, sync: str, deliveries: list[PendingDelivery], reason: str, now: float
    ) -> None:
        """Deliveries archived without an attempt."""

    def changed(self) -> None:
        """A lane's state changed (idle now, perhaps)."""


_EARLY = 0.001  # seconds of clock slack when deciding an item is due
LOAD_RETRY = 1.0  # seconds before reading the store again after it was unreachable


class SyncLane:
    """The delivery queue and workers of one sync."""

    def __init__(self, sync: SyncConfig, destination: Destination, engine: LaneHost) -> None:
        self.sync = sync
        self.name = sync.name
        self.destination = destination
        self.engine = engine
        delivery = sync.delivery
        self.policy = RetryPolicy.of(delivery)
        self.per_user = delivery.ordering == "per_user"
        self.timeout = delivery.timeout
        self.concurrency = AdaptiveConcurrency(delivery.concurrency)
        rate = delivery.rate_limit or destination.catalog.rate_limit
        largest_batch = delivery.batch_size or destination.catalog.batch_size
        self.rate = AdaptiveRate(rate, burst=max(int(rate or 1), largest_batch))
        self.capacity = engine.lane_capacity
        self.ready: dict[str, deque[PendingDelivery]] = {}
        self.ready_count = 0
        self.delayed: list[tuple[float, int, PendingDelivery]] = []
        self.held: dict[str, deque[PendingDelivery]] = {}
        self.held_count = 0
        self.owner: dict[str, int] = {}  # per_user: the delivery of a user that goes first
        self.in_flight = 0  # deliveries being sent
        self.paused_until = 0.0  # a destination-wide 429's Retry-After pauses the whole lane
        self.cursor = 0  # every open delivery with id <= cursor is in memory (or finished)
        self.spilled = True  # the store may hold open deliveries above the cursor
        self.loading = False
        self._missed = False  # an offer came while loading
        self._load_after = 0.0  # the store was unreachable: no read-back before then
        self.wakeup = asyncio.Event()
        self._batch_sizes: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- filling -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.ready_count + len(self.delayed) + self.held_count + self.in_flight

    @property
    def idle(self) -> bool:
        return self.size == 0 and not self.spilled and not self.loading

    def offer(self, deliveries: Sequence[PendingDelivery]) -> None:
        """New deliveries (ascending ids) just recorded by the processor."""
        now = time.time()
        room = self.capacity - self.size
        for delivery in deliveries:
            if delivery.id <= self.cursor:
                continue  # already read back from the store
            if self.loading:
                self._missed = True  # maybe not in the page being read: read again after
            if self.spilled or self.loading or room <= 0:
                self.spilled = True  # it stays in the store until there is room
                continue
            self.cursor = delivery.id
            self._enqueue(delivery, now)
            room -= 1
        self.wakeup.set()

    def requeue(self, deliveries: Sequence[PendingDelivery]) -> None:
        """Deliveries put back by `streamctl errors retry`, or taken over from a stopped
        PostgreSQL node: those below the cursor join now, the store read-back brings
        the others."""
        now = time.time()
        for delivery in deliveries:
            if delivery.id <= self.cursor:
                self._enqueue(delivery, now)
            else:
                self.spilled = True
        self.wakeup.set()

    def _enqueue(self, delivery: PendingDelivery, now: float, front: bool = False) -> None:
        if delivery.next_attempt_at > now + _EARLY:
            heapq.heappush(self.delayed, (delivery.next_attempt_at, delivery.id, delivery))
            if self.per_user and delivery.user_key:
                # A retrying delivery keeps its user's later events waiting.
                self.owner.setdefault(delivery.user_key, delivery.id)
            return
        queue = self.ready.get(delivery.event_type)
        if queue is None:
            queue = self.ready[delivery.event_type] = deque()
        if front:
            queue.appendleft(delivery)
        else:
            queue.append(delivery)
        self.ready_count += 1

    async def _load_from_store(self) -> None:
        """Read the next page of open deliveries above the cursor back into memory."""
        try:
            room = max(1, self.capacity - self.size)
            try:
                page = await self.engine.open_deliveries(self.name, self.cursor, room)
            except StoreUnavailable:  # still spilled: read again after a pause
                self._load_after = time.time() + LOAD_RETRY
                return
            now = time.time()
            for delivery in page:
                self.cursor = max(self.cursor, delivery.id)
                self._enqueue(delivery, now)
            if len(page) < room and not self._missed:
                self.spilled = False
        finally:
            self.loading = False
            self.wakeup.set()

    # -- dispatching -------------------------------------------------------------------

    async def run(self) -> None:
        """The dispatcher: forms batches and starts sends while there is room."""
        while True:
            now = time.time()
            self._promote_due(now)
            if (
                self.spilled
                and not self.loading
                and self.size < self.capacity // 2
                and now >= self._load_after
            ):
                self.loading = True  # now, not when the task starts: one load at a time
                self._missed = False
                self._spawn(self._load_from_store())
            if now < self.paused_until:
                await self._sleep_until_woken(self.paused_until - now)
                continue
            batch = self._take_batch(now) if self.concurrency.has_room else None
            if batch is not None:
                event_type, deliveries = batch
                self.concurrency.in_flight += 1
                self.in_flight += len(deliveries)
                await self.rate.take(len(deliveries))
                self._spawn(self._send(event_type, deliveries))
                continue
            timeout = self.delayed[0][0] - now if self.delayed else None
            if self.spilled and not self.loading and self._load_after > now:
                timeout = min(timeout or LOAD_RETRY, self._load_after - now)
            await self._sleep_until_woken(timeout)

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        # A timer that sets the event, not `asyncio.wait_for`: wait_for wraps the wait in a
        # task of its own, and on Python 3.11 a lane cancelled at shutdown could be left
        # waiting on that inner task forever (seen under CPU load).
        self.wakeup.clear()
        if timeout is not None and timeout <= 0:
            await asyncio.sleep(0)
            return
        timer = None
        if timeout is not None:
            timer = asyncio.get_running_loop().call_later(timeout, self.wakeup.set)
        try:
            await self.wakeup.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _promote_due(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now + _EARLY:
            _, _, delivery = heapq.heappop(self.delayed)
            self._enqueue(delivery, now, front=True)

    def _batch_size(self, event_type: str) -> int:
        size = self._batch_sizes.get(event_type)
        if size is None:
            size = self.sync.delivery.batch_size or self.destination.batch_size(event_type)
            self._batch_sizes[event_type] = size = max(1, size)
        return size

    def _take_batch(self, now: float) -> tuple[str, list[PendingDelivery]] | None:
        expired: list[PendingDelivery] = []
        try:
            for event_type, queue in self.ready.items():
                if not queue:
                    continue
                batch = self._fill(queue, self._batch_size(event_type), now, expired)
                if batch:
                    # Round robin: this event type goes to the back of the line.
                    self.ready[event_type] = self.ready.pop(event_type)
                    return event_type, batch
            return None
        finally:
            if expired:
                self._expire(expired, now)

    def _fill(
        self, queue: deque[PendingDelivery], size: int, now: float, expired: list[PendingDelivery]
    ) -> list[PendingDelivery]:
        batch: list[PendingDelivery] = []
        max_age = self.policy.max_age
        while queue and len(batch) < size:
            delivery = queue.popleft()
            self.ready_count -= 1
            if now - delivery.created_at > max_age:
                expired.append(delivery)
                continue
            if self.per_user and delivery.user_key and not self._may_go(delivery):
                continue
            batch.append(delivery)
        return batch

    def _may_go(self, delivery: PendingDelivery) -> bool:
        """per_user: the user's first open delivery goes; later ones are held behind it."""
        user = delivery.user_key
        owner = self.owner.get(user)
        if owner is None:
            self.owner[user] = delivery.id
            return True
        if owner == delivery.id:
            return True
        held = self.held.get(user)
        if held is None:
            held = self.held[user] = deque()
        held.append(delivery)
        self.held_count += 1
        return False

    def _finished(self, delivery: PendingDelivery, now: float) -> None:
        """Delivered or archived: the user's next held event may go."""
        if not self.per_user or not delivery.user_key:
            return
        user = delivery.user_key
        if self.owner.get(user) != delivery.id:
            return
        held = self.held.get(user)
        if not held:
            self.owner.pop(user, None)
            self.held.pop(user, None)
            return
        following = held.popleft()
        self.held_count -= 1
        self.owner[user] = following.id
        self._enqueue(following, now, front=True)

    def _expire(self, deliveries: list[PendingDelivery], now: float) -> None:
        reason = f"archived: older than max_age ({self.policy.max_age:g}s) before it could be sent"
        for delivery in deliveries:
            self._finished(delivery, now)
        self.engine.archive(self.name, deliveries, reason, now)

    # -- sending -------------------------------------------------------------------------

    async def _send(self, event_type: str, deliveries: list[PendingDelivery]) -> None:
        try:
            await self._send_batch(event_type, deliveries)
        finally:
            self.concurrency.in_flight -= 1
            self.in_flight -= len(deliveries)
            self.wakeup.set()
            self.engine.changed()

    async def _send_batch(self, event_type: str, deliveries: list[PendingDelivery]) -> None:
        started = time.time()
        clock = time.perf_counter()
        result = await self._call_destination(event_type, deliveries)
        latency_ms = (time.perf_counter() - clock) * 1000.0
        if result.split and len(deliveries) > 1:
            self._record_split(deliveries, result, started, latency_ms)
            middle = len(deliveries) // 2
            for half in (deliveries[:middle], deliveries[middle:]):
                await self.rate.take(len(half))
                await self._send_batch(event_type, half)
            return
        self._settle(deliveries, result, started, latency_ms)

    async def _call_destination(
        self, event_type: str, deliveries: list[PendingDelivery]
    ) -> BatchResult:
        payloads = self._payloads(deliveries)
        try:
            result = await self.destination.send(
                self.engine.client, event_type, payloads, timeout=self.timeout
            )
        except Exception as exc:  # a destination bug must not stop the lane
            error = f"destination {self.destination.name!r} raised {type(exc).__name__}: {exc}"
            return BatchResult.same(len(deliveries), ItemResult(ItemStatus.RETRY, error=error))
        if len(result.items) != len(deliveries):
            error = (
                f"destination {self.destination.name!r} answered {len(result.items)} results"
                f" for {len(deliveries)} payloads"
            )
            return BatchResult.same(len(deliveries), ItemResult(ItemStatus.RETRY, error=error))
        return result

    def _payloads(self, deliveries: list[PendingDelivery]) -> list[Payload]:
        """What the destination is given: stored JSON text as it is for a destination that
        takes it, an orjson.Fragment for one that only embeds payloads, else the payload
        object."""
        stored = [d.payload for d in deliveries]
        if self.destination.takes_payload_text:
            return cast(list[Payload], stored)  # decoded by the destination, off the loop
        if self.destination.embeds_payloads:
            embedded = [p if isinstance(p, dict) else orjson.Fragment(p) for p in stored]
            return cast(list[Payload], embedded)  # serialised as they are, never read
        return [p if isinstance(p, dict) else orjson.loads(p) for p in stored]

    def _record_split(
        self,
        deliveries: list[PendingDelivery],
        result: BatchResult,
        started: float,
        latency_ms: float,
    ) -> None:
        """The request failed as a whole; record it on each delivery, then try halves."""
        records: dict[tuple[Any, ...], AttemptRecord] = {}
        for delivery, item in zip(deliveries, result.items, strict=True):
            first = delivery.first_attempt_at = delivery.first_attempt_at or started
            key = (id(item), delivery.attempts, first)
            record = records.get(key)
            if record is None:
                error = f"{item.error or 'failed'}; batch of {len(deliveries)} split in two"
                records[key] = record = AttemptRecord(
                    [], self.name, self.destination.name, started, "split", item.status_code,
                    latency_ms, error, item.response, item.retry_after, Status.PENDING,
                    delivery.attempts, None, first,
                )  # fmt: skip
            record.delivery_ids.append(delivery.id)
        self.engine.record(self.name, list(records.values()))

    def _settle(
        self,
        deliveries: list[PendingDelivery],
        result: BatchResult,
        started: float,
        latency_ms: float,
    ) -> None:
        """Each delivery's new state after its item's answer, recorded as one
        AttemptRecord per group of deliveries left in the same state."""
        now = time.time()
        records: dict[tuple[Any, ...], AttemptRecord] = {}
        throttled_for: float | None = None
        throttled = False
        for delivery, item in zip(deliveries, result.items, strict=True):
            attempts = delivery.attempts = delivery.attempts + 1
            first = delivery.first_attempt_at = delivery.first_attempt_at or started
            error = item.error
            next_at: float | None = None
            if item.status is ItemStatus.DELIVERED:
                status = Status.DELIVERED
            elif item.status is ItemStatus.FAILED:
                status = Status.ARCHIVED
            else:
                if item.status_code == 429 and item.throttle_scope == "destination":
                    # An item-scoped throttle (one user over its limit) delays only that
                    # delivery (next_at below), never the other users of the lane.
                    throttled = True
                    throttled_for = max(throttled_for or 0.0, item.retry_after or 0.0)
                next_at = self.policy.next_attempt_at(attempts, now, item.retry_after)
                gave_up = self.policy.gives_up(attempts, delivery.created_at, next_at)
                if gave_up:
                    status, error, next_at = (
                        Status.ARCHIVED,
                        f"{error or 'failed'}; {gave_up}",
                        None,
                    )
                else:
                    status = Status.RETRYING
            # A batch's items usually share one ItemResult (`BatchResult.same`) and so
            # one record; a retry's backoff (next_at, jittered) is its own.
            key = (id(item), status, error, next_at, attempts, first)
            record = records.get(key)
            if record is None:
                records[key] = record = AttemptRecord(
                    [], self.name, self.destination.name, started, item.status.value,
                    item.status_code, latency_ms, error, item.response, item.retry_after,
                    status, attempts, next_at, first,
                )  # fmt: skip
            record.delivery_ids.append(delivery.id)
            if status is Status.RETRYING and next_at is not None:
                delivery.next_attempt_at = next_at
                heapq.heappush(self.delayed, (next_at, delivery.id, delivery))
            else:
                self._finished(delivery, now)
        self.engine.record(self.name, list(records.values()))
        self._adapt(throttled, throttled_for, now)

    def _adapt(self, throttled: bool, retry_after: float | None, now: float) -> None:
        if throttled:
            self.rate.throttled()
            self.concurrency.throttled()
            if retry_after:
                self.paused_until = max(self.paused_until, now + retry_after)
        else:
            self.rate.succeeded()
            self.concurrency.succeeded()

    async def stop(self, grace: float) -> None:
        """Let sends in flight finish for up to `grace` seconds, then cancel them: their
        deliveries stay pending in the store and are sent again by the next start."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
