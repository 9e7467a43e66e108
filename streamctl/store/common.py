"""What both stores do alike, written once: the read side (`streamctl.store.queries`,
the same SQL on SQLite and PostgreSQL), `record_results`, and the sources' own records
(rejected input, Kafka consumer lag), written through `transaction()` with `?`
placeholders on either.

    class SqliteStore(SqliteConnection, CommonOperations): ...
    class PostgresStore(CommonOperations): ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamctl.core.outcomes import EventResult
from streamctl.core.rows import (
    DuplicateRow,
    PartitionLag,
    RecordedResults,
    RejectedInput,
    encode_results,
)
from streamctl.store import queries
from streamctl.store.base import Store
from streamctl.store.connection import SqlReader
from streamctl.store.queries import ErrorFilter


class CommonOperations:
    """Mixed into each store; `self` is the store (a `SqlReader` that records)."""

    def record_results(
        self: Store,
        results: Sequence[EventResult],
        *,
        destinations: Mapping[str, str],
        duplicates: Sequence[DuplicateRow] = (),
        now: float | None = None,
    ) -> RecordedResults:
        """`record_encoded` for pipeline results not yet flattened (tests, small callers)."""
        source = results[0].source if results else ""
        return self.record_encoded(
            encode_results(source, results),
            destinations=destinations,
            duplicates=duplicates,
            now=now,
        )

    def list_errors(self: SqlReader, filters: ErrorFilter) -> list[dict[str, Any]]:
        return queries.list_errors(self, filters)

    def error_detail(self: SqlReader, error_id: str) -> dict[str, Any] | None:
        return queries.error_detail(self, error_id)

    def archived_ids(self: SqlReader, filters: ErrorFilter) -> list[int]:
        return queries.archived_ids(self, filters)

    def sync_status(
        self: SqlReader, since: float, syncs: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        return queries.sync_status(self, since, syncs)

    def explain(self: SqlReader, message_id: str) -> list[dict[str, Any]]:
        return queries.explain(self, message_id)

    # -- the sources' own records ---------------------------------------------------------

    def record_rejected(self: SqlReader, rejected: Sequence[RejectedInput]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO rejected_input (source, origin, reason, excerpt, at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(r.source, r.origin, r.reason, r.excerpt, r.at) for r in rejected],
            )

    def forget_rejected(self: SqlReader, before: float) -> int:
        with self.transaction() as db:
            deleted: int = db.execute("DELETE FROM rejected_input WHERE at < ?", [before]).rowcount
        return deleted

    def record_lag(self: SqlReader, source: str, lags: Sequence[PartitionLag]) -> None:
        """The rows of `source` become `lags`. Several processes may write the same rows
        at once (bus workers each measure the group's lag): an upsert, in one order,
        then the rows of partitions not among `lags` deleted."""
        rows = sorted((g.topic, g.partition, g.end_offset, g.committed, g.updated_at)
                      for g in lags)  # fmt: skip
        kept = {(topic, partition) for topic, partition, *_ in rows}
        with self.transaction() as db:
            if rows:
                db.executemany(
                    "INSERT INTO source_lag"
                    " (source, topic, partition_id, end_offset, committed, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (source, topic, partition_id) DO UPDATE SET"
                    " end_offset = excluded.end_offset, committed = excluded.committed,"
                    " updated_at = excluded.updated_at",
                    [(source, *row) for row in rows],
                )
            held = db.execute(
                "SELECT topic, partition_id FROM source_lag WHERE source = ?", [source]
            ).fetchall()
            gone = [(source, t, p) for t, p in held if (t, p) not in kept]
            if gone:
                db.executemany(
                    "DELETE FROM source_lag WHERE source = ? AND topic = ? AND partition_id = ?",
                    gone,
                )

    def partition_lags(self: SqlReader) -> list[PartitionLag]:
        return queries.partition_lags(self)

    def rejected_counts(self: SqlReader, since: float) -> dict[str, int]:
        return queries.rejected_counts(self, since)
