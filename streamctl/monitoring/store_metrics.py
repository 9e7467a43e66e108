"""MetricsSource over the SQLite store (docs/store.md): the answers alerts, top and
status sparklines need, each one indexed query.

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
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamctl.core.model import Project
from streamctl.monitoring.source import AttemptCounts, MinuteBucket, SyncCounters
from streamctl.store import Store
from streamctl.store.backend import AnyStore
from streamctl.store.db import store_path
from streamctl.store.postgres.store import PostgresStore, migrate_url

# Recent enough to show what a destination answers now, long enough to hold a few attempts.
TOP_LATENCY_WINDOW = 60.0


class StoreMetrics:
    """Reads through its own connection: monitoring never waits on the writer's lock."""

    def __init__(self, store: AnyStore) -> None:
        self.store = store

    @classmethod
    def open(cls, path: Path) -> StoreMetrics:
        """Readonly on a store that exists; a fresh project gets an empty, migrated one."""
        if path.exists():
            store = Store.open(path, readonly=True)
            if _migrated(store):
                return cls(store)
            store.close()  # a file holding only alert state: give it the store's tables
        return cls(Store.open(path))

    @classmethod
    def for_project(cls, project: Project) -> StoreMetrics:
        if project.store_url is not None:  # a shared store: read it, register no node
            migrate_url(project.store_url)
            return cls(PostgresStore.open(project.store_url, readonly=True))
        return cls.open(store_path(project))

    def close(self) -> None:
        self.store.close()

    def _rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.store.lock:
            return self.store.conn.execute(sql, list(args)).fetchall()

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


def _migrated(store: Store) -> bool:
    return store.has_tables()
