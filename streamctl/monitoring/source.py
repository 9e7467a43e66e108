"""What monitoring reads: windowed counts per sync, behind one small interface.

Alert rules, `streamctl top` and the sparklines of `streamctl status` ask these
questions and nothing else, so the rule engine is tested against an in-memory
implementation (tests/fakes/metrics.py) and runs against the SQLite store
(`streamctl.monitoring.store_metrics.StoreMetrics`). Times are epoch seconds;
windows are half-open, `since <= t < until`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
