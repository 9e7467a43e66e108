"""Prometheus metrics of a running streamctl, served at `GET /metrics`.

One registry per process (`REGISTRY`), kept apart from prometheus-client's global
one so importing streamctl never changes what a host application exports. The
listener counts what arrives; the delivery engine reports what happens next through
four functions, cheap enough to call per batch on the hot path:

    from streamctl.monitoring import metrics

    metrics.record_outcomes("web-to-braze", "delivered", 50)     # any Status value
    metrics.record_attempt("web-to-braze", ok=False, seconds=0.21, events=50)
    metrics.record_end_to_end("web-to-braze", [0.012, 0.015])    # receivedAt -> delivered
    metrics.set_queue_depth(lambda: queue.depth())                # read at scrape time

Exported series (all prefixed `streamctl_`):

| name | type | labels | meaning |
| --- | --- | --- | --- |
| `events_received_total` | counter | source | events in requests that passed auth |
| `events_accepted_total` | counter | source | events durably stored (answered 200) |
| `events_rejected_total` | counter | source, reason | events refused (`auth`, `invalid`, `too_large`, `overloaded`, `signature`, `store`) |
| `ingest_commit_seconds` | histogram | | request read -> events committed to SQLite |
| `sync_events_total` | counter | sync, status | stage outcomes: blocked, dropped, filtered, mapping_error, duplicate, delivered, retrying, archived, ... |
| `delivery_attempts_total` | counter | sync, outcome | attempts that succeeded (`success`) or failed (`failure`) |
| `delivery_request_seconds` | histogram | sync | time of one request to the destination |
| `delivery_latency_seconds` | histogram | sync | end to end: event received -> delivered |
| `queue_depth` | gauge | | events stored and not yet processed |
| `kafka_source_lag` | gauge | source, topic, partition | a Kafka source's messages not yet stored and committed: the partition's high watermark minus the group's committed offset |
| `bus_lag` | gauge | topic, partition | `streamctl worker --bus` (at `--metrics-port`): messages of a bus topic's partition the workers' group has not yet processed and committed |

Per-sync `delivered`, `failed` (failed attempts), `retried` and `archived` are
`sync_events_total{status="delivered"|"retrying"|"archived"}` and
`delivery_attempts_total{outcome="failure"}`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "SyncHistogram",
    "add_reported",
    "record_accepted",
    "record_attempt",
    "record_end_to_end",
    "record_outcomes",
    "record_received",
    "record_rejected",
    "render",
    "set_bus_lags",
    "set_partition_lags",
    "set_queue_depth",
]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Ingest commits take milliseconds; delivery spans milliseconds to the max_age of hours.
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DELIVERY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)  # fmt: skip

EVENTS_RECEIVED = Counter(
    "streamctl_events_received", "Events received by a source (after auth).", ["source"],
    registry=REGISTRY,
)  # fmt: skip
EVENTS_ACCEPTED = Counter(
    "streamctl_events_accepted", "Events durably stored and answered 200.", ["source"],
    registry=REGISTRY,
)  # fmt: skip
EVENTS_REJECTED = Counter(
    "streamctl_events_rejected", "Events refused by the listener.", ["source", "reason"],
    registry=REGISTRY,
)  # fmt: skip
INGEST_COMMIT_SECONDS = Histogram(
    "streamctl_ingest_commit_seconds", "From request read to events committed to SQLite.",
    buckets=_FAST_BUCKETS, registry=REGISTRY,
)  # fmt: skip
SYNC_EVENTS = Counter(
    "streamctl_sync_events", "Stage outcomes per sync.", ["sync", "status"], registry=REGISTRY
)
DELIVERY_ATTEMPTS = Counter(
    "streamctl_delivery_attempts", "Delivery attempts per sync, by outcome.", ["sync", "outcome"],
    registry=REGISTRY,
)  # fmt: skip


class SyncHistogram(Collector):
    """A histogram labelled by sync that can also add bucket counts observed in another
    process (`run --workers`: each worker buckets its observations and sends the
    counts, streamctl.monitoring.relay). prometheus_client's Histogram can only
    observe one value at a time, and replaying a worker's observations one by one
    would put per-event work back on the listener, the busiest process."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = (*buckets, math.inf)
        self._counts: dict[str, list[int]] = {}  # per bucket, not cumulative
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe(self, sync: str, values: Iterable[float]) -> None:
        bounds = self.bounds
        with self._lock:
            counts = self._counts.setdefault(sync, [0] * len(bounds))
            total = 0.0
            for value in values:
                counts[bisect_left(bounds, value)] += 1  # `le` is inclusive
                total += value
            self._sums[sync] = self._sums.get(sync, 0.0) + total

    def add(self, sync: str, counts: Sequence[int], total: float) -> None:
        """Bucket counts (as `take` returns them) observed elsewhere, with the same bounds."""
        with self._lock:
            mine = self._counts.setdefault(sync, [0] * len(self.bounds))
            for index, count in enumerate(counts):
                mine[index] += count
            self._sums[sync] = self._sums.get(sync, 0.0) + total

    @property
    def observed(self) -> bool:
        """Anything observed since the last `take`."""
        return bool(self._counts)

    def take(self) -> dict[str, tuple[list[int], float]]:
        """Everything observed since the last `take`, per sync; starts again from zero."""
        with self._lock:
            taken = {sync: (counts, self._sums[sync]) for sync, counts in self._counts.items()}
            self._counts, self._sums = {}, {}
        return taken

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=["sync"])]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["sync"])
        labels = ["+Inf" if math.isinf(b) else repr(float(b)) for b in self.bounds]
        with self._lock:
            for sync, counts in sorted(self._counts.items()):
                cumulative, buckets = 0, []
                for label, count in zip(labels, counts, strict=True):
                    cumulative += count
                    buckets.append((label, float(cumulative)))
                family.add_metric([sync], buckets, self._sums[sync])
        yield family


DELIVERY_REQUEST_SECONDS = SyncHistogram(
    "streamctl_delivery_request_seconds", "Duration of one request to a destination.",
    _DELIVERY_BUCKETS, REGISTRY,
)  # fmt: skip
DELIVERY_LATENCY_SECONDS = SyncHistogram(
    "streamctl_delivery_latency_seconds", "From event received to event delivered.",
    _DELIVERY_BUCKETS, REGISTRY,
)  # fmt: skip
KAFKA_SOURCE_LAG = Gauge(
    "streamctl_kafka_source_lag",
    "Messages of a Kafka source's partition not yet stored: high watermark minus committed.",
    ["source", "topic", "partition"], registry=REGISTRY,
)  # fmt: skip
BUS_LAG = Gauge(
    "streamctl_bus_lag",
    "Messages of a bus topic's partition the workers' group has not yet processed and"
    " committed: high watermark minus committed.",
    ["topic", "partition"], registry=REGISTRY,
)  # fmt: skip
QUEUE_DEPTH = Gauge(
    "streamctl_queue_depth", "Events stored and not yet processed.", registry=REGISTRY
)


def record_received(source: str, events: int) -> None:
    EVENTS_RECEIVED.labels(source).inc(events)


def record_accepted(source: str, events: int, commit_seconds: float) -> None:
    EVENTS_ACCEPTED.labels(source).inc(events)
    INGEST_COMMIT_SECONDS.observe(commit_seconds)


def record_rejected(source: str, reason: str, events: int = 1) -> None:
    """`source` is "" when the write key matched no source."""
    EVENTS_REJECTED.labels(source, reason).inc(events)


def set_partition_lags(
    source: str, lags: Iterable[tuple[str, int, int]], gone: Iterable[tuple[str, int]] = ()
) -> None:
    """A Kafka source's lag now: (topic, partition, lag) of each partition it reads;
    `gone`: (topic, partition) it read before and no longer does (a rebalance)."""
    _set_lags(KAFKA_SOURCE_LAG, (source,), lags, gone)


def set_bus_lags(
    lags: Iterable[tuple[str, int, int]], gone: Iterable[tuple[str, int]] = ()
) -> None:
    """The bus workers' group lag now: (topic, partition, lag); `gone`: partitions no
    longer measured."""
    _set_lags(BUS_LAG, (), lags, gone)


def _set_lags(
    gauge: Gauge,
    labels: tuple[str, ...],
    lags: Iterable[tuple[str, int, int]],
    gone: Iterable[tuple[str, int]],
) -> None:
    """A per-partition lag gauge: the partitions `gone` removed, the others set."""
    for topic, partition in gone:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels, topic, str(partition))
    for topic, partition, lag in lags:
        gauge.labels(*labels, topic, str(partition)).set(lag)


def record_outcomes(sync: str, status: str, events: int = 1) -> None:
    """Count stage outcomes (a `streamctl.core.outcomes.Status` value) of a sync."""
    SYNC_EVENTS.labels(sync, status).inc(events)


def record_attempt(sync: str, *, ok: bool, seconds: float, events: int = 1) -> None:
    """One request to a destination carrying `events` events."""
    DELIVERY_ATTEMPTS.labels(sync, "success" if ok else "failure").inc(events)
    DELIVERY_REQUEST_SECONDS.observe(sync, (seconds,))


def record_end_to_end(sync: str, latencies: Iterable[float]) -> None:
    """Seconds from receipt to delivery, one value per delivered event."""
    DELIVERY_LATENCY_SECONDS.observe(sync, latencies)


def add_reported(
    outcomes: dict[tuple[str, str], int],
    attempts: dict[tuple[str, bool], int],
    requests: dict[str, tuple[list[int], float]],
    latencies: dict[str, tuple[list[int], float]],
) -> None:
    """What a worker process counted (streamctl.monitoring.relay): outcomes and attempted
    events per (sync, status) and (sync, ok), and its histograms' bucket counts."""
    for (sync, status), events in outcomes.items():
        SYNC_EVENTS.labels(sync, status).inc(events)
    for (sync, ok), events in attempts.items():
        DELIVERY_ATTEMPTS.labels(sync, "success" if ok else "failure").inc(events)
    for sync, (counts, total) in requests.items():
        DELIVERY_REQUEST_SECONDS.add(sync, counts, total)
    for sync, (counts, total) in latencies.items():
        DELIVERY_LATENCY_SECONDS.add(sync, counts, total)


def set_queue_depth(read_depth: Callable[[], float]) -> None:
    """Read the queue depth at scrape time (the last registered reader wins)."""
    QUEUE_DEPTH.set_function(read_depth)


def render() -> bytes:
    """The Prometheus text exposition of every streamctl metric."""
    return generate_latest(REGISTRY)
