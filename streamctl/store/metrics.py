"""What monitoring reads from the store: windowed counts per sync, behind one small
interface (`MetricsSource`), and its implementation over either store (`StoreMetrics`).

Alert rules, `streamctl top` and the sparklines of `streamctl status` ask these
questions and nothing else, so the rule engine is tested against an in-memory
implementation (tests/fakes/metrics.py) and runs against the store. Times are epoch
seconds; windows are half-open, `since <= t < until`.

    metrics = StoreMetrics.for_project(project)
    metrics.attempt_counts("purchases-to-braze", now - 300, now)

Which rows answer which question:

| question | rows |
| --- | --- |
| attempts, failed attempts, latency | `attempts` by `(sync, at)`; failed: `status != 'delivered'` |
| archived | `deliveries` with `status = 'archived'`, by `finished_at` |
| events received by a source | `events` by `received_at` (duplicates included: they arrived) |
| events that reached a sync | distinct `event_id` of the sync's `deliveries`, by `created_at` |
| retrying / queued now | `deliveries` in `retrying` / `pending` or `retrying` |
| kafka source lag | `source_lag`, as each source's process last wrote it |
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from streamctl.core.model import Project
from streamctl.core.rows import PartitionLag
from streamctl.store import queries
from streamctl.store.connection import SqlReader
from streamctl.store.db import SqliteStore
from streamctl.store.postgres.store import PostgresStore, migrate_url


@dataclass(frozen=True)
class AttemptCounts:
    """Delivery attempts of one sync in a window; a failed attempt is any not answered 2xx."""

    attempts: int = 0
    failed: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.attempts if self.attempts else None


@dataclass(frozen=True)
class SyncCounters:
    """Everything `streamctl top` shows for one sync.

    Counters (`received` .. `archived`) count since a fixed instant, so two readings
    give a rate; `retrying` and `queued` are gauges: deliveries in that state now.
    """

    sync: str
    received: int = 0  # events that reached the sync (its decisions)
    delivered: int = 0
    filtered: int = 0
    failed: int = 0  # failed delivery attempts
    archived: int = 0
    attempts: int = 0
    retrying: int = 0
    queued: int = 0  # pending or retrying deliveries
    latency_p95_ms: float | None = None


@dataclass(frozen=True)
class MinuteBucket:
    """One minute of one sync, for a sparkline: events that reached it, and failures."""

    start: float  # epoch seconds, a multiple of 60
    volume: int = 0
    errors: int = 0  # failed attempts plus archived, mapping and function errors


class MetricsSource(Protocol):
    def attempt_counts(self, sync: str, since: float, until: float) -> AttemptCounts:
        """Delivery attempts of `sync` made in the window, and how many failed."""
        ...

    def archived_count(self, sync: str, since: float, until: float) -> int:
        """Deliveries of `sync` archived (given up on) in the window."""
        ...

    def received_count(self, source: str, since: float, until: float) -> int:
        """Events accepted by `source` in the window."""
        ...

    def latency_p95(self, sync: str, since: float, until: float) -> float | None:
        """95th percentile of the attempts' latency in ms, None without attempts."""
        ...

    def sync_counters(self, syncs: list[str], since: float) -> dict[str, SyncCounters]:
        """Counters since `since` (gauges: now) for every named sync."""
        ...

    def minute_buckets(self, sync: str, since: float, until: float) -> list[MinuteBucket]:
        """One bucket per minute from the minute containing `since` to the one before `until`."""
        ...

    def partition_lags(self) -> list[PartitionLag]:
        """Each kafka source's consumer lag per partition, as its process last wrote it."""
        ...


# Recent enough to show what a destination answers now, long enough to hold a few attempts.
TOP_LATENCY_WINDOW = 60.0


class StoreMetrics:
    """Reads through its own connection: monitoring never waits on the writer's lock."""

    def __init__(self, store: SqlReader) -> None:
        self.store = store

    @classmethod
    def open(cls, path: Path) -> StoreMetrics:
        """Readonly on a store that exists; a fresh project gets an empty, migrated one."""
        if path.exists():
            store = SqliteStore.open(path, readonly=True)
            if store.has_tables():
                return cls(store)
            store.close()  # a file holding only alert state: give it the store's tables
        return cls(SqliteStore.open(path))

    @classmethod
    def for_project(cls, project: Project) -> StoreMetrics:
        if project.store_url is not None:  # shared: read it, register no node, lease nothing
            migrate_url(project.store_url)
            return cls(PostgresStore.open(project.store_url, readonly=True))
        return cls.open(project.store_file)

    def close(self) -> None:
        self.store.close()

    def partition_lags(self) -> list[PartitionLag]:
        return queries.partition_lags(self.store)

    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.store.rows(sql, args)

    def attempt_counts(self, sync: str, since: float, until: float) -> AttemptCounts:
        ((attempts, failed),) = self._rows(
            "SELECT count(*), count(*) FILTER (WHERE status != 'delivered') FROM attempts"
            " WHERE sync = ? AND at >= ? AND at < ?",
            (sync, since, until),
        )
        return AttemptCounts(attempts, failed)

    def archived_count(self, sync: str, since: float, until: float) -> int:
        ((count,),) = self._rows(
            "SELECT count(*) FROM deliveries WHERE sync = ? AND status = 'archived'"
            " AND finished_at >= ? AND finished_at < ?",
            (sync, since, until),
        )
        return int(count)

    def received_count(self, source: str, since: float, until: float) -> int:
        ((count,),) = self._rows(
            "SELECT count(*) FROM events WHERE received_at >= ? AND received_at < ? AND source = ?",
            (since, until, source),
        )
        return int(count)

    def latency_p95(self, sync: str, since: float, until: float) -> float | None:
        """Nearest-rank 95th percentile, picked by SQLite rather than loading every latency."""
        where = "FROM attempts WHERE sync = ? AND at >= ? AND at < ? AND latency_ms IS NOT NULL"
        ((count,),) = self._rows(f"SELECT count(*) {where}", (sync, since, until))
        if not count:
            return None
        rank = max(0, math.ceil(0.95 * count) - 1)
        ((value,),) = self._rows(
            f"SELECT latency_ms {where} ORDER BY latency_ms LIMIT 1 OFFSET ?",
            (sync, since, until, rank),
        )
        return float(value)

    def sync_counters(self, syncs: list[str], since: float) -> dict[str, SyncCounters]:
        return {sync: self._counters(sync, since) for sync in syncs}

    def _counters(self, sync: str, since: float) -> SyncCounters:
        ((received, filtered),) = self._rows(
            "SELECT count(DISTINCT event_id), count(*) FILTER (WHERE status = 'filtered')"
            " FROM deliveries WHERE sync = ? AND created_at >= ?",
            (sync, since),
        )
        ((attempts, delivered),) = self._rows(
            "SELECT count(*), count(*) FILTER (WHERE status = 'delivered') FROM attempts"
            " WHERE sync = ? AND at >= ?",
            (sync, since),
        )
        open_now = dict(
            self._rows(
                "SELECT status, count(*) FROM deliveries"
                " WHERE sync = ? AND status IN ('pending', 'retrying') GROUP BY status",
                (sync,),
            )
        )
        latest = max(since, time.time() - TOP_LATENCY_WINDOW)
        return SyncCounters(
            sync=sync,
            received=received,
            delivered=delivered,
            filtered=filtered,
            failed=attempts - delivered,
            archived=self.archived_count(sync, since, math.inf),
            attempts=attempts,
            retrying=open_now.get("retrying", 0),
            queued=open_now.get("pending", 0) + open_now.get("retrying", 0),
            latency_p95_ms=self.latency_p95(sync, latest, math.inf),
        )

    def minute_buckets(self, sync: str, since: float, until: float) -> list[MinuteBucket]:
        """Volume: events that reached the sync; errors: failed attempts plus mapping and
        function errors, each counted in the minute it happened."""
        first = math.floor(since / 60) * 60
        minute = self.store.minute_of
        volume = dict(
            self._rows(
                f"SELECT {minute('created_at')}, count(DISTINCT event_id)"
                " FROM deliveries WHERE sync = ? AND created_at >= ? AND created_at < ?"
                " GROUP BY 1",
                (sync, first, until),
            )
        )
        errors = dict(
            self._rows(
                f"SELECT {minute('created_at')}, count(*) FROM deliveries"
                " WHERE sync = ? AND created_at >= ? AND created_at < ?"
                " AND status IN ('mapping_error', 'function_error') GROUP BY 1",
                (sync, first, until),
            )
        )
        for start, failed in self._rows(
            f"SELECT {minute('at')}, count(*) FROM attempts"
            " WHERE sync = ? AND at >= ? AND at < ? AND status != 'delivered' GROUP BY 1",
            (sync, first, until),
        ):
            errors[start] = errors.get(start, 0) + failed
        starts = range(int(first), math.ceil(until / 60) * 60, 60)
        return [MinuteBucket(float(s), volume.get(s, 0), errors.get(s, 0)) for s in starts]
