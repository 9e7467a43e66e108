"""The live feed behind `streamctl tail`: an in-process publish/subscribe of what happens.

The listener publishes every event once it is durably stored; the delivery engine
publishes every stage outcome as it is recorded. `streamctl run` serves the feed as
NDJSON at `GET /debug/tail` (loopback clients only), and `streamctl tail` prints it.

    from streamctl.monitoring.feed import FEED

    FEED.publish_outcome(sync="web-to-braze", message_id="m1", status="delivered",
                         event_type="custom", status_code=200)

Publishing costs one attribute check while nobody is subscribed, so it can sit on the
hot path. A subscriber that reads too slowly loses records rather than growing memory:
it gets `{"kind": "dropped", "count": N}` in their place. Publishing is safe from any
thread; subscribing happens on the event loop. `follow(url)` reads a running
instance's feed (the client side of `streamctl tail`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from streamctl.core.errors import StreamctlError
from streamctl.core.events import Event

Record = dict[str, Any]

DEFAULT_BUFFER = 10_000  # records a subscriber may fall behind before losing some


@dataclass(frozen=True)
class TailFilter:
    """Which records a subscriber wants. Empty selections select everything.

    `sync_sources` maps each sync to its source, so `--source web` also shows the
    outcomes of the syncs reading `web`, and `--sync a` the events of `a`'s source.
    """

    sources: frozenset[str] = frozenset()
    syncs: frozenset[str] = frozenset()
    sync_sources: Mapping[str, str] = field(default_factory=dict)

    def wants_source(self, source: str) -> bool:
        if not self.sources and not self.syncs:
            return True
        if source in self.sources:
            return True
        return any(self.sync_sources.get(sync) == source for sync in self.syncs)

    def wants_sync(self, sync: str) -> bool:
        if self.syncs:
            return sync in self.syncs
        if self.sources:
            return self.sync_sources.get(sync) in self.sources
        return True


class Subscription:
    """Records for one subscriber, bounded; iterate with `async for`."""

    def __init__(self, feed: LiveFeed, wanted: TailFilter, buffer: int) -> None:
        self.wanted = wanted
        self._feed = feed
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Record | None] = asyncio.Queue(maxsize=buffer)
        self._dropped = 0

    def offer(self, record: Record | None) -> None:
        """Queue a record from any thread."""
        if self._loop_is_current():
            self._put(record)
        else:
            self._loop.call_soon_threadsafe(self._put, record)

    def _loop_is_current(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _put(self, record: Record | None) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            if record is None:  # the end must get through: make room for it
                self._queue.get_nowait()
                self._queue.put_nowait(None)
            else:
                self._dropped += 1

    def missed(self, count: int) -> None:
        """Records lost upstream: reported as this subscriber's own drops (any thread)."""
        if self._loop_is_current():
            self._dropped += count
        else:
            self._loop.call_soon_threadsafe(self.missed, count)

    async def next(self) -> Record | None:
        """The next record; None once the feed ended (the server is shutting down)."""
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            return {"kind": "dropped", "count": dropped}
        return await self._queue.get()

    def end(self) -> None:
        """Finish the iteration after the records already queued (from any thread)."""
        self.offer(None)

    def close(self) -> None:
        self._feed.unsubscribe(self)

    async def __aiter__(self) -> AsyncIterator[Record]:
        try:
            while (record := await self.next()) is not None:
                yield record
        finally:
            self.close()


class LiveFeed:
    def __init__(self) -> None:
        self._subscriptions: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self._subscriptions)

    def subscribe(self, wanted: TailFilter, buffer: int = DEFAULT_BUFFER) -> Subscription:
        subscription = Subscription(self, wanted, buffer)
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    def end_all(self) -> None:
        """End every subscription: streaming responses finish, so a shutdown need not wait."""
        for subscription in self._subscriptions:
            subscription.end()

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def publish_received(self, source: str, events: Sequence[Event]) -> None:
        """Events of `source` that are now durably stored."""
        subscriptions = self._subscriptions
        if not subscriptions:
            return
        interested = [s for s in subscriptions if s.wanted.wants_source(source)]
        for event in events if interested else ():
            record = {
                "kind": "event",
                "at": _now(),
                "source": source,
                "message_id": event.get("messageId"),
                "event": event,
            }
            for subscription in interested:
                subscription.offer(record)

    def publish_outcome(
        self, *, sync: str, message_id: str, status: str, stage: str | None = None, **details: Any
    ) -> None:
        """One stage outcome of one event in one sync (`status`: a Status value).

        `details` may carry `event_type`, `attempt`, `status_code`, `error`: anything
        JSON-serialisable a person debugging would want to see.
        """
        if self._subscriptions:
            self.publish_record(outcome_record(sync, message_id, status, stage, details))

    def publish_record(self, record: Record) -> None:
        """An outcome record made elsewhere (`outcome_record` in a worker process)."""
        for subscription in self._subscriptions:
            if subscription.wanted.wants_sync(record["sync"]):
                subscription.offer(record)

    def publish_dropped(self, count: int) -> None:
        """`count` records were lost before they got here (a worker's bounded backlog):
        every subscriber is told, as when it falls behind itself."""
        for subscription in self._subscriptions:
            subscription.missed(count)


def outcome_record(
    sync: str, message_id: str, status: str, stage: str | None, details: Mapping[str, Any]
) -> Record:
    return {
        "kind": "outcome",
        "at": _now(),
        "sync": sync,
        "message_id": message_id,
        "status": status,
        **({"stage": stage} if stage else {}),
        **details,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


FEED = LiveFeed()


def selection(
    sources: Collection[str], syncs: Collection[str], sync_sources: Mapping[str, str]
) -> TailFilter:
    return TailFilter(frozenset(sources), frozenset(syncs), dict(sync_sources))


def follow(url: str, sources: Collection[str] = (), syncs: Collection[str] = ()) -> Iterator[bytes]:
    """The NDJSON lines of a running instance's feed (`GET URL/debug/tail`), as they come.

    Raises StreamctlError when nothing listens at `url` or it refuses the feed.
    """
    pairs: list[tuple[str, str | int | float | bool | None]] = [("source", s) for s in sources]
    pairs += [("sync", s) for s in syncs]
    params = httpx.QueryParams(pairs)
    timeout = httpx.Timeout(5.0, read=None)  # a quiet source may send nothing for hours
    try:
        with httpx.stream(
            "GET", f"{url.rstrip('/')}/debug/tail", params=params, timeout=timeout
        ) as reply:
            if reply.status_code != 200:
                reply.read()
                msg = f"{url} refused the live feed: HTTP {reply.status_code} {reply.text[:200]}"
                raise StreamctlError(msg)
            for line in reply.iter_lines():
                if line and not line.startswith('{"kind":"hello"'):
                    yield line.encode()
    except httpx.TransportError as exc:
        msg = f"no streamctl run answering at {url} ({type(exc).__name__}); is it running?"
        raise StreamctlError(msg) from None
