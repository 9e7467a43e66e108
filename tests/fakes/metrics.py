"""An in-memory MetricsSource: record attempts, archives and receipts at chosen times.

metrics = RecordedMetrics()
metrics.attempt("braze", at=100.0, ok=False, latency_ms=120)
metrics.attempt_counts("braze", 0, 200)      # AttemptCounts(attempts=1, failed=1)
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from streamctl.core.rows import PartitionLag
from streamctl.store.metrics import AttemptCounts, MinuteBucket, SyncCounters


@dataclass
class RecordedMetrics:
    attempts: list[tuple[str, float, bool, float]] = field(default_factory=list)
    archives: list[tuple[str, float]] = field(default_factory=list)
    receipts: list[tuple[str, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, sync: str, *, at: float, ok: bool, latency_ms: float = 10.0) -> None:
        with self._lock:
            self.attempts.append((sync, at, ok, latency_ms))

    def archive(self, sync: str, *, at: float) -> None:
        with self._lock:
            self.archives.append((sync, at))

    def receive(self, source: str, *, at: float, count: int = 1) -> None:
        with self._lock:
            self.receipts.extend([(source, at)] * count)

    def attempt_counts(self, sync: str, since: float, until: float) -> AttemptCounts:
        rows = [a for a in self.attempts if a[0] == sync and since <= a[1] < until]
        return AttemptCounts(len(rows), sum(1 for a in rows if not a[2]))

    def archived_count(self, sync: str, since: float, until: float) -> int:
        return sum(1 for s, at in self.archives if s == sync and since <= at < until)

    def received_count(self, source: str, since: float, until: float) -> int:
        return sum(1 for s, at in self.receipts if s == source and since <= at < until)

    def latency_p95(self, sync: str, since: float, until: float) -> float | None:
        latencies = sorted(a[3] for a in self.attempts if a[0] == sync and since <= a[1] < until)
        if not latencies:
            return None
        return latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)]

    def sync_counters(self, syncs: list[str], since: float) -> dict[str, SyncCounters]:
        out = {}
        for sync in syncs:
            counts = self.attempt_counts(sync, since, math.inf)
            out[sync] = SyncCounters(
                sync,
                received=counts.attempts,
                delivered=counts.attempts - counts.failed,
                failed=counts.failed,
                archived=self.archived_count(sync, since, math.inf),
                attempts=counts.attempts,
                latency_p95_ms=self.latency_p95(sync, since, math.inf),
            )
        return out

    def minute_buckets(self, sync: str, since: float, until: float) -> list[MinuteBucket]:
        start = since // 60 * 60
        buckets = []
        while start < until:
            counts = self.attempt_counts(sync, start, start + 60)
            buckets.append(MinuteBucket(start, counts.attempts, counts.failed))
            start += 60
        return buckets

    def partition_lags(self) -> list[PartitionLag]:
        return []
