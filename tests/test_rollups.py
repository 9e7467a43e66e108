"""Rollups (streamctl.store.rollups): the console's counts equal the raw rows' counts."""

from __future__ import annotations

import orjson
import pytest

from streamctl.core.outcomes import STAGE_OF, Status
from streamctl.core.rows import AttemptRecord, DecisionRow, EncodedResults, EventRow
from streamctl.store import SqliteStore, rollups
from streamctl.store.rollups import (
    LATENCY_BINS,
    SETTLE,
    aggregate,
    latency_bin,
    percentile,
    read_series,
    refresh,
    rolled_through,
    totals_by_sync,
)

NOW = 1_800_000_000.0  # a fixed clock, minute-aligned
DAY = 86400


def record(store: SqliteStore, at: float, sync: str, statuses: list[Status], latency: float) -> None:
    """One batch at `at`: an event per status; sent ones get one attempt of `latency` ms."""
    encoded = EncodedResults("web")
    for k, final in enumerate(statuses):
        message_id = f"{sync}-{at}-{k}"
        encoded.events.append(EventRow(message_id, orjson.dumps({"messageId": message_id}).decode(), None))
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


@pytest.fixture
def store(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as opened:
        for hours_ago in (30, 20, 5, 2):  # before and inside the day, rolled up
            at = NOW - hours_ago * 3600 + 17
            record(store=opened, at=at, sync="a", statuses=[Status.DELIVERED] * 3, latency=40)
            record(opened, at, "b", [Status.DELIVERED, Status.ARCHIVED, Status.FILTERED], 250)
        record(opened, NOW - 60, "a", [Status.DELIVERED, Status.FILTERED], 40)  # not settled
        yield opened


def raw_totals(store: SqliteStore, since: float) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for _start, sync, metric, n in aggregate(store, since, NOW + 1, 600):
        totals[(sync, metric)] = totals.get((sync, metric), 0) + n
    return totals


def test_rolled_up_and_live_counts_add_up_to_the_raw_rows(store):
    assert refresh(store, NOW) > 0
    assert rolled_through(store) == NOW - SETTLE
    since = NOW - DAY
    expected = raw_totals(store, since - since % 600)
    totals = totals_by_sync(store, since, 600, now=NOW)
    for (sync, metric), n in expected.items():
        assert totals[sync][metric] == n, (sync, metric)
    assert totals["a"]["delivered"] == 3 * 3 + 1  # three settled batches and the live one
    assert totals["b"]["archived"] == 3 and totals["b"]["filtered"] == 3
    assert totals["*"]["events"] == 3 * 6 + 2


def test_a_second_refresh_counts_nothing_twice(store):
    refresh(store, NOW)
    before = totals_by_sync(store, NOW - 2 * DAY, 3600, now=NOW)
    assert refresh(store, NOW) == 0
    refresh(store, NOW + 120)  # two more minutes settle: nothing new in them
    assert totals_by_sync(store, NOW - 2 * DAY, 3600, now=NOW) == before


def test_a_refresher_that_was_overtaken_discards_its_work(store, tmp_path, monkeypatch):
    real = rollups.aggregate

    def overtaken(*args):  # while this refresher reads, a second console finishes first
        rows = real(*args)
        monkeypatch.setattr(rollups, "aggregate", real)
        with SqliteStore.open(tmp_path / "state.db") as other:
            refresh(other, NOW)
        return rows

    monkeypatch.setattr(rollups, "aggregate", overtaken)
    refresh(store, NOW)
    expected = raw_totals(store, NOW - 2 * DAY)
    totals = totals_by_sync(store, NOW - 2 * DAY, 600, now=NOW)
    assert {(sync, metric): totals[sync][metric] for sync, metric in expected} == expected


def test_series_buckets_and_latency_percentiles(store):
    refresh(store, NOW)
    series = read_series(store, NOW - DAY, 3600, sync="b", now=NOW)
    assert len(series.starts) == 25
    assert sum(series.values("received")) == 3 * 3
    assert series.percentile(0.5) is not None and 200 <= series.percentile(0.5) <= 300
    hour_of = (NOW - 5 * 3600 + 17) // 3600 * 3600
    assert series.values("attempts")[series.starts.index(int(hour_of))] == 2


def test_percentile_interpolates_within_a_bin():
    counts = [0] * (len(LATENCY_BINS) + 1)
    counts[latency_bin(40)] = 90  # the 30-50 ms bin
    counts[latency_bin(600)] = 10  # the 500-700 ms bin
    assert 30 <= percentile(counts, 0.5) <= 50
    assert 500 <= percentile(counts, 0.95) <= 700
    assert percentile([0] * len(counts), 0.5) is None
