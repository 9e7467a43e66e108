"""What both stores do alike, written once: the read side (`streamctl.store.queries`,
the same SQL on SQLite and PostgreSQL) and `record_results`.

    class SqliteStore(SqliteConnection, CommonOperations): ...
    class PostgresStore(CommonOperations): ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamctl.core.outcomes import EventResult
from streamctl.core.rows import DuplicateRow, RecordedResults, encode_results
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
