"""The state store's contract: every operation the rest of streamctl asks of a store.

    store: Store = SqliteStore.for_project(project)      # today's one implementation
    recorded = store.record_and_ack(encoded, entries, destinations=...)
    store.record_attempts(records)

A backend (SQLite in `streamctl.store.db`, PostgreSQL in `streamctl.store.postgres`,
chosen from `store:` by `streamctl.store.backend`) implements this
Protocol and `streamctl.store.queue.EventQueue` for its `queue`; callers type
against these two and never ask a store for a method it may lack, nor for its
connection: the SQL stays in `streamctl/store/`. The guarantees a backend must keep
are in the docstrings, above all `record_and_ack`'s: the outcomes of queue entries
are recorded, and the entries acknowledged, in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from streamctl.core.outcomes import EventResult
from streamctl.core.rows import (
    AttemptRecord,
    DuplicateRow,
    EncodedResults,
    PartitionLag,
    PendingDelivery,
    RecordedResults,
    RejectedInput,
)
from streamctl.store.health import WriteHealth
from streamctl.store.queries import ErrorFilter
from streamctl.store.queue import EventQueue
from streamctl.store.rollups import Series


class Store(Protocol):
    """Events, decisions, deliveries and attempts of one project, and its ingest queue."""

    @property
    def node(self) -> int | None:
        """The id under which this process leases work in a store shared by many
        (PostgreSQL: replay's workers record for it); None where nothing is leased."""
        ...

    @property
    def queue(self) -> EventQueue:
        """The ingest queue kept with this store (`record_and_ack` acknowledges its entries)."""
        ...

    def close(self) -> None: ...

    @property
    def health(self) -> WriteHealth:
        """Whether writes succeed now, and why not (a full disk): /readyz and the log."""
        ...

    def check_writable(self) -> None:
        """Raise StoreError unless this process can write (taken and released at once);
        while writes are failing, only once there is room to write again."""

    # -- processing ----------------------------------------------------------------------

    def seen_message_ids(
        self, source: str, message_ids: Sequence[str], now: float | None = None
    ) -> set[str]:
        """The ids among `message_ids` already received on `source` within the last 24 h."""
        ...

    def record_results(
        self,
        results: Sequence[EventResult],
        *,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        now: float | None = None,
    ) -> RecordedResults:
        """`record_encoded` of `encode_results(results)`."""
        ...

    def record_encoded(
        self,
        encoded: EncodedResults,
        *,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        now: float | None = None,
        dedupe: bool = False,
        build_pending: bool = True,
    ) -> RecordedResults:
        """Record events, decisions, violations, function errors and `duplicates` in one
        transaction; the PENDING decisions become deliveries with ascending ids.
        `dedupe`: drop (and record as duplicates) events already received, deciding
        inside the transaction, so concurrent writers never both take one as new."""
        ...

    def record_and_ack(
        self,
        encoded: EncodedResults,
        entries: Sequence[int],
        *,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        now: float | None = None,
    ) -> RecordedResults:
        """`record_encoded`, and acknowledge these entries of `queue`, atomically: both
        or neither. (Acknowledging after the record could process events twice after
        a crash; before it, lose them.)"""
        ...

    def next_delivery_id(self) -> int:
        """The id the next recorded delivery will get."""
        ...

    # -- delivery ------------------------------------------------------------------------

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Each attempt, and its deliveries' new state, in one transaction."""

    def archive(self, deliveries: Sequence[PendingDelivery], reason: str, now: float) -> None:
        """Archive deliveries without an attempt (their max_age passed)."""

    def open_deliveries(
        self, syncs: Sequence[str], after_id: int, limit: int
    ) -> list[PendingDelivery]:
        """Pending and retrying deliveries of `syncs` with id > after_id, oldest first."""
        ...

    def take_requeued(self, syncs: Sequence[str]) -> list[PendingDelivery]:
        """Deliveries `requeue`d (by another process) since the last call; clears the mark."""
        ...

    def clear_requeued(self, syncs: Sequence[str]) -> None:
        """Drop the requeue marks (a starting engine reads every open delivery anyway)."""

    def requeue(self, ids: Sequence[int], now: float | None = None) -> int:
        """Put archived deliveries back to pending; returns how many."""
        ...

    # -- the sources' own records -------------------------------------------------------

    def record_rejected(self, rejected: Sequence[RejectedInput]) -> None:
        """Input a source skipped as no event (`errors` lists it, stage `source`)."""

    def forget_rejected(self, before: float) -> int:
        """Delete rejected input recorded before `before` (Unix seconds); how many."""
        ...

    def record_lag(self, source: str, lags: Sequence[PartitionLag]) -> None:
        """Replace a Kafka source's consumer lag (its partitions now) with `lags`."""

    def partition_lags(self) -> list[PartitionLag]:
        """Every Kafka source's last recorded lag, by source, topic and partition."""
        ...

    def rejected_counts(self, since: float) -> dict[str, int]:
        """How much input each source rejected since `since` (Unix seconds)."""
        ...

    # -- retention -----------------------------------------------------------------------

    def prune(self, older_than: float, now: float | None = None) -> dict[str, int]:
        """Delete what is older than `older_than` seconds, open deliveries' events
        excepted; rows deleted per table."""
        ...

    def vacuum(self) -> None:
        """Give the space `prune` freed back to the file system."""

    # -- reading (errors, status, explain) -----------------------------------------------

    def list_errors(self, filters: ErrorFilter) -> list[dict[str, Any]]: ...

    def error_detail(self, error_id: str) -> dict[str, Any] | None: ...

    def archived_ids(self, filters: ErrorFilter) -> list[int]: ...

    def sync_status(self, since: float, syncs: Sequence[str] = ()) -> list[dict[str, Any]]: ...

    def explain(self, message_id: str) -> list[dict[str, Any]]: ...

    def syncs_of(self, ids: Sequence[int]) -> list[str]:
        """The syncs these deliveries belong to, sorted."""
        ...

    def statuses_of(self, ids: Sequence[int]) -> dict[str, int]:
        """How many of these deliveries are in each status."""
        ...


class ConsoleReads(Protocol):
    """What the web console (and `streamctl report`) asks of a store beyond `Store`:
    its rollups (streamctl.store.rollups) and the debugger's polling. Both stores
    implement it (streamctl.store.console_queries); the console never sees SQL."""

    def refresh_rollups(self, now: float | None = None) -> int:
        """Roll up every settled minute not rolled up yet, and sample the gauges; safe
        while other processes refresh the same store. Minutes rolled up."""
        ...

    def read_series(
        self, since: float, width: int, sync: str | None = None, now: float | None = None
    ) -> Series:
        """Buckets of `width` seconds from `since` to now, of one sync or (None) all."""
        ...

    def totals_by_sync(
        self, since: float, width: int, now: float | None = None
    ) -> dict[str, dict[str, int]]:
        """Each sync's sums over the window (`*`: the whole store)."""
        ...

    def latest_event_id(self) -> int: ...

    def events_after(self, after_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """Events recorded after `after_id`, oldest first, with their deliveries' outcomes."""
        ...


class ConsoleStore(Store, ConsoleReads, Protocol):
    """A store the console serves from (`streamctl.store.backend.open_console_store`)."""
