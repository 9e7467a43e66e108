"""The numbers behind `streamctl top`: counter snapshots and the rates between them.

    sampler = TopSampler(metrics, ["to-braze", "to-file"], since=time.time() - 900)
    snapshot = sampler.sample()          # every second
    rows = sampler.rows()                # TopRow per sync: totals, rates over the last seconds

Counters count since a fixed instant (`since`), so they only grow and the rate of
a counter is its growth between two snapshots divided by the time between them.
Rates are taken over the last `RATE_SPAN` snapshots, which smooths the one-second
jitter of batches without hiding a change for long.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamctl.core.rows import PartitionLag
from streamctl.store.metrics import MetricsSource, SyncCounters

RATE_SPAN = 5  # snapshots the rate is measured over (5 s at the default refresh)


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    syncs: dict[str, SyncCounters]
    lags: tuple[PartitionLag, ...] = ()  # kafka sources' consumer lag, as last recorded


@dataclass(frozen=True)
class Rate:
    total: int
    per_second: float | None  # None until two snapshots exist


@dataclass(frozen=True)
class TopRow:
    """One line of `streamctl top`."""

    sync: str
    received: Rate
    delivered: Rate
    filtered: Rate
    failed: Rate
    archived: Rate
    retrying: int
    queued: int
    error_rate: float | None  # failed attempts / attempts since `since`
    latency_p95_ms: float | None


COUNTERS = ("received", "delivered", "filtered", "failed", "archived")


def top_rows(current: Snapshot, previous: Snapshot | None) -> list[TopRow]:
    """Pure: a row per sync of `current`, with rates measured against `previous`."""
    elapsed = current.taken_at - previous.taken_at if previous is not None else 0.0
    rows = []
    for name, now in current.syncs.items():
        before = previous.syncs.get(name) if previous is not None and elapsed > 0 else None

        def rate(
            counter: str, now: SyncCounters = now, before: SyncCounters | None = before
        ) -> Rate:
            total = int(getattr(now, counter))
            if before is None:
                return Rate(total, None)
            return Rate(total, max(0.0, (total - getattr(before, counter)) / elapsed))

        received, delivered, filtered, failed, archived = (rate(c) for c in COUNTERS)
        rows.append(
            TopRow(
                sync=name,
                received=received,
                delivered=delivered,
                filtered=filtered,
                failed=failed,
                archived=archived,
                retrying=now.retrying,
                queued=now.queued,
                error_rate=now.failed / now.attempts if now.attempts else None,
                latency_p95_ms=now.latency_p95_ms,
            )
        )
    return rows


class TopSampler:
    """Takes snapshots from a MetricsSource and keeps the few needed for rates."""

    def __init__(
        self,
        metrics: MetricsSource,
        syncs: Sequence[str],
        since: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.syncs = list(syncs)
        self.since = since
        self.clock = clock
        self.history: deque[Snapshot] = deque(maxlen=RATE_SPAN + 1)

    def sample(self) -> Snapshot:
        counters = self.metrics.sync_counters(self.syncs, self.since)
        snapshot = Snapshot(self.clock(), counters, tuple(self.metrics.partition_lags()))
        self.history.append(snapshot)
        return snapshot

    def rows(self) -> list[TopRow]:
        if not self.history:
            self.sample()
        oldest = self.history[0] if len(self.history) > 1 else None
        return top_rows(self.history[-1], oldest)

    def lags(self) -> tuple[PartitionLag, ...]:
        return self.history[-1].lags if self.history else ()
