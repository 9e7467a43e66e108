"""The `postgres` storage destination's own loading paths, against the suite's PostgreSQL.

What every storage destination does (the layout, discards, retries) is tested on all
three in test_dest_storage.py; these are PostgreSQL's specifics: batches loaded at once
from the delivery's threads, and the ways a batch reaches its tables.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from streamctl.destinations import postgres_backend
from streamctl.destinations.base import MappedEvent
from streamctl.destinations.postgres import PostgresDestination
from streamctl.destinations.warehouse import layout_event
from tests.test_dest_storage import Warehouse, event, stored

START = datetime(2026, 12, 3, 10, tzinfo=UTC)


def payloads(destination: PostgresDestination, events: Sequence[dict[str, Any]]) -> list[Any]:
    return [stored(destination.build_payload("event", MappedEvent({}), e)) for e in events]


def identifies(prefix: str, users: Sequence[int], plan: str) -> list[dict[str, Any]]:
    """One identify per user, received one second apart in the order given."""
    return [
        event(
            f"{prefix}-{n}",
            "identify",
            userId=f"u{n:03}",
            receivedAt=(START + timedelta(seconds=i)).isoformat(),
            traits={"plan": plan},
        )
        for i, n in enumerate(users)
    ]


def waiting_for_locks(url: str, schema: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s",
            [f'%"{schema}"."users"%'],
        ).fetchone()
    return int(row[0]) if row else 0


def test_batches_sharing_users_loaded_at_once_wait_for_each_other(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two batches upserting the same users, one in ascending and one in descending
    order of their identifies, both held up on a user a third session has locked:
    once it lets go, both commit (locked in different orders, they deadlocked)."""
    warehouse = Warehouse("postgres", tmp_path, postgres_url)
    destination = warehouse.destination()
    assert isinstance(destination, PostgresDestination)
    users = range(200)
    destination.load(payloads(destination, identifies("seed", users, "free")))
    ascending = payloads(destination, identifies("a", users, "pro"))
    descending = payloads(destination, identifies("b", reversed(users), "team"))
    errors: list[BaseException] = []

    def load(batch: list[Any]) -> None:
        try:
            destination.load(batch)
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(postgres_url) as blocker:
        blocker.execute(
            f'SELECT 1 FROM "{warehouse.schema}".users WHERE id = %s FOR UPDATE', ["u100"]
        )
        threads = [threading.Thread(target=load, args=(b,)) for b in (ascending, descending)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while waiting_for_locks(postgres_url, warehouse.schema) < 2 and not errors:
            assert time.monotonic() < deadline, "the two loads never both waited"
            time.sleep(0.02)
        blocker.commit()
    for thread in threads:
        thread.join(30)
    asyncio.run(destination.aclose())
    assert errors == []
    # Each user's latest identify (by received_at) wins, whichever batch committed first.
    plans = dict(warehouse.query("SELECT id, plan FROM {t:users}"))
    assert len(plans) == 200
    assert plans["u000"] == "team" and plans["u199"] == "pro"
    assert warehouse.query("SELECT count(*) FROM {t:identifies}") == [(600,)]


def test_a_batch_larger_than_a_statement_goes_in_parts_and_retries_alike(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_backend, "MAX_STATEMENT_BYTES", 2_000)
    warehouse = Warehouse("postgres", tmp_path, postgres_url)
    destination = warehouse.destination()
    batch = [
        event(f"m{n}", event="Order Completed", properties={"note": "x" * 300, "nul": "a\u0000b"})
        for n in range(20)
    ]
    batch += identifies("i", range(20), "pro")
    rows = [orjson.loads(orjson.dumps(layout_event(e)))["rows"]["tracks"] for e in batch[:20]]
    assert len(postgres_backend._json_parts(rows)) > 1
    for _ in range(2):  # the second time, every key is taken: nothing written twice
        destination.load(payloads(destination, batch))
    asyncio.run(destination.aclose())
    for table in ("tracks", "order_completed", "identifies", "users"):
        assert warehouse.query(f"SELECT count(*) FROM {{t:{table}}}") == [(20,)], table
    assert warehouse.query("SELECT DISTINCT nul FROM {t:order_completed}") == [("ab",)]


def test_a_large_batch_is_cut_into_parts_serialized_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_backend, "MAX_STATEMENT_BYTES", 20_000)
    serialized: list[int] = []
    json = postgres_backend._json

    def counting(rows: list[dict[str, Any]]) -> bytes:
        serialized.append(len(rows))
        return json(rows)

    monkeypatch.setattr(postgres_backend, "_json", counting)
    # Rows that grow along the batch: the sample (the first rows) underestimates the rest.
    rows = [{"id": f"m{n}", "note": "é" * (n // 3)} for n in range(1_000)]
    parts = postgres_backend._json_parts(rows)
    decoded = [orjson.loads(part.obj) for part in parts]
    assert [row for part in decoded for row in part] == rows
    assert len(parts) > 2 and all(len(part.obj) <= 20_000 for part in parts)
    # Each row once, the sample once more, and what a too-large part's halves took again.
    assert sum(serialized) < len(rows) * 1.5
    # A batch of usual size: one part, one serialization beside the sample's.
    serialized.clear()
    assert len(postgres_backend._json_parts(rows[:200])) == 1
    assert serialized == [postgres_backend.SAMPLE_ROWS, 200]


# Strings CSV and JSON quote differently, and the values CSV's `null` could be taken for.
AWKWARD = [
    'a,b', 'say "hi"', "back\\slash", "ends\\", '\\"', '"', "", "null", "NULL", " pad ",
    "é漢字🙂", "\\.", "[[1,2],[3,4]]", "],[", "\u2028", "it's", "C:\\new",
]  # fmt: skip


@pytest.mark.parametrize("control", ["", "line\nbreak", "tab\there"])
def test_strings_reach_their_columns_as_they_were_sent(
    tmp_path: Path, postgres_url: str, control: str
) -> None:
    """Every string comes back as sent, with the batch's other values (numbers, booleans,
    timestamps); a control character in one (JSON writes `\\n`, which CSV would read as
    two characters) sends its table's rows the other way, with the same result."""
    warehouse = Warehouse("postgres", tmp_path, postgres_url)
    texts = [*AWKWARD, control] if control else AWKWARD
    batch = [
        event(f"m{n}", event="Typed", properties={"text": text, "n": n, "ok": n % 2 == 0})
        for n, text in enumerate(texts)
    ]
    if control:  # with and without a control character, so both ways are taken
        assert postgres_backend._csv([(text,) for text in texts]) is None
    assert postgres_backend._csv([(text,) for text in AWKWARD]) is not None
    destination = warehouse.destination()
    destination.load(payloads(destination, batch))
    asyncio.run(destination.aclose())
    rows = warehouse.query("SELECT id, text, n, ok, received_at FROM {t:typed} ORDER BY n")
    assert [(r[1], r[2], r[3]) for r in rows] == [(t, n, n % 2 == 0) for n, t in enumerate(texts)]
    assert all(isinstance(r[4], datetime) for r in rows)
