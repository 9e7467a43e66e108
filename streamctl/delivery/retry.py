"""`streamctl errors retry`: archived deliveries back to pending, and sent again.

    outcome = retry_archived(project, ErrorFilter(syncs=("to-braze",)), ids=(), send=True)
    outcome.requeued, outcome.delivered, outcome.archived

Each delivery goes back to the sync that failed it only, so deliveries that
succeeded for other syncs are never sent twice. With `send`, the deliveries are
sent now by a `Runtime` of their syncs and the call returns their outcome;
otherwise a running `streamctl run` picks them up (`Store.take_requeued`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from contextlib import closing
from dataclasses import dataclass

from streamctl.core.errors import UsageError
from streamctl.core.model import Project
from streamctl.delivery.runtime import Runtime
from streamctl.store import Store
from streamctl.store.backend import open_store
from streamctl.store.queries import ErrorFilter


@dataclass(frozen=True)
class RetryOutcome:
    requeued: int
    syncs: list[str]  # the syncs the requeued deliveries belong to
    delivered: int = 0  # with `send`: how many ended delivered, and archived again
    archived: int = 0


def retry_archived(
    project: Project, filters: ErrorFilter, ids: Collection[int], *, send: bool
) -> RetryOutcome | None:
    """Requeue the archived deliveries matching `filters` (and `ids`, when given) and,
    with `send`, deliver them now; None when none matches."""
    with closing(open_store(project)) as store:
        chosen = store.archived_ids(filters)
        if ids:
            wanted = set(ids)
            chosen = [i for i in chosen if i in wanted]
        if not chosen:
            return None
        requeued = store.requeue(chosen)
        affected = store.syncs_of_deliveries(chosen)
        if not send:
            return RetryOutcome(requeued, affected)
        known = {s.name for s in project.syncs}
        missing = [name for name in affected if name not in known]
        if missing:
            msg = f"sync {missing[0]!r} is no longer in the project: cannot send its deliveries"
            raise UsageError(msg)
        asyncio.run(_deliver(project, store, affected))
        outcome = store.delivery_statuses(chosen)
    return RetryOutcome(requeued, affected, outcome.get("delivered", 0), outcome.get("archived", 0))


async def _deliver(project: Project, store: Store, syncs: list[str]) -> None:
    async with Runtime(project, store, syncs=syncs) as runtime:
        await runtime.drain()
