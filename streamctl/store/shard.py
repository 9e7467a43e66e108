"""Which share of a SQLite store's work one of `run --workers N`'s processes does.

    store = SqliteStore.open(path).for_shard(Shard(1, 2))   # worker 1 of 2

Worker k of n claims the queue rows whose id is k-1 modulo n, records its
deliveries with `owner = k`, and reads back (resumes, takes requeued) only the open
deliveries it owns. Deliveries with no owner in 1..n (written by a single-process
`run`, by `replay`, or by a run with more workers) are shared out by id, the same
way. The assignment is a function of the ids, so each queued event and each open
delivery has exactly one worker without a claim to record or a lease to renew: a
worker killed with SIGKILL is restarted by the listener under the same number and
takes its own unacknowledged rows and open deliveries back (`rewind`, then the
lanes' read from the store). PostgreSQL shares work between any number of
processes with leases instead (streamctl.store.postgres.leases).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int  # 1..count
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            msg = f"shard {self.index} of {self.count}: the index must be in 1..{self.count}"
            raise ValueError(msg)

    def queue_rows(self) -> str:
        """SQL: the `queue` rows this worker claims (integers only: safe to format in)."""
        return f"id % {self.count} = {self.index - 1}"

    def deliveries(self) -> str:
        """SQL: the `deliveries` rows this worker resumes and takes when requeued."""
        n, k = self.count, self.index
        return f"(CASE WHEN owner BETWEEN 1 AND {n} THEN owner ELSE id % {n} + 1 END) = {k}"
