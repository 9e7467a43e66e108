"""Group commit: many concurrent requests' events made durable in few transactions.

A 200 from the listener means "every event of this request is in SQLite". Committing
one transaction per request would cap ingest at the disk's transaction rate, so
requests hand their events to one writer task and wait on a future:

    committer = GroupCommitter(queue)
    await committer.start()
    await committer.submit("web", events)   # returns once committed; raises Overloaded
    await committer.close()                 # commits what is pending, then stops

The writer takes everything pending, appends it on a dedicated thread in one
transaction (`append_many` of the SQLite queue, one queue row per request; one
`EventQueue.append` per request for queues without it) and resolves each request's
future with its own outcome. While a round commits, the next requests pile up and go
together in the next round: the busier the listener, the larger the groups, without a
fixed wait when it is idle.

Memory is bounded twice: events waiting for a commit (`max_pending_events`) and
events stored but not yet processed (`max_queue_depth`, read from the queue after
commits). Past either bound `submit` raises `Overloaded` and the listener answers 429
(`check_room` lets it answer before reading the body). A round the queue refuses as
too big for its own depth limit commits the requests that fit, in order; only the
others get 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from streamctl.core.errors import StoreError
from streamctl.core.events import Event
from streamctl.store.queue import EventQueue, Overloaded

OnCommitted = Callable[[str, Sequence[Event]], None]

T = TypeVar("T")

RATE_WINDOW = 0.25  # seconds over which the ingest rate is measured
IDLE_DEPTH_REFRESH = 0.2  # seconds: how stale the queue depth may get while no request comes


@dataclass
class _Pending:
    source: str
    events: Sequence[Event]
    done: asyncio.Future[None]


@dataclass(frozen=True)
class CommitLimits:
    max_pending_events: int = 200_000  # waiting for the writer: about 100 MB of dicts at most
    max_queue_depth: int = 1_000_000  # stored, not yet processed by the pipeline
    retry_after: float = 1.0  # seconds, sent with 429
    linger: float = 0.0  # seconds to wait for more requests before a round when idle


class GroupCommitter:
    def __init__(
        self,
        queue: EventQueue,
        limits: CommitLimits = CommitLimits(),
        *,
        on_committed: OnCommitted | None = None,
    ) -> None:
        self._queue = queue
        self._limits = limits
        self._on_committed = on_committed
        self._pending: list[_Pending] = []
        self._pending_events = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        # One thread owns every write, so SQLite sees one writer and the event loop
        # keeps serving requests while a round commits (sqlite3 releases the GIL).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamctl-commit")
        self._depth = 0
        self.last_error: str | None = None
        self.committed_events = 0
        self._rate = IngestRate()

    @property
    def queue_depth(self) -> int:
        """The queue depth as read after the last round (or IDLE_DEPTH_REFRESH ago)."""
        return self._depth

    @property
    def queue(self) -> EventQueue:
        return self._queue

    @property
    def ingest_rate(self) -> IngestRate:
        """Events and requests committed per second, over the last quarter second or so."""
        return self._rate

    @property
    def running(self) -> bool:
        return self._writer is not None and not self._writer.done()

    async def start(self) -> None:
        await self.run_on_writer_thread(self._refresh_depth)
        self._writer = asyncio.create_task(self._write_rounds(), name="streamctl-group-commit")

    async def run_on_writer_thread(self, function: Callable[..., T], *args: object) -> T:
        """Run a store call on the writer's thread (SQLite connections may be thread-bound)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def check_room(self, events: int = 1) -> None:
        """Raise Overloaded unless `events` more would be taken now. Cheap: the listener
        asks before reading a request's body, so a request refused costs no parsing."""
        if self._closing:
            msg = "the listener is shutting down"
            raise Overloaded(self._limits.retry_after) from StoreError(msg)
        limits = self._limits
        if (
            self._pending_events + events > limits.max_pending_events
            or self._depth >= limits.max_queue_depth
        ):
            raise Overloaded(limits.retry_after)

    async def submit(self, source: str, events: Sequence[Event]) -> None:
        """Return once `events` are committed; raise Overloaded or StoreError otherwise."""
        self.check_room(len(events))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(source, events, done))
        self._pending_events += len(events)
        self._wake.set()
        await done

    async def close(self) -> None:
        """Commit everything submitted so far, then stop the writer."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._thread.shutdown(wait=True)

    async def _write_rounds(self) -> None:
        while True:
            if self._closing and not self._pending:
                return
            if not await self._woken_within(IDLE_DEPTH_REFRESH):
                self._rate.add(0, 0)
                if self._depth:  # idle: keep the backpressure reading fresh as delivery drains
                    await self.run_on_writer_thread(self._refresh_depth)
                continue
            self._wake.clear()
            if not self._pending:
                continue
            if self._limits.linger:
                await asyncio.sleep(self._limits.linger)
            round_, self._pending, self._pending_events = self._pending, [], 0
            await self._commit_round(round_)
            if self._pending:
                self._wake.set()

    async def _woken_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _commit_round(self, round_: list[_Pending]) -> None:
        try:
            errors = await self.run_on_writer_thread(self._append_round, round_)
        except Exception as exc:  # the thread itself failed: fail the round, keep the writer
            failure: BaseException = StoreError(f"could not commit: {type(exc).__name__}: {exc}")
            errors = [failure] * len(round_)
        committed: dict[str, list[_Pending]] = {}
        for pending, error in zip(round_, errors, strict=True):
            if error is None:
                committed.setdefault(pending.source, []).append(pending)
            if pending.done.done():  # the client went away; nothing to answer
                continue
            if error is None:
                pending.done.set_result(None)
            else:
                pending.done.set_exception(error)
        for source, requests in committed.items():
            count = sum(len(p.events) for p in requests)
            self.committed_events += count
            self._rate.add(count, len(requests))
            if self._on_committed is not None:
                for pending in requests:
                    self._on_committed(source, pending.events)

    def _append_round(self, round_: list[_Pending]) -> list[BaseException | None]:
        """On the writer thread: each request's outcome. The round goes in one transaction
        (`append_many`: one queue entry per request)."""
        errors = self._append_together(self._queue.append_many, round_)
        self._refresh_depth()
        return errors

    def _append_together(
        self, append_many: Callable[..., None], round_: list[_Pending]
    ) -> list[BaseException | None]:
        error = self._attempt(append_many, [(p.source, p.events) for p in round_])
        if not isinstance(error, Overloaded) or len(round_) == 1:
            return [error] * len(round_)
        # The queue has no room for the whole round: the requests that fit, in order, go
        # in; only the others are refused (429), not every request that shared the round.
        room, fitting = self._queue_room(), []
        for pending in round_:
            if len(pending.events) <= room:
                fitting.append(pending)
                room -= len(pending.events)
        if not fitting:
            return [error] * len(round_)
        outcome = self._attempt(append_many, [(p.source, p.events) for p in fitting])
        admitted = {id(p) for p in fitting}
        return [outcome if id(p) in admitted else error for p in round_]

    def _queue_room(self) -> int:
        """Events the queue takes before its depth limit."""
        return max(0, self._queue.max_depth - self._queue.depth())

    def _attempt(self, append: Callable[..., None], *args: Any) -> BaseException | None:
        try:
            append(*args)
        except Overloaded as exc:
            return exc
        except Exception as exc:  # a store failure must reach every waiting request
            self.last_error = f"{type(exc).__name__}: {exc}"
            return exc if isinstance(exc, StoreError) else StoreError(str(exc))
        self.last_error = None
        return None

    def _refresh_depth(self) -> None:
        try:
            self._depth = self._queue.depth()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"


class IngestRate:
    """Events and requests per second over the last full window of RATE_WINDOW seconds."""

    def __init__(self) -> None:
        self.events_per_second = 0.0
        self.requests_per_second = 0.0
        self._started = time.monotonic()
        self._events = 0
        self._requests = 0

    def add(self, events: int, requests: int) -> None:
        self._events += events
        self._requests += requests
        now = time.monotonic()
        elapsed = now - self._started
        if elapsed >= RATE_WINDOW:
            self.events_per_second = self._events / elapsed
            self.requests_per_second = self._requests / elapsed
            self._started, self._events, self._requests = now, 0, 0
