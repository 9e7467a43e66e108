"""Reporting what the delivery runtime decides and sends, to Prometheus and the live feed.

    runtime = Runtime(project, store, observer=DeliveryObserver())

The runtime (streamctl.delivery) records everything in SQLite; `streamctl run` also
wants the same facts as they happen, for `/metrics` and `streamctl tail`. The
`DeliveryObserver` is the runtime's `RuntimeObserver` (streamctl.delivery.observer)
for both:

- `on_decisions(results)` -> every Decision: `sync_events_total{status}` and a feed
  outcome (blocked, dropped, filtered, mapping_error, duplicate, pending ...);
- `on_offered(deliveries)` -> remembers each delivery's messageId and creation time
  (bounded), so attempts can be reported by messageId;
- `on_attempts(sync, records)` -> `delivery_attempts_total`,
  `delivery_request_seconds`, `delivery_latency_seconds` (recorded -> delivered) and
  the delivered / retrying / archived outcomes;
- `on_archived(sync, deliveries, reason)` -> archived without an attempt.

Both ends are pluggable: in a worker process of `run --workers N` they are a
`streamctl.monitoring.relay.WorkerRelay`, which carries the same facts to the
listener's process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from streamctl.core.outcomes import EventResult, Status
from streamctl.monitoring import metrics
from streamctl.monitoring.feed import FEED

REMEMBERED_DELIVERIES = 200_000  # delivery id -> (messageId, created_at), oldest forgotten first


class Counting(Protocol):
    """Where counts go: the module streamctl.monitoring.metrics, or a worker's relay."""

    def record_outcomes(self, sync: str, status: str, events: int = 1) -> None: ...

    def record_attempt(self, sync: str, *, ok: bool, seconds: float, events: int = 1) -> None: ...

    def record_end_to_end(self, sync: str, latencies: Iterable[float]) -> None: ...


class Publishing(Protocol):
    """Where outcomes go for `tail`: the live feed FEED, or a worker's relay."""

    @property
    def active(self) -> bool: ...

    def publish_outcome(
        self, *, sync: str, message_id: str, status: str, stage: str | None = None, **details: Any
    ) -> None: ...


class DeliveryObserver:
    """The RuntimeObserver of `streamctl run`: Prometheus metrics and the live feed."""

    def __init__(
        self,
        limit: int = REMEMBERED_DELIVERIES,
        *,
        counts: Counting = metrics,
        feed: Publishing = FEED,
    ) -> None:
        self._deliveries: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()
        self.counts = counts
        self.feed = feed

    def on_decisions(self, results: Sequence[EventResult]) -> None:
        counts: dict[tuple[str, Status], int] = {}  # a Status hashes as its str: no `.value`
        publish = self.feed.active
        for result in results:
            for decision in result.decisions:
                key = (decision.sync, decision.status)
                counts[key] = counts.get(key, 0) + 1
                if publish:
                    self.feed.publish_outcome(
                        sync=decision.sync,
                        message_id=decision.message_id,
                        status=decision.status.value,
                        stage=decision.stage.value,
                        event_type=decision.event_type,
                        error=decision.error,
                    )
        for (sync, status), count in counts.items():
            self.counts.record_outcomes(sync, status.value, count)

    def on_offered(self, deliveries: Sequence[Any]) -> None:
        with self._lock:
            remembered = self._deliveries
            for delivery in deliveries:
                remembered[delivery.id] = (delivery.message_id, delivery.created_at)
            while len(remembered) > self._limit:
                remembered.popitem(last=False)

    def on_attempts(self, sync: str, records: Sequence[Any]) -> None:
        """AttemptRecords of one sync (streamctl.store.db), usually one batch's worth."""
        publish = self.feed.active
        statuses: dict[str, int] = {}
        requests: dict[tuple[bool, float], int] = {}  # a batch's records share one request
        latencies: list[float] = []
        for record in records:
            status = record.new_status.value
            count = len(record.delivery_ids)
            statuses[status] = statuses.get(status, 0) + count
            ok = record.outcome == "delivered"
            key = (ok, record.latency_ms)
            requests[key] = requests.get(key, 0) + count
            answered = record.at + record.latency_ms / 1000.0
            ids = record.delivery_ids
            known = self._settle_all(ids, final=status != "retrying")
            if ok:
                latencies += [max(0.0, answered - k[1]) for k in known if k is not None]
            if publish:
                for delivery_id, found in zip(ids, known, strict=True):
                    self.feed.publish_outcome(
                        sync=sync,
                        message_id=found[0] if found else f"delivery:{delivery_id}",
                        status=status,
                        stage="delivery",
                        delivery_id=delivery_id,
                        attempt=record.attempts,
                        status_code=record.status_code,
                        error=record.error,
                        latency_ms=round(record.latency_ms, 2),
                    )
        for status, count in statuses.items():
            self.counts.record_outcomes(sync, status, count)
        for (ok, latency_ms), count in requests.items():
            self.counts.record_attempt(sync, ok=ok, seconds=latency_ms / 1000.0, events=count)
        if latencies:
            self.counts.record_end_to_end(sync, latencies)

    def on_archived(self, sync: str, deliveries: Sequence[Any], reason: str) -> None:
        self.counts.record_outcomes(sync, Status.ARCHIVED.value, len(deliveries))
        for delivery in deliveries:
            self._settle(delivery.id, final=True)
            if self.feed.active:
                self.feed.publish_outcome(
                    sync=sync,
                    message_id=delivery.message_id,
                    status=Status.ARCHIVED.value,
                    stage="delivery",
                    delivery_id=delivery.id,
                    error=reason,
                )

    def _settle_all(
        self, delivery_ids: Sequence[int], *, final: bool
    ) -> list[tuple[str, float] | None]:
        """(messageId, created_at) of each delivery offered (None: not remembered), under
        one lock: this runs for every event delivered."""
        with self._lock:
            take = self._deliveries.pop if final else self._deliveries.get
            return [take(delivery_id, None) for delivery_id in delivery_ids]

    def _settle(self, delivery_id: int, *, final: bool) -> tuple[str, float | None]:
        with self._lock:
            known = (
                self._deliveries.pop(delivery_id, None)
                if final
                else self._deliveries.get(delivery_id)
            )
        return known if known is not None else (f"delivery:{delivery_id}", None)
