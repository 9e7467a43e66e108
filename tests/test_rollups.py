"""Rollups (streamctl.store.rollups): the console's counts equal the raw rows' counts, on
SQLite and on PostgreSQL alike, and PostgreSQL's with several writers and refreshers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streamctl.core.outcomes import STAGE_OF, Status
from streamctl.core.rows import AttemptRecord, DecisionRow, EncodedResults, EventRow
from streamctl.store.backend import open_location
from streamctl.store.base import ConsoleStore
from streamctl.store.rollups import LATENCY_BINS, SETTLE, RollupTables, latency_bin, percentile

NOW = 1_800_000_000.0  # a fixed clock, minute-aligned
DAY = 86400


def record(
    store: ConsoleStore,
    at: float,
    sync: str,
    statuses: list[Status],
    latency: float,
    node: str = "",
) -> None:
    """One batch at `at`: an event per status; sent ones get one attempt of `latency` ms."""
    encoded = EncodedResults("web")
    for k, final in enumerate(statuses):
        message_id = f"{node}{sync}-{at}-{k}"
        encoded.events.append(
            EventRow(message_id, orjson.dumps({"messageId": message_id}).decode(), None)
        )
        sent = final in (Status.DELIVERED, Status.ARCHIVED)
        recorded = Status.PENDING if sent else final
        payload = "{}" if sent else None
        encoded.decisions.append(
            DecisionRow(k, message_id, sync, "custom", recorded.value, STAGE_OF[recorded].value, None, "u",
             payload)
        )  # fmt: skip
    result = store.record_encoded(encoded, destinations={sync: "hook"}, now=at)
    sent_statuses = [s for s in statuses if s in (Status.DELIVERED, Status.ARCHIVED)]
    store.record_attempts(
        [
            AttemptRecord(
                [delivery.id], sync, "hook", at + 1, "delivered" if ok else "failed",
                200 if ok else 500, latency, None, None, None, final, 1, None, at + 1,
            )
            for delivery, final in zip(result.pending, sent_statuses, strict=True)
            for ok in [final is Status.DELIVERED]
        ]
    )  # fmt: skip


def history(store: ConsoleStore, node: str = "") -> None:
    """Batches before and inside the last day (rolled up) and one not settled yet."""
    for hours_ago in (30, 20, 5, 2):
        at = NOW - hours_ago * 3600 + 17
        record(store, at, "a", [Status.DELIVERED] * 3, 40, node)
        record(store, at, "b", [Status.DELIVERED, Status.ARCHIVED, Status.FILTERED], 250, node)
    record(store, NOW - 60, "a", [Status.DELIVERED, Status.FILTERED], 40, node)


def location(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "state.db")


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's location: a SQLite file, or a fresh PostgreSQL database."""
    return location(request.param, tmp_path, request)


@pytest.fixture
def store(where: str) -> Iterator[ConsoleStore]:
    opened = open_location(where)
    try:
        history(opened)
        yield opened
    finally:
        opened.close()


def raw_totals(tables: RollupTables, since: float) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for _start, sync, metric, n in tables.aggregate(since, NOW + 1, 600):
        totals[(sync, metric)] = totals.get((sync, metric), 0) + n
    return totals


def test_rolled_up_and_live_counts_add_up_to_the_raw_rows(store):
    assert store.refresh_rollups(NOW) > 0
    assert store.rollup_tables.rolled_through() == NOW - SETTLE
    since = NOW - DAY
    expected = raw_totals(store.rollup_tables, since - since % 600)
    totals = store.totals_by_sync(since, 600, now=NOW)
    for (sync, metric), n in expected.items():
        assert totals[sync][metric] == n, (sync, metric)
    assert totals["a"]["delivered"] == 3 * 3 + 1  # three settled batches and the live one
    assert totals["b"]["archived"] == 3 and totals["b"]["filtered"] == 3
    assert totals["*"]["events"] == 3 * 6 + 2


def test_a_second_refresh_counts_nothing_twice(store):
    store.refresh_rollups(NOW)
    before = store.totals_by_sync(NOW - 2 * DAY, 3600, now=NOW)
    assert store.refresh_rollups(NOW) == 0
    store.refresh_rollups(NOW + 120)  # two more minutes settle: nothing new in them
    assert store.totals_by_sync(NOW - 2 * DAY, 3600, now=NOW) == before


class Overtaken:
    """`tables`, except that while it aggregates, another refresher (another process's
    connection) rolls the same minutes up and finishes first."""

    def __init__(self, tables: RollupTables, where: str) -> None:
        self.tables = tables
        self.where = where
        self.overtaken = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.tables, name)

    def aggregate(self, since: float, until: float, width: int) -> list[tuple[int, str, str, int]]:
        rows = self.tables.aggregate(since, until, width)
        if not self.overtaken:
            self.overtaken = True
            other = open_location(self.where)
            try:
                other.refresh_rollups(NOW)
            finally:
                other.close()
        return rows


def test_a_refresher_that_was_overtaken_discards_its_work(store, where):
    from streamctl.store.rollups import refresh

    overtaken = Overtaken(store.rollup_tables, where)
    refresh(overtaken, NOW)  # type: ignore[arg-type]
    assert overtaken.overtaken
    expected = raw_totals(store.rollup_tables, NOW - 2 * DAY)
    totals = store.totals_by_sync(NOW - 2 * DAY, 600, now=NOW)
    assert {(sync, metric): totals[sync][metric] for sync, metric in expected} == expected


def test_series_buckets_and_latency_percentiles(store):
    store.refresh_rollups(NOW)
    series = store.read_series(NOW - DAY, 3600, sync="b", now=NOW)
    assert len(series.starts) == 25
    assert sum(series.values("received")) == 3 * 3
    assert series.percentile(0.5) is not None and 200 <= series.percentile(0.5) <= 300
    hour_of = (NOW - 5 * 3600 + 17) // 3600 * 3600
    assert series.values("attempts")[series.starts.index(int(hour_of))] == 2


def test_postgres_figures_equal_sqlite_figures_for_the_same_events(tmp_path, request):
    figures = []
    for kind in ("sqlite", "postgres"):
        opened = open_location(location(kind, tmp_path, request))
        try:
            history(opened)
            opened.refresh_rollups(NOW)
            figures.append(
                {
                    "raw": sorted(opened.rollup_tables.aggregate(NOW - 2 * DAY, NOW + 1, 60)),
                    "stored": {
                        width: sorted(opened.rollup_tables.stored(width, 0, None))
                        for width in (60, 600, 3600)
                    },
                    "totals": {
                        (width, since): opened.totals_by_sync(NOW - since, width, now=NOW)
                        for width, since in ((60, 3600), (600, DAY), (3600, 7 * DAY))
                    },
                    "series": [
                        opened.read_series(NOW - DAY, 600, sync, now=NOW).metrics
                        for sync in (None, "a", "b")
                    ],
                    "through": opened.rollup_tables.rolled_through(),
                }
            )
        finally:
            opened.close()
    sqlite, postgres = figures
    assert sqlite["stored"][3600]  # something was rolled up
    assert postgres == sqlite


def test_two_writers_and_two_refreshers_on_postgres_add_up(postgres_url):
    first, second = open_location(postgres_url), open_location(postgres_url)
    try:
        assert first.node != second.node  # two nodes, as two `run` processes
        writers = [
            threading.Thread(target=history, args=(first, "n1-")),
            threading.Thread(target=history, args=(second, "n2-")),
        ]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        ready = threading.Barrier(2)

        def refresh_after_the_barrier(store: ConsoleStore) -> None:
            ready.wait()
            store.refresh_rollups(NOW)

        refreshers = [
            threading.Thread(target=refresh_after_the_barrier, args=(s,)) for s in (first, second)
        ]
        for thread in refreshers:
            thread.start()
        for thread in refreshers:
            thread.join()
        totals = first.totals_by_sync(NOW - 2 * DAY, 3600, now=NOW)
        assert totals["a"]["delivered"] == 2 * (4 * 3 + 1)  # both writers, counted once
        assert totals["b"]["archived"] == 2 * 4 and totals["b"]["filtered"] == 2 * 4
        assert totals["*"]["events"] == 2 * (4 * 6 + 2)
        expected = raw_totals(first.rollup_tables, NOW - 2 * DAY)
        assert {(s, m): totals[s][m] for s, m in expected} == expected
        assert second.totals_by_sync(NOW - 2 * DAY, 3600, now=NOW) == totals
    finally:
        first.close()
        second.close()


def test_percentile_interpolates_within_a_bin():
    counts = [0] * (len(LATENCY_BINS) + 1)
    counts[latency_bin(40)] = 90  # the 30-50 ms bin
    counts[latency_bin(600)] = 10  # the 500-700 ms bin
    assert 30 <= percentile(counts, 0.5) <= 50
    assert 500 <= percentile(counts, 0.95) <= 700
    assert percentile([0] * len(counts), 0.5) is None
