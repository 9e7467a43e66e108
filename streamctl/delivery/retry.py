"""Sending archived deliveries again: `streamctl errors retry` and the console's "retry".

    chosen = retry_candidates(store, ErrorFilter(syncs=("to-braze",)), ids=[12, 13])
    result = requeue(store, chosen)                     # a running `run` sends them
    result = await retry_now(project, store, chosen)    # or send them here and wait

Each delivery goes back to pending for its own sync only: deliveries that got through
for other syncs are never sent twice. A requeued delivery keeps its attempt history;
its attempt count and `max_age` start over. A running `streamctl run` picks requeued
deliveries up within a second (`Store.take_requeued`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from streamctl.core.errors import UsageError
from streamctl.core.model import Project
from streamctl.store import Store
from streamctl.store.queries import ErrorFilter


@dataclass(frozen=True)
class RetryResult:
    ids: tuple[int, ...]  # the deliveries chosen
    requeued: int
    syncs: tuple[str, ...]
    outcomes: dict[str, int] = field(default_factory=dict)  # status -> count, once sent

    @property
    def archived_again(self) -> int:
        return self.outcomes.get("archived", 0)


def retry_candidates(
    store: Store, filters: ErrorFilter, ids: Sequence[int] | None = None
) -> list[int]:
    """Archived deliveries matching `filters` (and among `ids`, when given) that can be sent
    again: those with a payload (a mapping error or a blocked event never has one)."""
    chosen = store.archived_ids(filters)
    if ids:
        wanted = set(ids)
        chosen = [i for i in chosen if i in wanted]
    return chosen


def requeue(store: Store, ids: Sequence[int]) -> RetryResult:
    """Put the deliveries back to pending, for a running `streamctl run` to send."""
    if not ids:
        return RetryResult((), 0, ())
    requeued = store.requeue(ids)
    return RetryResult(tuple(ids), requeued, tuple(store.syncs_of(ids)))


async def retry_now(project: Project, store: Store, ids: Sequence[int]) -> RetryResult:
    """Requeue the deliveries and send them from this process; returns their outcomes."""
    from streamctl.delivery.runtime import Runtime

    queued = requeue(store, ids)
    if not queued.requeued:
        return queued
    known = {s.name for s in project.syncs}
    missing = [name for name in queued.syncs if name not in known]
    if missing:
        msg = f"sync {missing[0]!r} is no longer in the project: cannot send its deliveries"
        raise UsageError(msg)
    async with Runtime(project, store, syncs=list(queued.syncs)) as runtime:
        await runtime.drain()
    return RetryResult(queued.ids, queued.requeued, queued.syncs, store.statuses_of(ids))
