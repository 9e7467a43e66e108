"""The SQLite store: migrations, the ingest queue, dedupe, retention."""

from __future__ import annotations

import fcntl
import sqlite3
import time

import pytest
import sqlite_utils

from streamctl.core.errors import StoreError
from streamctl.core.outcomes import ContractResult, Decision, EventResult, Status
from streamctl.core.rows import AttemptRecord, encode_results
from streamctl.store import SqliteStore, queries
from streamctl.store.connection import PAGE_SIZE
from streamctl.store.queue import Overloaded
from streamctl.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    _message_keys,
    message_key,
    migrate,
)
from streamctl.store.sqlite_queue import SqliteEventQueue


def test_a_new_store_is_migrated_to_the_current_version(tmp_path):
    path = tmp_path / "state.db"
    with SqliteStore.open(path) as store:
        assert (
            store.conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        )
        tables = {
            r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert {
            "queue",
            "events",
            "deliveries",
            "attempts",
            "violations",
            "function_errors",
        } <= tables
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with SqliteStore.open(path) as store:  # reopening applies nothing twice
        assert store.conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1


def test_a_later_migration_applies_to_an_existing_file_once(tmp_path):
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()

    def add_notes(db):
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")

    with SqliteStore.open(path) as store:
        assert migrate(store.db, str(path), (*MIGRATIONS, add_notes)) == SCHEMA_VERSION + 1
        assert migrate(store.db, str(path), (*MIGRATIONS, add_notes)) == SCHEMA_VERSION + 1
        assert (
            store.conn.execute("SELECT version FROM schema_version").fetchone()[0]
            == SCHEMA_VERSION + 1
        )


def test_a_store_from_a_newer_streamctl_is_refused(tmp_path):
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer than this streamctl"):
        SqliteStore.open(path)


def test_a_failing_migration_leaves_the_file_at_the_previous_version(tmp_path):
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()

    def broken(db):
        db.execute("CREATE TABLE half (id INTEGER)")
        db.execute("THIS IS NOT SQL")

    with SqliteStore.open(path) as store:
        with pytest.raises(StoreError, match=f"migration {SCHEMA_VERSION + 1}"):
            migrate(store.db, str(path), (*MIGRATIONS, broken))
        assert (
            store.conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        )
        assert not store.db["half"].exists()


def test_readonly_open_of_a_missing_store_says_so(tmp_path):
    with pytest.raises(StoreError, match="no store yet"):
        SqliteStore.open(tmp_path / "missing.db", readonly=True)


def test_a_new_store_has_large_pages_and_an_older_file_keeps_its_own(tmp_path):
    with SqliteStore.open(tmp_path / "new.db") as store:
        assert store.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
    older = tmp_path / "older.db"
    with sqlite3.connect(older) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE kept (x)")
    with SqliteStore.open(older) as store:
        assert store.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        store.record_results([_result("a")], destinations={"s": "d"})
        assert store.seen_message_ids("web", ["a"]) == {"a"}


def test_queue_append_claim_ack_depth_and_redelivery_after_restart(tmp_path):
    path = tmp_path / "state.db"
    with SqliteStore.open(path) as store:
        queue = store.queue
        queue.append("web", [{"messageId": "a"}, {"messageId": "b"}])
        queue.append("hooks", [{"messageId": "c"}])
        assert queue.depth() == 3
        first = queue.claim(1)  # one append is one row: claimed whole, past the limit
        assert [(q.source, q.event["messageId"]) for q in first] == [("web", "a"), ("web", "b")]
        assert first[0].id == first[1].id
        assert [q.event["messageId"] for q in queue.claim(10)] == ["c"]
        assert queue.claim(10) == []  # nothing is handed out twice in one process
        queue.ack([first[0].id, first[1].id])  # the row's id, once per event: counted once
        assert queue.depth() == 1
    with SqliteStore.open(path) as store:  # claimed but never acked: handed out again
        assert [q.event["messageId"] for q in store.queue.claim(10)] == ["c"]
        assert store.queue.depth() == 1


def test_queue_claim_stops_at_the_row_that_would_pass_the_limit(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        for name in ("a", "b", "c"):
            store.queue.append("web", [{"messageId": f"{name}1"}, {"messageId": f"{name}2"}])
        assert [q.event["messageId"] for q in store.queue.claim(3)] == ["a1", "a2"]
        assert [q.event["messageId"] for q in store.queue.claim(4)] == ["b1", "b2", "c1", "c2"]


def test_queue_reads_rows_of_one_event_written_before_schema_4(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        with store.transaction() as conn:  # as streamctl wrote them: one object, no count
            conn.execute(
                "INSERT INTO queue (source, event, appended_at) VALUES ('web', ?, 0)",
                ['{"messageId":"old"}'],
            )
        store.queue.append("web", [{"messageId": "new"}])
    with SqliteStore.open(tmp_path / "state.db") as store:
        assert store.queue.depth() == 2
        claimed = store.queue.claim(10)
        assert [q.event["messageId"] for q in claimed] == ["old", "new"]
        store.queue.ack([claimed[0].id])
        assert store.queue.depth() == 1


def test_queue_ids_never_come_back_after_everything_was_acked(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        store.queue.append("web", [{"messageId": "a"}])
        store.queue.ack([q.id for q in store.queue.claim(10)])
        store.queue.append("web", [{"messageId": "b"}])
        assert [q.event["messageId"] for q in store.queue.claim(10)] == ["b"]


def test_queue_refuses_to_grow_beyond_its_depth(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        queue = SqliteEventQueue(store, max_depth=3)
        queue.append("web", [{"messageId": "a"}, {"messageId": "b"}])
        with pytest.raises(Overloaded) as raised:
            queue.append("web", [{"messageId": "c"}, {"messageId": "d"}])
        assert raised.value.retry_after > 0
        assert queue.depth() == 2


def _result(message_id: str, status: Status = Status.PENDING) -> EventResult:
    event = {"type": "track", "messageId": message_id, "userId": "u"}
    decision = Decision(message_id, "s", status, event_type="custom", payload={"m": message_id})
    return EventResult(message_id, "web", event, decisions=[decision])


def test_record_and_ack_records_and_acks_in_one_transaction(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        store.queue.append("web", [{"messageId": "a"}, {"messageId": "b"}])
        claimed = store.queue.claim(10)
        assert store.queue.depth() == 2
        recorded = store.record_and_ack(
            encode_results("web", [_result("a")]), [claimed[0].id], destinations={"s": "d"}
        )
        assert [p.payload for p in recorded.pending] == [{"m": "a"}]
        assert store.conn.execute("SELECT count(*) FROM queue").fetchone()[0] == 0
        assert store.queue.depth() == 0
        assert store.conn.execute("SELECT destination, status FROM deliveries").fetchall() == [
            ("d", "pending")
        ]


def test_record_and_ack_acks_nothing_when_the_record_fails(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        store.queue.append("web", [{"messageId": "a"}])
        claimed = store.queue.claim(10)
        store.conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON deliveries BEGIN"
                           " SELECT RAISE(ABORT, 'disk says no'); END")  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="disk says no"):
            store.record_and_ack(
                encode_results("web", [_result("a")]), [claimed[0].id], destinations={"s": "d"}
            )
        assert store.conn.execute("SELECT count(*) FROM queue").fetchone()[0] == 1
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        assert store.queue.depth() == 1


def test_seen_message_ids_only_within_24_hours_and_per_source(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        now = time.time()
        store.record_results([_result("old")], destinations={}, now=now - 25 * 3600)
        store.record_results([_result("new")], destinations={}, now=now)
        assert store.seen_message_ids("web", ["old", "new", "other"], now=now) == {"new"}
        assert store.seen_message_ids("mobile", ["new"], now=now) == set()


# Two messageIds with the same CRC-32, so the same `events.message_key`.
COLLIDING = ("msg-29685295", "msg-32060020")


def test_message_keys_that_collide_are_told_apart_by_their_text(tmp_path):
    assert message_key(COLLIDING[0]) == message_key(COLLIDING[1])
    first, second = COLLIDING
    with SqliteStore.open(tmp_path / "state.db") as store:
        store.record_results([_result(first)], destinations={"s": "d"})
        assert store.seen_message_ids("web", [second]) == set()
        recorded = store.record_encoded(
            encode_results("web", [_result(second)]), destinations={"s": "d"}, dedupe=True
        )
        assert (recorded.events, recorded.duplicates) == (1, 0)
        assert [e["message_id"] for e in queries.explain(store, second)] == [second]
        assert store.seen_message_ids("web", [first, second, "other"]) == {first, second}


def test_events_stored_before_message_keys_are_keyed_by_the_migration(tmp_path):
    path = tmp_path / "state.db"
    older = MIGRATIONS[: MIGRATIONS.index(_message_keys)]
    with sqlite3.connect(path, isolation_level=None) as conn:
        migrate(sqlite_utils.Database(conn), str(path), older)
        conn.executemany(
            "INSERT INTO events (source, message_id, received_at, payload, duplicate)"
            " VALUES ('web', ?, ?, '{}', ?)",
            [("before", time.time(), 0), ("before", time.time(), 1)],
        )
    with SqliteStore.open(path) as store:
        keys = store.conn.execute("SELECT DISTINCT message_key FROM events").fetchall()
        assert keys == [(message_key("before"),)]
        assert store.seen_message_ids("web", ["before", "after"]) == {"before"}
        assert len(queries.explain(store, "before")) == 2
        indexes = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        assert "events_message_key" in indexes
        assert "events_message" not in indexes


def test_prune_deletes_old_events_and_their_records_but_keeps_open_deliveries(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        now = time.time()
        store.record_results(
            [_result("old-done", Status.FILTERED)], destinations={}, now=now - 40 * 86400
        )
        store.record_results([_result("old-open")], destinations={}, now=now - 40 * 86400)
        store.record_results([_result("recent", Status.FILTERED)], destinations={}, now=now)
        deleted = store.prune(30 * 86400, now=now)
        assert deleted["events"] == 1
        assert deleted["deliveries"] == 1
        left = {r[0] for r in store.conn.execute("SELECT message_id FROM events")}
        assert left == {"old-open", "recent"}


def test_queue_rewind_hands_out_unacked_events_again(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        store.queue.append("web", [{"messageId": "a"}])
        store.queue.append("web", [{"messageId": "b"}])
        first = store.queue.claim(10)
        store.queue.ack([first[0].id])
        store.queue.rewind()
        assert [q.event["messageId"] for q in store.queue.claim(10)] == ["b"]


def test_delivery_reorder_releases_chunks_in_id_order():
    from streamctl.delivery.replay import DeliveryReorder

    reorder = DeliveryReorder(next_id=1)
    assert reorder.add(11, 5, ["b"]) == []  # ids 11-15 committed before 1-10 arrived
    assert reorder.add(16, 0, ["empty"]) == []
    assert reorder.add(1, 10, ["a"]) == [["a"], ["b"], ["empty"]]
    assert reorder.add(16, 3, ["c"]) == [["c"]]
    assert reorder.add(30, 1, ["late"]) == []
    assert reorder.rest() == [["late"]]


def _attempt(delivery_id, at, status, attempts, outcome="delivered", code=200):
    return AttemptRecord(
        [delivery_id], "s", "d", at, outcome, code, 5.0, None, "ok", None, status, attempts,
        at + 10 if status is Status.RETRYING else None, 100.0,
    )  # fmt: skip


def test_record_attempts_leaves_each_delivery_in_the_state_of_its_last_attempt(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        recorded = store.record_results(
            [_result(m) for m in ("a", "b", "c")], destinations={"s": "d"}
        )
        a, b, c = (p.id for p in recorded.pending)
        store.record_attempts(
            [
                _attempt(b, 101.0, Status.DELIVERED, 1),
                _attempt(a, 101.0, Status.DELIVERED, 1),
                _attempt(c, 100.0, Status.RETRYING, 1, "retry", 503),
                _attempt(c, 101.0, Status.DELIVERED, 2),  # the same delivery again
            ]
        )
        rows = store.conn.execute(
            "SELECT id, status, attempts, status_code, finished_at, next_attempt_at"
            " FROM deliveries ORDER BY id"
        ).fetchall()
        assert rows == [
            (a, "delivered", 1, 200, 101.0, None),
            (b, "delivered", 1, 200, 101.0, None),
            (c, "delivered", 2, 200, 101.0, None),
        ]
        assert store.conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 4


def test_an_attempt_shared_by_a_batch_is_a_row_per_delivery_and_the_last_state_wins(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        recorded = store.record_results(
            [_result(m) for m in ("a", "b", "c")], destinations={"s": "d"}
        )
        a, b, c = (p.id for p in recorded.pending)
        batch = _attempt(a, 100.0, Status.RETRYING, 1, "retry", 503)
        batch.delivery_ids = [a, b, c]
        store.record_attempts([batch, _attempt(c, 101.0, Status.DELIVERED, 2)])
        states = store.conn.execute(
            "SELECT id, status, attempts, next_attempt_at FROM deliveries ORDER BY id"
        ).fetchall()
        assert states == [
            (a, "retrying", 1, 110.0),
            (b, "retrying", 1, 110.0),
            (c, "delivered", 2, None),
        ]
        attempts = store.conn.execute(
            "SELECT delivery_id, status_code FROM attempts ORDER BY id"
        ).fetchall()
        assert attempts == [(a, 503), (b, 503), (c, 503), (c, 200)]


def test_errors_walk_the_problems_index_whose_condition_has_no_in_list(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        (index_sql,) = store.conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'deliveries_problems'"
        ).fetchone()
        assert " IN " not in index_sql.upper()
        recorded = store.record_results([_result("a"), _result("b")], destinations={"s": "d"})
        store.record_attempts(
            [_attempt(recorded.pending[0].id, 101.0, Status.ARCHIVED, 1, "failed", 400)]
        )
        plans: list[str] = []
        store.conn.set_trace_callback(plans.append)
        found = queries.list_errors(store, queries.ErrorFilter(syncs=("s",)))
        store.conn.set_trace_callback(None)
        assert [(r["message_id"], r["status"]) for r in found] == [("a", "archived")]
        (query,) = [sql for sql in plans if "FROM deliveries" in sql]
        plan = store.conn.execute(f"EXPLAIN QUERY PLAN {query}").fetchall()
        assert "deliveries_problems" in str(plan)


def test_record_encoded_with_dedupe_links_deliveries_to_the_fresh_events(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as store:
        store.record_results([_result("seen")], destinations={"s": "d"})
        encoded = encode_results("web", [_result(m) for m in ("a", "seen", "b", "a")])
        recorded = store.record_encoded(encoded, destinations={"s": "d"}, dedupe=True)
        assert (recorded.events, recorded.duplicates) == (2, 2)
        linked = store.conn.execute(
            "SELECT d.id, e.message_id, e.duplicate FROM deliveries d JOIN events e"
            " ON e.id = d.event_id WHERE d.id >= ? ORDER BY d.id",
            [recorded.first_delivery_id],
        ).fetchall()
        assert [(m, dup) for _, m, dup in linked] == [("a", 0), ("b", 0)]
        assert [p.id for p in recorded.pending] == [i for i, _, _ in linked]
        assert [p.payload for p in recorded.pending] == [{"m": "a"}, {"m": "b"}]
        duplicates = store.conn.execute(
            "SELECT message_id FROM events WHERE duplicate = 1 ORDER BY id"
        ).fetchall()
        assert duplicates == [("seen",), ("a",)]


def _dedupe(store: SqliteStore, *message_ids: str) -> list[str]:
    """Record the ids as replay's workers do; the ones taken as duplicates come back."""
    encoded = encode_results("web", [_result(m) for m in message_ids])
    before = store.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    store.record_encoded(encoded, destinations={"s": "d"}, dedupe=True)
    rows = store.conn.execute(
        "SELECT message_id FROM events WHERE id > ? AND duplicate = 1 ORDER BY id", [before]
    ).fetchall()
    return [m for (m,) in rows]


def test_dedupe_sees_every_event_other_writers_recorded_in_between(tmp_path):
    # Two replay workers and a listener on one store: a worker dedupes against what
    # the others wrote since its last chunk, not only against its own events.
    path = tmp_path / "state.db"
    with (
        SqliteStore.open(path) as worker_a,
        SqliteStore.open(path) as worker_b,
        SqliteStore.open(path) as listener,
    ):
        listener.record_results([_result("before")], destinations={"s": "d"})
        assert _dedupe(worker_a, "x", "before") == ["before"]
        assert _dedupe(worker_b, "x", "y") == ["x"]
        listener.record_results([_result("z")], destinations={"s": "d"})
        assert _dedupe(worker_a, "y", "z", "w") == ["y", "z"]
        assert _dedupe(worker_a, "w", "new") == ["w"]


def test_recorded_rows_keep_every_value_whatever_their_group(tmp_path):
    # Values shared by a group of rows are bound once for many rows: quotes, NUL and
    # the exact float time come back as they were, each row in its own group.
    sync = 'it\'s "quoted"\x00'
    results = [
        _result("p"),
        EventResult(
            "f", "web", {"messageId": "f"},
            ContractResult("allowed", {"messageId": "f"}),
            decisions=[Decision("f", sync, Status.FILTERED)],
        ),
        EventResult(
            "m", "web", {"messageId": "m"},
            decisions=[Decision("m", sync, Status.MAPPING_ERROR, event_type="custom",
                                error="needs 'email'")],
        ),
    ]  # fmt: skip
    now = 1764169200.123456789
    with SqliteStore.open(tmp_path / "state.db") as store:
        store.record_results(results, destinations={"s": "d", sync: "dest 'x'"}, now=now)
        deliveries = store.conn.execute(
            "SELECT message_id, source, sync, destination, event_type, status, stage, error,"
            " payload, created_at, next_attempt_at FROM deliveries ORDER BY id"
        ).fetchall()
        events = store.conn.execute(
            "SELECT message_id, source, received_at, contract_outcome, duplicate FROM events"
            " ORDER BY id"
        ).fetchall()
    assert deliveries == [
        ("p", "web", "s", "d", "custom", "pending", "delivery", None, '{"m":"p"}', now, now),
        ("f", "web", sync, "dest 'x'", None, "filtered", "filter", None, None, now, None),
        ("m", "web", sync, "dest 'x'", "custom", "mapping_error", "mapping", "needs 'email'",
         None, now, None),
    ]  # fmt: skip
    assert events == [("p", "web", now, None, 0), ("f", "web", now, "allowed", 0),
                      ("m", "web", now, None, 0)]  # fmt: skip


def test_many_rows_are_recorded_in_full_statements_and_a_last_partial_one(tmp_path):
    # Rows go into multi-row INSERTs of at most 999 parameters: 1,000 events of 3
    # parameters each fill three statements of 333 rows and leave one row over.
    results = [_result(f"m{n}", Status.PENDING if n % 3 else Status.FILTERED) for n in range(1000)]
    with SqliteStore.open(tmp_path / "state.db") as store:
        recorded = store.record_results(results, destinations={"s": "d"})
        events = store.conn.execute("SELECT id, message_id FROM events ORDER BY id").fetchall()
        deliveries = store.conn.execute(
            "SELECT d.id, d.message_id, d.status, e.message_id FROM deliveries d"
            " JOIN events e ON e.id = d.event_id ORDER BY d.id"
        ).fetchall()
    assert [m for _, m in events] == [f"m{n}" for n in range(1000)]
    assert [(m, status) for _, m, status, _ in deliveries] == [
        (f"m{n}", "pending" if n % 3 else "filtered") for n in range(1000)
    ]
    assert all(m == event_message for _, m, _, event_message in deliveries)
    assert [p.message_id for p in recorded.pending] == [f"m{n}" for n in range(1000) if n % 3]


def test_a_checkpoint_restarts_a_wal_grown_past_the_limit(tmp_path, monkeypatch):
    # Writers that never pause (replay's workers) keep a PASSIVE checkpoint from ever
    # catching up, and SQLite only starts a WAL over once one has: past the limit the
    # checkpoint holds them off (the writers' file lock) and RESTARTs, and the next
    # write starts the WAL again. The bulk is copied first, without holding them off.
    with SqliteStore.open(tmp_path / "state.db") as store:
        store.record_results([_result(f"small-{n}") for n in range(3)], destinations={})
        wal = tmp_path / "state.db-wal"
        limit = wal.stat().st_size + 1
        monkeypatch.setattr("streamctl.store.connection.WAL_RESTART_BYTES", limit)
        checkpoints: list[tuple[str, bool]] = []  # (statement, writers held off)

        def trace(statement: str) -> None:
            if "wal_checkpoint" in statement:
                checkpoints.append((statement, _writers_held_off(tmp_path / "state.db-writer")))

        store.conn.set_trace_callback(trace)
        store.checkpoint()
        assert checkpoints == [("PRAGMA wal_checkpoint(PASSIVE)", False)]
        written = 0
        while wal.stat().st_size < limit:  # the WAL grows past the limit
            batch = [_result(f"big-{n}") for n in range(written, written + 1000)]
            store.record_results(batch, destinations={})
            written += len(batch)
        checkpoints.clear()
        store.checkpoint()
        assert checkpoints == [
            ("PRAGMA wal_checkpoint(PASSIVE)", False),
            ("PRAGMA wal_checkpoint(RESTART)", True),
        ]
        store.record_results([_result("after")], destinations={})
        store.conn.set_trace_callback(None)
        frames = store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    assert frames < 10  # the WAL started over: only the last write is in it


def _writers_held_off(lock_path) -> bool:
    with open(lock_path, "rb") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False
