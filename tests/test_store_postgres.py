"""The PostgreSQL store on a real server (tests/services.py): migrations, errors, dedupe
under a unique key, leases on deliveries and queue rows, and the same answers as SQLite."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from streamctl.core.errors import StoreError, StoreUnavailable
from streamctl.core.outcomes import ContractResult, Decision, EventResult, Status, Violation
from streamctl.core.rows import AttemptRecord, DuplicateRow, encode_results
from streamctl.store import queries
from streamctl.store.db import SqliteStore
from streamctl.store.postgres.location import parse_location
from streamctl.store.postgres.schema import SCHEMA_VERSION
from streamctl.store.postgres.store import PostgresStore, migrate_url
from tests.services import PASSWORD


def _result(message_id: str, status: Status = Status.PENDING, sync: str = "s") -> EventResult:
    event = {"type": "track", "messageId": message_id, "userId": "u"}
    decision = Decision(message_id, sync, status, event_type="custom", payload={"m": message_id})
    return EventResult(message_id, "web", event, decisions=[decision])


def _poll(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# -- opening and migrating ---------------------------------------------------------------


def test_a_new_database_is_migrated_once_even_by_processes_starting_together(postgres_url):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate_url(postgres_url), range(4)))
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 3
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_a_store_of_an_older_version_gets_the_migrations_it_lacks(postgres_url):
    migrate_url(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as migration 1 left it
        conn.execute("DROP INDEX deliveries_archived_at, deliveries_problems_status")
        conn.execute("DROP TABLE rejected_input, source_lag")
        conn.execute("DROP TABLE rollups, rollup_state")
        conn.execute("UPDATE schema_version SET version = 1")
    assert migrate_url(postgres_url) == (1, SCHEMA_VERSION)
    assert migrate_url(postgres_url) == (SCHEMA_VERSION, SCHEMA_VERSION)
    with psycopg.connect(postgres_url) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"deliveries_archived_at", "deliveries_problems_status"} <= indexes
    assert {"rollups", "rollup_state"} <= tables  # migration 3: the console's rollups
    assert {"rejected_input", "source_lag"} <= tables  # migration 4: kafka sources


def test_a_store_from_a_newer_streamctl_is_refused(postgres_url):
    migrate_url(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer than this streamctl"):
        PostgresStore.open(postgres_url)


def test_an_unreachable_database_is_named_without_its_password(postgres, postgres_url):
    closed_port = postgres_url.replace(f":{postgres.port}/", ":9/")
    with pytest.raises(StoreUnavailable) as refused:
        PostgresStore.open(closed_port)
    message = str(refused.value)
    assert "127.0.0.1:9" in message and "database 'test_" in message
    assert PASSWORD not in message
    wrong = postgres_url.replace(PASSWORD, "not-the-password-42")
    with pytest.raises(StoreUnavailable) as denied:
        PostgresStore.open(wrong)
    assert "password authentication failed" in str(denied.value)
    assert "not-the-password-42" not in str(denied.value)


def test_streamctl_options_in_the_url_never_reach_libpq():
    location = parse_location("postgresql://u:pw-123456@db:6543/events?lease=5s&sslmode=disable")
    assert location.lease_seconds == 5.0
    assert location.conninfo == "postgresql://u:pw-123456@db:6543/events?sslmode=disable"
    assert location.describe() == "database 'events' on db:6543 as u"
    with pytest.raises(StoreError, match="names no database"):
        parse_location("postgresql://u:pw@db:6543/")


def test_a_reader_on_an_empty_database_is_told_there_is_no_store_yet(postgres_url):
    with pytest.raises(StoreError, match="no store yet"):
        PostgresStore.open(postgres_url, readonly=True)


# -- dedupe ------------------------------------------------------------------------------


def test_two_nodes_recording_the_same_events_at_once_record_each_once(postgres_url):
    ids = [f"m{i}" for i in range(200)]
    first, second = PostgresStore.open(postgres_url), PostgresStore.open(postgres_url)
    try:
        start = threading.Barrier(2)

        def record(store: PostgresStore, order: list[str]) -> tuple[int, int]:
            start.wait()
            recorded = store.record_results([_result(m) for m in order], destinations={"s": "d"})
            return recorded.events, recorded.duplicates

        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(record, first, ids)
            b = pool.submit(record, second, list(reversed(ids)))
            outcomes = [a.result(), b.result()]
        assert sum(events for events, _ in outcomes) == 200
        assert sum(duplicates for _, duplicates in outcomes) == 200
        rows = first.conn.execute(
            "SELECT message_id, count(*) FROM events WHERE duplicate = 0 GROUP BY message_id"
        ).fetchall()
        assert len(rows) == 200 and {n for _, n in rows} == {1}
        assert first.conn.execute("SELECT count(*) FROM deliveries").fetchone() == (200,)
    finally:
        first.close()
        second.close()


def test_the_same_id_twice_in_a_batch_and_after_the_window(postgres_url):
    with PostgresStore.open(postgres_url) as store:
        now = time.time()
        old = store.record_results([_result("a")], destinations={}, now=now - 25 * 3600)
        assert (old.events, old.duplicates) == (1, 0)
        again = store.record_results([_result("a"), _result("a")], destinations={}, now=now)
        assert (again.events, again.duplicates) == (1, 1)  # the 24 h window had passed
        assert store.seen_message_ids("web", ["a", "b"], now=now) == {"a"}
        assert store.seen_message_ids("mobile", ["a"], now=now) == set()


# -- leases --------------------------------------------------------------------------------


def test_a_live_nodes_deliveries_are_never_claimed_by_another(postgres_url):
    with PostgresStore.open(postgres_url) as owner, PostgresStore.open(postgres_url) as other:
        owner.record_results([_result("a"), _result("b")], destinations={"s": "d"})
        assert other.open_deliveries(["s"], 0, 100) == []
        assert other.take_requeued(["s"]) == []
        assert [d.message_id for d in owner.open_deliveries(["s"], 0, 100)] == ["a", "b"]


def test_a_silent_nodes_deliveries_are_taken_over_once_its_lease_runs_out(postgres_url):
    url = postgres_url + "?lease=1s"
    dead = PostgresStore.open(url)
    dead.record_results([_result("a"), _result("b")], destinations={"s": "d"})
    dead._stopping.set()  # as if killed: no more heartbeats, nothing handed back
    dead._heartbeat.join()  # type: ignore[union-attr]
    with PostgresStore.open(url) as survivor:
        assert survivor.take_requeued(["s"]) == []  # the lease still runs
        taken = _poll(lambda: survivor.take_requeued(["s"]))
        assert [d.message_id for d in taken] == ["a", "b"]
        assert survivor.take_requeued(["s"]) == []  # its own now
        nodes = "SELECT id FROM nodes ORDER BY id"
        assert survivor.rows(nodes) == [(survivor.node,)]  # the silent one, emptied, forgotten
        dead.heartbeat()  # it was only cut off: it comes back under its own id
        assert survivor.rows(nodes) == [(dead.node,), (survivor.node,)]
        assert dead.open_deliveries(["s"], 0, 10) == []  # holding nothing it lost
    dead.pool.close()


def test_a_stopped_node_hands_its_open_work_back_at_once(postgres_url):
    with PostgresStore.open(postgres_url) as leaving:
        leaving.record_results([_result("a")], destinations={"s": "d"})
        leaving.queue.append("web", [{"messageId": "q"}])
        assert len(leaving.queue.claim(10)) == 1
    with PostgresStore.open(postgres_url) as staying:
        assert [d.message_id for d in staying.take_requeued(["s"])] == ["a"]
        assert [q.event["messageId"] for q in staying.queue.claim(10)] == ["q"]


def test_queue_rows_are_claimed_by_one_node_and_acked_with_the_outcome(postgres_url):
    with PostgresStore.open(postgres_url) as one, PostgresStore.open(postgres_url) as two:
        for i in range(20):
            one.queue.append("web", [{"messageId": f"e{i}"}, {"messageId": f"f{i}"}])
        assert one.queue.depth() == 40
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda q: q.claim(10), [one.queue, two.queue])
        assert len(a) <= 10 and len(b) <= 10 and len(a) + len(b) >= 10  # whole rows
        assert len(a) % 2 == len(b) % 2 == 0
        assert not {q.id for q in a} & {q.id for q in b}  # none in both
        assert not {q.id for q in one.queue.claim(40)} & {q.id for q in a + b}
        encoded = encode_results("web", [_result(q.event["messageId"]) for q in a])
        one.record_and_ack(encoded, [q.id for q in a], destinations={})
        left = one.conn.execute("SELECT count(*) FROM queue").fetchone()
        assert left == (20 - len(a) // 2,)


def test_attempts_of_a_delivery_another_node_took_over_leave_its_state_alone(postgres_url):
    with PostgresStore.open(postgres_url) as first, PostgresStore.open(postgres_url) as second:
        [delivery] = first.record_results([_result("a")], destinations={"s": "d"}).pending
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE deliveries SET owner = %s", [second.node])
        now = time.time()
        first.record_attempts([_attempt(delivery.id, now, Status.DELIVERED)])
        assert first.conn.execute("SELECT status FROM deliveries").fetchone() == ("pending",)
        assert first.conn.execute("SELECT count(*) FROM attempts").fetchone() == (1,)


def _attempt(delivery_id: int, at: float, status: Status, code: int = 200) -> AttemptRecord:
    outcome = "delivered" if status is Status.DELIVERED else "failed"
    return AttemptRecord(
        [delivery_id], "s", "d", at, outcome, code, 12.5, None if code == 200 else "refused",
        "{}", None, status, 1, None, at,
    )  # fmt: skip


# -- the same answers as SQLite --------------------------------------------------------------


def _record_story(store: SqliteStore | PostgresStore, now: float) -> None:
    checked = _result("v1")
    violation = Violation("schema", "/total", "bad total", "web", "Order", "1")
    contract = ContractResult("allowed", checked.event, (violation,))
    checked = EventResult(
        "v1", "web", checked.event, contract=contract, decisions=checked.decisions
    )
    recorded = store.record_results(
        [_result("a"), _result("b"), _result("c", Status.FILTERED), checked,
         _result("m", Status.MAPPING_ERROR, sync="t")],
        destinations={"s": "d", "t": "e"},
        now=now,
    )  # fmt: skip
    a, b, _v1 = recorded.pending
    store.record_attempts(
        [_attempt(a.id, now + 1, Status.DELIVERED), _attempt(b.id, now + 2, Status.ARCHIVED, 500)]
    )
    again = [DuplicateRow("web", "a", '{"messageId": "a"}')]  # as the runtime records it
    store.record_results([], destinations={}, duplicates=again, now=now + 3)


def test_errors_status_and_explain_answer_alike_on_both_stores(postgres_url, tmp_path):
    now = time.time() - 60
    with SqliteStore.open(tmp_path / "state.db") as sqlite, PostgresStore.open(postgres_url) as pg:
        _record_story(sqlite, now)
        _record_story(pg, now)
        for filters in (
            queries.ErrorFilter(),
            queries.ErrorFilter(syncs=("s",), stages=("contract", "delivery")),
            queries.ErrorFilter(statuses=("failed",), since=now - 1, limit=2),
        ):
            assert pg.list_errors(filters) == sqlite.list_errors(filters)
        assert pg.sync_status(now - 10, ["s", "t"]) == sqlite.sync_status(now - 10, ["s", "t"])
        for message_id in ("a", "b", "v1", "m"):
            assert pg.explain(message_id) == sqlite.explain(message_id)
        for error_id in ("1", "2", "v1"):
            assert pg.error_detail(error_id) == sqlite.error_detail(error_id)
        assert pg.requeue([2], now=now + 5) == sqlite.requeue([2], now=now + 5) == 1
        assert pg.statuses_of([1, 2]) == sqlite.statuses_of([1, 2])
        assert pg.syncs_of([1, 5]) == sqlite.syncs_of([1, 5])
        assert pg.prune(0, now=now + 10) == sqlite.prune(0, now=now + 10)
