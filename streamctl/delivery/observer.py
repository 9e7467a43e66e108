"""The runtime's report hook: what it decides and sends, told to whoever watches.

    runtime = Runtime(project, store, observer=DeliveryObserver())   # streamctl.monitoring

The runtime records everything in SQLite; `streamctl run` also wants the same facts
as they happen (`/metrics`, `streamctl tail`). The Runtime and its DeliveryEngine
call a `RuntimeObserver` at four points, after the fact and on the thread that did
the work:

- `on_decisions(results)`: the pipeline decided these events (the pipeline thread);
- `on_offered(deliveries)`: these PENDING deliveries are recorded and handed to lanes;
- `on_attempts(sync, records)`: attempts of one sync were made (usually one batch);
- `on_archived(sync, deliveries, reason)`: archived without an attempt (e.g. too old).

Reporting is best effort: an observer that raises is logged and delivery goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from streamctl.core.outcomes import EventResult
    from streamctl.core.rows import AttemptRecord, PendingDelivery

log = logging.getLogger(__name__)


class RuntimeObserver(Protocol):
    def on_decisions(self, results: Sequence[EventResult]) -> None: ...

    def on_offered(self, deliveries: Sequence[PendingDelivery]) -> None: ...

    def on_attempts(self, sync: str, records: Sequence[AttemptRecord]) -> None: ...

    def on_archived(
        self, sync: str, deliveries: Sequence[PendingDelivery], reason: str
    ) -> None: ...


class GuardedObserver:
    """An observer whose failures are logged, never raised into delivery; None observes nothing."""

    def __init__(self, observer: RuntimeObserver | None) -> None:
        self.inner = observer

    def on_decisions(self, results: Sequence[EventResult]) -> None:
        if self.inner is not None:
            try:
                self.inner.on_decisions(results)
            except Exception:
                log.exception("reporting decisions failed")

    def on_offered(self, deliveries: Sequence[PendingDelivery]) -> None:
        if self.inner is not None:
            try:
                self.inner.on_offered(deliveries)
            except Exception:
                log.exception("reporting offered deliveries failed")

    def on_attempts(self, sync: str, records: Sequence[AttemptRecord]) -> None:
        if self.inner is not None:
            try:
                self.inner.on_attempts(sync, records)
            except Exception:
                log.exception("reporting attempts of %s failed", sync)

    def on_archived(self, sync: str, deliveries: Sequence[PendingDelivery], reason: str) -> None:
        if self.inner is not None:
            try:
                self.inner.on_archived(sync, deliveries, reason)
            except Exception:
                log.exception("reporting archived deliveries of %s failed", sync)
