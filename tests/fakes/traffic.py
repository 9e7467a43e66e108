"""Write realistic traffic into a real SqliteStore: received events, their decisions, attempts.

traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
pending = traffic.receive(3, at=1000.0)            # 3 events, 3 pending deliveries
traffic.attempt(pending, ok=False, at=1001.0)      # one failed attempt each -> retrying
traffic.attempt(pending, ok=True, at=1002.0)       # delivered
traffic.receive(1, at=1003.0, status=Status.FILTERED)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from streamctl.core.outcomes import Decision, EventResult, Status
from streamctl.core.rows import AttemptRecord, PendingDelivery
from streamctl.store import SqliteStore


@dataclass
class Traffic:
    store: SqliteStore
    source: str
    sync: str
    destination: str
    _ids: itertools.count = field(default_factory=itertools.count)

    def receive(
        self, count: int, *, at: float, status: Status = Status.PENDING
    ) -> list[PendingDelivery]:
        results = []
        for _ in range(count):
            message_id = f"m-{self.sync}-{next(self._ids)}"
            event = {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": message_id}
            decision = Decision(
                message_id, self.sync, status, event_type="custom", payload={"name": "Signed Up"}
            )
            results.append(EventResult(message_id, self.source, event, decisions=[decision]))
        recorded = self.store.record_results(
            results, destinations={self.sync: self.destination}, now=at
        )
        return recorded.pending

    def attempt(
        self,
        deliveries: list[PendingDelivery],
        *,
        ok: bool,
        at: float,
        latency_ms: float = 20.0,
        give_up: bool = False,
    ) -> None:
        records = []
        for delivery in deliveries:
            delivery.attempts += 1
            if delivery.first_attempt_at is None:
                delivery.first_attempt_at = at
            new_status = (
                Status.DELIVERED if ok else (Status.ARCHIVED if give_up else Status.RETRYING)
            )
            records.append(
                AttemptRecord(
                    delivery_ids=[delivery.id],
                    sync=self.sync,
                    destination=self.destination,
                    at=at,
                    outcome="delivered" if ok else "retry",
                    status_code=200 if ok else 503,
                    latency_ms=latency_ms,
                    error=None if ok else "HTTP 503",
                    response=None,
                    retry_after=None,
                    new_status=new_status,
                    attempts=delivery.attempts,
                    next_attempt_at=None if ok or give_up else at + 1,
                    first_attempt_at=delivery.first_attempt_at,
                )
            )
        self.store.record_attempts(records)
