"""StoreMetrics: the monitoring questions answered from a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from streamctl.core.outcomes import Status
from streamctl.store import SqliteStore
from streamctl.store.alert_state import AlertStateStore, NotificationRecord
from streamctl.store.metrics import StoreMetrics
from streamctl.store.postgres.store import PostgresStore
from streamctl.store.schema import SCHEMA_VERSION
from tests.fakes.traffic import Traffic

T0 = 1_800_000_000.0  # a minute boundary


@pytest.fixture(params=["sqlite", "postgres"])
def store(tmp_path: Path, request: pytest.FixtureRequest):
    """The same monitoring questions of both stores (the SQL is shared)."""
    if request.param == "postgres":
        with PostgresStore.open(request.getfixturevalue("postgres_url")) as shared:
            yield shared
        return
    with SqliteStore.open(tmp_path / "state.db", synchronous="NORMAL") as store:
        yield store


def test_windowed_counts_come_from_attempts_deliveries_and_events(store: SqliteStore) -> None:
    traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
    pending = traffic.receive(4, at=T0)
    traffic.attempt(pending, ok=False, at=T0 + 10, latency_ms=500)
    traffic.attempt(pending[:3], ok=True, at=T0 + 20, latency_ms=50)
    traffic.attempt(pending[3:], ok=False, at=T0 + 30, latency_ms=900, give_up=True)
    Traffic(store, source="app", sync="other", destination="hook").receive(2, at=T0)

    metrics = StoreMetrics(store)
    counts = metrics.attempt_counts("to-hook", T0, T0 + 60)
    assert (counts.attempts, counts.failed, counts.error_rate) == (8, 5, 5 / 8)
    assert metrics.attempt_counts("to-hook", T0 + 15, T0 + 60).failed == 1
    assert metrics.archived_count("to-hook", T0, T0 + 60) == 1
    assert metrics.archived_count("to-hook", T0 + 31, T0 + 60) == 0
    assert metrics.received_count("web", T0, T0 + 60) == 4
    assert metrics.received_count("app", T0, T0 + 60) == 2
    assert metrics.received_count("web", T0 + 1, T0 + 60) == 0
    # 8 latencies: 50 x3, 500 x4, 900 x1 -> nearest rank 95% is the 8th
    assert metrics.latency_p95("to-hook", T0, T0 + 60) == 900.0
    assert metrics.latency_p95("to-hook", T0, T0 + 15) == 500.0
    assert metrics.latency_p95("other", T0, T0 + 60) is None


def test_counters_for_top_count_since_an_instant_and_gauges_now(store: SqliteStore) -> None:
    traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
    pending = traffic.receive(5, at=T0)
    traffic.receive(2, at=T0, status=Status.FILTERED)
    traffic.attempt(pending[:2], ok=True, at=T0 + 1)
    traffic.attempt(pending[2:4], ok=False, at=T0 + 1)  # retrying; pending[4] never tried

    (counters,) = StoreMetrics(store).sync_counters(["to-hook"], T0).values()

    assert (counters.received, counters.delivered, counters.filtered) == (7, 2, 2)
    assert (counters.failed, counters.attempts, counters.archived) == (2, 4, 0)
    assert (counters.retrying, counters.queued) == (2, 3)


def test_minute_buckets_hold_volume_and_errors_with_empty_minutes(store: SqliteStore) -> None:
    traffic = Traffic(store, source="web", sync="to-hook", destination="hook")
    first = traffic.receive(3, at=T0 + 5)
    traffic.attempt(first, ok=True, at=T0 + 6)
    second = traffic.receive(2, at=T0 + 125)
    traffic.attempt(second, ok=False, at=T0 + 130)
    traffic.receive(1, at=T0 + 130, status=Status.MAPPING_ERROR)

    buckets = StoreMetrics(store).minute_buckets("to-hook", T0 + 30, T0 + 180)

    assert [b.start for b in buckets] == [T0, T0 + 60, T0 + 120]
    assert [(b.volume, b.errors) for b in buckets] == [(3, 0), (0, 0), (3, 3)]


def test_open_creates_a_missing_store_and_reads_an_existing_one_readonly(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "state.db"
    created = StoreMetrics.open(path)
    assert created.received_count("web", 0, T0) == 0
    created.close()

    with SqliteStore.open(path) as writer:
        Traffic(writer, source="web", sync="s", destination="d").receive(2, at=T0)
    reader = StoreMetrics.open(path)
    assert reader.store.readonly and reader.received_count("web", 0, T0 + 1) == 2
    reader.close()


def test_alert_tables_come_from_the_migrations_and_old_ones_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as old:  # as the evaluator created them before migration 7
        old.execute(
            "CREATE TABLE alert_state (rule TEXT NOT NULL, sync TEXT NOT NULL, firing INTEGER"
            " NOT NULL, since REAL, value REAL, evaluated_at REAL NOT NULL, changed_at REAL"
            " NOT NULL, notified_at REAL, PRIMARY KEY (rule, sync))"
        )
        old.execute("INSERT INTO alert_state VALUES ('r', 's', 1, 1.0, 2.0, 3.0, 4.0, NULL)")
    old.close()

    state = AlertStateStore(path)

    assert state.states()[("r", "s")].firing
    with SqliteStore.open(path, readonly=True) as store:
        assert store.row("SELECT version FROM schema_version")[0] == SCHEMA_VERSION
        assert store.row("SELECT name FROM sqlite_master WHERE name = 'alert_notifications'")
    state.close()


def test_a_file_holding_only_alert_state_gets_the_store_tables(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    AlertStateStore(path).close()  # e.g. an evaluation ran before anything was received

    metrics = StoreMetrics.open(path)

    assert metrics.attempt_counts("s", 0, T0).attempts == 0
    metrics.close()


def test_old_notifications_are_forgotten(tmp_path: Path) -> None:
    state = AlertStateStore(tmp_path / "state.db")
    for at in (T0 - 100, T0 + 100):
        state.record_notification(NotificationRecord("r", "s", "hook", "firing", at, True, 1, None))

    state.forget_notifications(before=T0)

    assert [r.at for r in state.notifications()] == [T0 + 100]
    state.close()
