"""The console's rollups on PostgreSQL: streamctl.store.rollups' `RollupTables` in its SQL.

    tables = PostgresRollups(store)
    refresh(tables)                           # streamctl.store.rollups: the algorithm, once

The tables are SQLite's (migration 3 here): `rollups` (width, start, sync, metric) -> n
and `rollup_state`'s one row. Several `run` nodes (and consoles) refresh at once:

- rolled-up minutes: `add` locks `rollup_state`'s row (`FOR UPDATE`) before it looks
  at `through`, so of two refreshers that aggregated the same minutes, the second
  waits for the first's commit, finds `through` moved and writes nothing;
- gauges: upserts keeping the largest (`greatest`), rows in one sorted order, so two
  nodes sampling at once never deadlock and the bucket keeps the larger sample.

Each statement groups in the database; the rows of a chunk go back in one statement
(`unnest` of five arrays), not a round trip per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from streamctl.store.postgres.leases import Connection
from streamctl.store.rollups import (
    FINAL_AT_CREATION,
    OVERALL,
    Row,
    Total,
    WidthRow,
    latency_bin_sql,
    sync_rows,
)


class Database(Protocol):
    """What the rollups ask of the PostgreSQL store (`PostgresStore`)."""

    def pg_transaction(self, durable: bool = False) -> AbstractContextManager[Connection]: ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


def _bucket(column: str, width: int) -> str:
    return f"floor({column} / {int(width)})::bigint * {int(width)}"


_LATENCY_BIN = latency_bin_sql()
_ENDED_AT_CREATION = ", ".join(f"count(*) FILTER (WHERE status = '{s}')" for s in FINAL_AT_CREATION)
# Every sync with deliveries, one index seek each (a loose index scan: DISTINCT would
# read every row of deliveries_sync_created).
_SYNCS = """
WITH RECURSIVE found(sync) AS (
    (SELECT min(sync) FROM deliveries)
    UNION ALL
    SELECT (SELECT min(sync) FROM deliveries WHERE sync > found.sync)
    FROM found WHERE found.sync IS NOT NULL
)
SELECT sync FROM found WHERE sync IS NOT NULL
"""
_UPSERT = (
    "INSERT INTO rollups (width, start, sync, metric, n)"
    " SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::text[], %s::text[], %s::bigint[])"
    " ON CONFLICT (width, start, sync, metric) DO UPDATE SET n = {}"
)


class PostgresRollups:
    """The rollups of a PostgreSQL store, on its pool."""

    def __init__(self, store: Database) -> None:
        self.store = store

    def aggregate(self, since: float, until: float, width: int) -> list[Row]:
        window = [since, until]
        rows: list[Row] = []
        with self.store.pg_transaction() as conn:
            events = conn.execute(
                f"SELECT {_bucket('received_at', width)}, count(*) FROM events"
                " WHERE received_at >= %s AND received_at < %s GROUP BY 1",
                window,
            ).fetchall()
            rows.extend((int(start), OVERALL, "events", int(n)) for start, n in events)
            archived = conn.execute(
                f"SELECT {_bucket('finished_at', width)}, sync, count(*) FROM deliveries"
                " WHERE status = 'archived' AND finished_at >= %s AND finished_at < %s"
                " GROUP BY 1, 2",
                window,
            ).fetchall()
            rows.extend((int(start), sync, "archived", int(n)) for start, sync, n in archived)
            for (sync,) in conn.execute(_SYNCS).fetchall():
                created = conn.execute(
                    f"SELECT {_bucket('created_at', width)}, count(DISTINCT event_id),"
                    f" {_ENDED_AT_CREATION} FROM deliveries"
                    " WHERE sync = %s AND created_at >= %s AND created_at < %s GROUP BY 1",
                    [sync, *window],
                ).fetchall()
                attempts = conn.execute(
                    f"SELECT {_bucket('at', width)}, status = 'delivered', {_LATENCY_BIN},"
                    " count(*) FROM attempts WHERE sync = %s AND at >= %s AND at < %s"
                    " GROUP BY 1, 2, 3",
                    [sync, *window],
                ).fetchall()
                rows.extend(sync_rows(sync, created, attempts))
        return [row for row in rows if row[3]]

    def rolled_through(self) -> float | None:
        row = self.store.row("SELECT through FROM rollup_state WHERE id = 1")
        return None if row is None else float(row[0])

    def first_moment(self) -> float | None:
        row = self.store.row(
            "SELECT least((SELECT min(received_at) FROM events), (SELECT min(at) FROM attempts))"
        )
        return None if row is None or row[0] is None else float(row[0])

    def begin(self, through: float) -> float:
        with self.store.pg_transaction() as conn:
            conn.execute(
                "INSERT INTO rollup_state (id, through) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
                [through],
            )
            row = conn.execute("SELECT through FROM rollup_state WHERE id = 1").fetchone()
        assert row is not None
        return float(row[0])

    def add(self, start: float, end: float, rows: Sequence[WidthRow]) -> bool:
        with self.store.pg_transaction() as conn:
            # The row lock: a refresher that got here first holds it until its commit,
            # and this transaction then reads the `through` it wrote.
            row = conn.execute(
                "SELECT through FROM rollup_state WHERE id = 1 FOR UPDATE"
            ).fetchone()
            if row is None or float(row[0]) != start:
                return False
            if rows:
                conn.execute(_UPSERT.format("rollups.n + excluded.n"), _columns(rows))
            conn.execute("UPDATE rollup_state SET through = %s WHERE id = 1", [end])
        return True

    def gauges(self) -> list[tuple[str, str, int]]:
        with self.store.pg_transaction() as conn:
            queued = conn.execute("SELECT coalesce(sum(events), 0) FROM queue").fetchone()
            open_now = conn.execute(
                "SELECT sync, count(*) FROM deliveries WHERE status IN ('pending', 'retrying')"
                " GROUP BY sync"
            ).fetchall()
        depth = int(queued[0]) if queued else 0
        return [(OVERALL, "queue", depth), *((s, "open", int(n)) for s, n in open_now)]

    def keep_largest(self, rows: Sequence[WidthRow]) -> None:
        with self.store.pg_transaction() as conn:
            conn.execute(_UPSERT.format("greatest(rollups.n, excluded.n)"), _columns(rows))

    def stored(self, width: int, first: int, sync: str | None) -> list[Row]:
        if sync is None:  # every sync summed in SQL: a week is ~170 rows a metric
            found = self.store.rows(
                f"SELECT start, '{OVERALL}', metric, sum(n) FROM rollups"
                " WHERE width = ? AND start >= ? GROUP BY start, metric",
                [width, first],
            )
        else:
            found = self.store.rows(
                "SELECT start, sync, metric, sum(n) FROM rollups"
                " WHERE width = ? AND start >= ? AND sync IN (?, ?) GROUP BY 1, 2, 3",
                [width, first, sync, OVERALL],
            )
        return [(int(start), s, metric, int(n)) for start, s, metric, n in found]

    def stored_totals(self, width: int, first: int) -> list[Total]:
        found = self.store.rows(
            "SELECT sync, metric, sum(n), max(n) FROM rollups WHERE width = ? AND start >= ?"
            " GROUP BY 1, 2",
            [width, first],
        )
        return [(sync, metric, int(total), int(largest)) for sync, metric, total, largest in found]


def _columns(rows: Sequence[WidthRow]) -> list[list[object]]:
    """The rows as five arrays (width, start, sync, metric, n), for `unnest`."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 5
