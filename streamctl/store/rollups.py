"""Per-minute counts of what happened, for the console's charts (docs/console.md).

    refresh(store.rollup_tables)                      # roll up what settled since last time
    series = read_series(store.rollup_tables, since=now - 86400, width=600, sync="to-braze")
    series.totals()["delivered"]                      # the window's sum

(The console calls these through the store: `store.refresh_rollups()`,
`store.read_series(...)`, streamctl.store.console_queries.)

Why rollups: the Overview charts a week of received, delivered, filtered, failed and
archived counts and latency percentiles. Grouping a million deliveries and attempts
by minute took 2-3 s per page (benchmarks/console.py); summing the rollup rows of a
window takes a few milliseconds, whatever the store holds.

`rollups` holds (width, start, sync, metric) -> n at three widths (60 s, 600 s,
3600 s: an hour, a day and a week each drawn from ~60-170 buckets). Only time that
has *settled* (`SETTLE` seconds old: an attempt is recorded with the time it was
sent, up to a request timeout before its commit) is rolled up, each minute exactly
once, `rollup_state.through` saying how far; a window's last minutes are counted
from the raw rows (`live`) on every read. Two refreshers (two consoles, two `run`
nodes on one PostgreSQL store) cannot count a minute twice: a refresher adds its
rows only in the transaction that moves `through` from where it began (SQLite: the
one writer's transaction; PostgreSQL: under the row lock of `rollup_state`); the one
whose `through` moved meanwhile throws its work away. Because rollups are computed
from the tables once settled, they do not care how many processes wrote the rows.

The algorithm is here, once; each backend's SQL is a `RollupTables`: SQLite's
(`SqliteRollups`, below) and PostgreSQL's (streamctl.store.postgres.rollups).

Metrics (sync `*` for the whole store):

| metric | counts | by |
| --- | --- | --- |
| `events` (`*`) | events received (duplicates too) | `events.received_at` |
| `received` | events that reached the sync | `deliveries.created_at` |
| `filtered`, `dropped`, `blocked`, `mapping_error`, `function_error` | deliveries that ended so when created | `deliveries.created_at` |
| `attempts`, `delivered`, `failed` | delivery attempts, by their outcome | `attempts.at` |
| `archived` | deliveries given up on | `deliveries.finished_at` |
| `lat:K` | attempts whose latency fell in bin K (`LATENCY_BINS`) | `attempts.at` |
| `queue` (`*`), `open` | ingest queue depth, open deliveries: the largest sample | when sampled |

A latency percentile is interpolated inside its histogram bin: within the bin's
width (at most half its upper bound), which is what a chart needs.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamctl.store.connection import SqliteConnection

MINUTE = 60
WIDTHS = (60, 600, 3600)
SETTLE = 300.0  # seconds before a minute is rolled up (longer than a request's timeout)
CHUNK = 86400  # seconds of raw rows aggregated at a time by a refresh
OVERALL = "*"
# Upper bounds of the latency histogram's bins, in ms (the last bin has no bound).
LATENCY_BINS = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
    1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000,
)  # fmt: skip
FINAL_AT_CREATION = ("filtered", "dropped", "blocked", "mapping_error", "function_error")
GAUGES = ("queue", "open")

Row = tuple[int, str, str, int]  # (start, sync, metric, n)
WidthRow = tuple[int, int, str, str, int]  # (width, start, sync, metric, n)
Total = tuple[str, str, int, int]  # (sync, metric, sum, largest)


class RollupTables(Protocol):
    """One backend's SQL of the rollups: the raw rows' counts, and the `rollups` and
    `rollup_state` tables."""

    def aggregate(self, since: float, until: float, width: int) -> list[Row]:
        """The metrics of raw rows in [since, until), in buckets of `width` seconds,
        without rows of n = 0."""
        ...

    def rolled_through(self) -> float | None:
        """`rollup_state.through`: None before the first refresh."""
        ...

    def first_moment(self) -> float | None:
        """The earliest time of an event or attempt (None: an empty store)."""
        ...

    def begin(self, through: float) -> float:
        """Set `through` unless another refresher set it first; the `through` now stored."""
        ...

    def add(self, start: float, end: float, rows: Sequence[WidthRow]) -> bool:
        """Add `rows` to the rollups and move `through` from `start` to `end`, in one
        transaction; False (nothing written) if `through` is no longer `start`."""
        ...

    def gauges(self) -> list[tuple[str, str, int]]:
        """(sync, metric, n) now: the ingest queue's depth, each sync's open deliveries."""
        ...

    def keep_largest(self, rows: Sequence[WidthRow]) -> None:
        """Upsert gauge samples, each bucket keeping its largest."""

    def stored(self, width: int, first: int, sync: str | None) -> list[Row]:
        """Rollup rows of `width` from `first` on: of `sync` and `*`, or (None) every
        sync's summed per metric as `*`."""
        ...

    def stored_totals(self, width: int, first: int) -> list[Total]:
        """Per sync and metric, the sum and the largest of the rows from `first` on."""
        ...


def latency_bin_sql() -> str:
    """SQL (both dialects): the `LATENCY_BINS` bin of the column `latency_ms`."""
    cases = " ".join(f"WHEN latency_ms < {bound} THEN {i}" for i, bound in enumerate(LATENCY_BINS))
    return f"CASE WHEN latency_ms IS NULL THEN NULL {cases} ELSE {len(LATENCY_BINS)} END"


def sync_rows(
    sync: str, created: Iterable[Sequence[Any]], attempts: Iterable[Sequence[Any]]
) -> list[Row]:
    """One sync's metrics from its deliveries by creation bucket (start, events, then a
    count per FINAL_AT_CREATION status) and attempts (start, delivered, bin, count)."""
    rows: list[Row] = []
    for start, received, *ended in created:
        rows.append((int(start), sync, "received", int(received)))
        rows.extend(
            (int(start), sync, status, int(n or 0))
            for status, n in zip(FINAL_AT_CREATION, ended, strict=True)
        )
    for start, delivered, latency, n in attempts:
        rows.append((int(start), sync, "attempts", int(n)))
        rows.append((int(start), sync, "delivered" if delivered else "failed", int(n)))
        if latency is not None:
            rows.append((int(start), sync, f"lat:{latency}", int(n)))
    return summed(rows)


def summed(rows: Iterable[Row]) -> list[Row]:
    totals: dict[tuple[int, str, str], int] = defaultdict(int)
    for start, sync, metric, n in rows:
        totals[(start, sync, metric)] += n
    return [(start, sync, metric, n) for (start, sync, metric), n in totals.items()]


# -- refresh ---------------------------------------------------------------------------------


def refresh(tables: RollupTables, now: float | None = None) -> int:
    """Roll up every settled minute not rolled up yet, and sample the gauges.
    Returns the number of minutes rolled up."""
    now = time.time() if now is None else now
    target = math.floor((now - SETTLE) / MINUTE) * MINUTE
    start = tables.rolled_through()
    if start is None:
        first = tables.first_moment()
        start = tables.begin(
            target if first is None else min(target, math.floor(first / MINUTE) * MINUTE)
        )
    minutes = 0
    while start < target:
        end = min(target, start + CHUNK)
        if not tables.add(start, end, _at_every_width(tables.aggregate(start, end, MINUTE))):
            break  # another refresher got there first
        minutes += int((end - start) // MINUTE)
        start = end
    sample_gauges(tables, now)
    return minutes


def _at_every_width(minute_rows: list[Row]) -> list[WidthRow]:
    rows = [(MINUTE, *row) for row in minute_rows]
    for width in WIDTHS[1:]:
        rebucketed = summed((s - s % width, sync, metric, n) for s, sync, metric, n in minute_rows)
        rows.extend((width, *row) for row in rebucketed)
    return rows


def sample_gauges(tables: RollupTables, now: float) -> None:
    """Record the ingest queue's depth and each sync's open deliveries (largest per bucket)."""
    samples = tables.gauges()
    tables.keep_largest(
        sorted(  # one order for every writer: concurrent upserts never deadlock
            (width, int(now // width * width), sync, metric, n)
            for width in WIDTHS
            for sync, metric, n in samples
        )
    )


# -- reading -----------------------------------------------------------------------------------


@dataclass
class Series:
    """Counts per bucket of one sync (or of everything) over a window."""

    width: int
    starts: list[int]
    metrics: dict[str, list[int]] = field(default_factory=dict)

    def values(self, metric: str) -> list[int]:
        return self.metrics.get(metric, [0] * len(self.starts))

    def totals(self) -> dict[str, int]:
        return {
            metric: (max(values) if metric in GAUGES else sum(values))
            for metric, values in self.metrics.items()
        }

    def percentile_series(self, fraction: float) -> list[float | None]:
        bins = self._bins()
        return [
            percentile([counts[i] for counts in bins], fraction) for i in range(len(self.starts))
        ]

    def percentile(self, fraction: float) -> float | None:
        bins = self._bins()
        return percentile([sum(counts) for counts in bins], fraction)

    def _bins(self) -> list[list[int]]:
        return [self.values(f"lat:{k}") for k in range(len(LATENCY_BINS) + 1)]


def percentile(bin_counts: Sequence[int], fraction: float) -> float | None:
    """The latency at `fraction` of a histogram (counts per `LATENCY_BINS` bin), interpolated."""
    total = sum(bin_counts)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for k, count in enumerate(bin_counts):
        if count and seen + count >= rank:
            low = LATENCY_BINS[k - 1] if k else 0
            high = LATENCY_BINS[k] if k < len(LATENCY_BINS) else LATENCY_BINS[-1] * 2
            return round(low + (high - low) * (rank - seen) / count, 1)
        seen += count
    return float(LATENCY_BINS[-1])


def latency_bin(latency_ms: float) -> int:
    """The histogram bin of one latency (what `latency_bin_sql` computes in SQL)."""
    return bisect.bisect_right(LATENCY_BINS, latency_ms)


def read_series(
    tables: RollupTables,
    since: float,
    width: int,
    sync: str | None = None,
    now: float | None = None,
) -> Series:
    """Buckets of `width` (one of WIDTHS) from `since` to now: the rollups, then the raw
    rows of the minutes not rolled up yet. `sync` None: every sync and the whole store."""
    now = time.time() if now is None else now
    first = int(since // width * width)
    starts = list(range(first, int(now // width * width) + 1, width))
    through = tables.rolled_through() or first
    stored = tables.stored(width, first, sync)
    live = tables.aggregate(max(through, first), now + 1, width)
    return _series(width, starts, [*stored, *live], sync)


def _series(width: int, starts: list[int], rows: Iterable[Row], sync: str | None) -> Series:
    index = {start: i for i, start in enumerate(starts)}
    series = Series(width, starts)
    for start, row_sync, metric, n in rows:
        if (
            sync is not None
            and row_sync != sync
            and not (row_sync == OVERALL and metric == "queue")
        ):
            continue
        position = index.get(start)
        if position is None:
            continue
        values = series.metrics.setdefault(metric, [0] * len(starts))
        values[position] = max(values[position], n) if metric in GAUGES else values[position] + n
    return series


def totals_by_sync(
    tables: RollupTables, since: float, width: int, now: float | None = None
) -> dict[str, dict[str, int]]:
    """Each sync's sums over the window (and `*` for the whole store), from the rollups."""
    now = time.time() if now is None else now
    first = int(since // width * width)
    through = tables.rolled_through() or first
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sync, metric, total, largest in tables.stored_totals(width, first):
        totals[sync][metric] += largest if metric in GAUGES else total
    for _start, sync, metric, n in tables.aggregate(max(through, first), now + 1, width):
        current = totals[sync][metric]
        totals[sync][metric] = max(current, n) if metric in GAUGES else current + n
    return {sync: dict(metrics) for sync, metrics in totals.items()}


# -- SQLite ------------------------------------------------------------------------------------


def _bucket(column: str, width: int) -> str:
    return f"CAST({column} / {int(width)} AS INTEGER) * {int(width)}"


_LATENCY_BIN = latency_bin_sql()
_ENDED_AT_CREATION = ", ".join(f"sum(status = '{s}')" for s in FINAL_AT_CREATION)


class SqliteRollups:
    """The rollups of a SQLite store (migration 6), read and written on its connection."""

    def __init__(self, store: SqliteConnection) -> None:
        self.store = store

    def syncs(self) -> list[str]:
        """Every sync with deliveries: one index seek per sync (a DISTINCT would read them all)."""
        found: list[str] = []
        while True:
            row = self.store.row(
                "SELECT min(sync) FROM deliveries WHERE sync > ?", [found[-1] if found else ""]
            )
            if row is None or row[0] is None:
                return found
            found.append(row[0])

    def aggregate(self, since: float, until: float, width: int) -> list[Row]:
        rows: list[Row] = []
        for start, n in self.store.rows(
            f"SELECT {_bucket('received_at', width)}, count(*) FROM events"
            " WHERE received_at >= ? AND received_at < ? GROUP BY 1",
            [since, until],
        ):
            rows.append((start, OVERALL, "events", n))
        for start, sync, n in self.store.rows(
            # By the time of archiving: the planner would rather walk every archived row
            # of the status index (20 ms for an empty window of a million deliveries).
            f"SELECT {_bucket('finished_at', width)}, sync, count(*)"
            " FROM deliveries INDEXED BY deliveries_archived_at"
            " WHERE status = 'archived' AND finished_at >= ? AND finished_at < ? GROUP BY 1, 2",
            [since, until],
        ):
            rows.append((start, sync, "archived", n))
        for sync in self.syncs():
            rows.extend(self._sync_rows(sync, since, until, width))
        return [row for row in rows if row[3]]

    def _sync_rows(self, sync: str, since: float, until: float, width: int) -> list[Row]:
        with self.store.lock:
            created = self.store.rows(
                f"SELECT {_bucket('created_at', width)}, count(DISTINCT event_id),"
                f" {_ENDED_AT_CREATION} FROM deliveries"
                " WHERE sync = ? AND created_at >= ? AND created_at < ? GROUP BY 1",
                [sync, since, until],
            )
            attempts = self.store.rows(
                f"SELECT {_bucket('at', width)}, status = 'delivered', {_LATENCY_BIN}, count(*)"
                " FROM attempts WHERE sync = ? AND at >= ? AND at < ? GROUP BY 1, 2, 3",
                [sync, since, until],
            )
        return sync_rows(sync, created, attempts)

    def rolled_through(self) -> float | None:
        row = self.store.row("SELECT through FROM rollup_state WHERE id = 1")
        return None if row is None else float(row[0])

    def first_moment(self) -> float | None:
        row = self.store.row(
            "SELECT min(m) FROM (SELECT min(received_at) AS m FROM events"
            " UNION ALL SELECT min(at) FROM attempts)"
        )
        return None if row is None or row[0] is None else float(row[0])

    def begin(self, through: float) -> float:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO rollup_state (id, through) VALUES (1, ?) ON CONFLICT DO NOTHING",
                [through],
            )
            (stored,) = conn.execute("SELECT through FROM rollup_state WHERE id = 1").fetchone()
        return float(stored)

    def add(self, start: float, end: float, rows: Sequence[WidthRow]) -> bool:
        with self.store.transaction() as conn:  # the one writer: nobody moves `through` meanwhile
            if self.rolled_through() != start:
                return False
            conn.executemany(
                "INSERT INTO rollups (width, start, sync, metric, n) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET n = n + excluded.n",
                rows,
            )
            conn.execute("UPDATE rollup_state SET through = ? WHERE id = 1", [end])
        return True

    def gauges(self) -> list[tuple[str, str, int]]:
        with self.store.lock:
            (queued,) = self.store.row("SELECT coalesce(sum(events), 0) FROM queue")
            open_now = self.store.rows(
                "SELECT sync, count(*) FROM deliveries WHERE status IN ('pending', 'retrying')"
                " GROUP BY sync"
            )
        return [(OVERALL, "queue", int(queued)), *((s, "open", int(n)) for s, n in open_now)]

    def keep_largest(self, rows: Sequence[WidthRow]) -> None:
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT INTO rollups (width, start, sync, metric, n) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET n = max(n, excluded.n)",
                rows,
            )

    def stored(self, width: int, first: int, sync: str | None) -> list[Row]:
        if sync is None:  # every sync summed in SQL: a week is ~170 rows a metric, not per sync
            return self.store.rows(
                f"SELECT start, '{OVERALL}', metric, sum(n) FROM rollups"
                " WHERE width = ? AND start >= ? GROUP BY start, metric",
                [width, first],
            )
        return self.store.rows(
            "SELECT start, sync, metric, sum(n) FROM rollups"
            " WHERE width = ? AND start >= ? AND sync IN (?, ?) GROUP BY 1, 2, 3",
            [width, first, sync, OVERALL],
        )

    def stored_totals(self, width: int, first: int) -> list[Total]:
        return self.store.rows(
            "SELECT sync, metric, sum(n), max(n) FROM rollups WHERE width = ? AND start >= ?"
            " GROUP BY 1, 2",
            [width, first],
        )
