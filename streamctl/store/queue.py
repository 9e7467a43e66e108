"""The queue between ingest and processing (SPEC §8).

Ingest appends accepted events; processors claim them, run the pipeline, record the
outcome and acknowledge. SQLite implements it for one machine; a Redis Streams
implementation (consumer groups, XAUTOCLAIM for dead workers) replaces it for many
without touching the pipeline or the destinations.

An entry is one `append` (for the listener, one HTTP request): its events are
stored, claimed and acknowledged together, and every `QueuedEvent` of it carries
the entry's id. SQLite keeps an entry in one row; Redis would keep it in one stream
entry (XADD of the serialised events, XACK of the entry id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from streamctl.core.events import Event


class QueuedEvent(NamedTuple):
    """One claimed event. A tuple: a claim makes one per event (a frozen dataclass cost
    1.3 us each, a tuple 0.4 us made with `tuple.__new__` as the queues do)."""

    id: int  # the entry (one append) holding the event, for ack; shared by its events
    source: str
    event: Event


class Overloaded(Exception):
    """The queue is full: the listener answers 429 with Retry-After."""

    def __init__(self, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(f"queue full, retry after {retry_after:g}s")


class EventQueue(Protocol):
    """Every operation ingest, the listener and the processor use.

    Acknowledging is `ack`, or the store's `record_and_ack`, which records the entries'
    outcomes and acknowledges them in one transaction: a backend's store and queue
    share a transaction for that (SQLite: one connection; PostgreSQL: one database)."""

    @property
    def max_depth(self) -> int:
        """Events that may wait unacknowledged before `append` raises Overloaded."""
        ...

    def append(self, source: str, events: Sequence[Event]) -> None:
        """Store events durably; returns only once they survive a crash. May raise Overloaded."""

    def append_many(self, groups: Sequence[tuple[str, Sequence[Event]]]) -> None:
        """Several appends made durable together (one fsync: the listener's group commit);
        each group is one entry."""

    def claim(self, limit: int) -> list[QueuedEvent]:
        """Up to `limit` appended events not yet acknowledged, oldest first, in whole
        entries (one entry larger than `limit` is handed out whole)."""
        ...

    def ack(self, ids: Sequence[int]) -> None:
        """These entries' outcomes are recorded (every event of each); never hand them out
        again. An id repeated (one per event of its entry) counts once."""

    def rewind(self) -> None:
        """Hand out again every entry claimed and not acknowledged (a processor stopped
        and another starts in this process)."""

    def depth(self) -> int:
        """Events appended and not yet acknowledged."""
        ...
