"""Read-side queries of the store for `errors`, `status` and `explain` (docs/store.md).

    with SqliteStore.for_project(project, readonly=True) as store:
        rows = store.list_errors(ErrorFilter(syncs=("to-braze",), since=time.time() - 3600))
        funnel = store.sync_status(since=time.time() - 86400, syncs=[s.name for s in project.syncs])
        story = store.explain("3f1c...")

The functions here take the SQLite connection; `SqliteStore` offers them as the
methods of the `Store` protocol.

Everything returns plain JSON-ready data (times as ISO 8601 UTC strings); the CLI
renders it and redacts secrets.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streamctl.core.rows import PartitionLag
from streamctl.core.timestamps import iso
from streamctl.store.connection import SqlReader
from streamctl.store.schema import PROBLEM_STATUSES, PROBLEM_STATUSES_WHERE, message_key

# `--status failed`: everything that ended without delivery for a reason worth a look.
STATUS_ALIASES = {"failed": ("archived", "mapping_error", "function_error", "blocked")}
VIOLATION_PREFIX = "v"  # ids of contract violations in `errors`: v12
REJECTED_PREFIX = "r"  # ids of rejected input (a source's bad message) in `errors`: r7
REJECTED_STATUS = "rejected"


@dataclass(frozen=True)
class ErrorFilter:
    syncs: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    since: float | None = None  # Unix seconds
    limit: int | None = None
    status_codes: tuple[int, ...] = ()  # the last attempt's HTTP status
    until: float | None = None  # Unix seconds, exclusive


def _statuses(filters: ErrorFilter) -> tuple[str, ...]:
    if not filters.statuses:
        return PROBLEM_STATUSES
    out: list[str] = []
    for status in filters.statuses:
        out.extend(STATUS_ALIASES.get(status, (status,)))
    return tuple(dict.fromkeys(out))


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


# -- errors ----------------------------------------------------------------------------------


def list_errors(store: SqlReader, filters: ErrorFilter) -> list[dict[str, Any]]:
    """Deliveries that did not (yet) get through, and, for `--stage contract`, every
    contract violation; newest first. Keys as SPEC §3 `errors --json`."""
    rows = _delivery_errors(store, filters)
    if "contract" in filters.stages:
        rows.extend(_violations(store, filters))
    if _lists_rejected(filters):
        rows.extend(_rejected(store, filters))
    rows.sort(key=lambda r: r["_at"], reverse=True)
    if filters.limit is not None:
        rows = rows[: filters.limit]
    for row in rows:
        del row["_at"]
    return rows


def _delivery_errors(store: SqlReader, filters: ErrorFilter) -> list[dict[str, Any]]:
    statuses = _statuses(filters)
    where = [f"status IN ({_marks(statuses)})"]
    params: list[object] = list(statuses)
    # With the partial index's own term, and the other columns behind a unary `+`
    # (SQLite then ignores their indexes), the search walks only the problem rows.
    plus = index = ""
    if set(statuses) <= set(PROBLEM_STATUSES):
        where.append(PROBLEM_STATUSES_WHERE)
        plus = "+" if store.dialect == "sqlite" else ""  # PostgreSQL: no unary + on text
        # One status: newest first among its rows alone. Several: newest first among the
        # problem rows (SQLite's planner would rather sort every problem row of those
        # statuses; PostgreSQL's takes no INDEXED BY and needs none).
        name = "deliveries_problems_status" if len(statuses) == 1 else "deliveries_problems"
        if store.dialect == "sqlite" and _has_index(store, name):
            index = f" INDEXED BY {name}"
    if filters.syncs:
        where.append(f"{plus}sync IN ({_marks(filters.syncs)})")
        params.extend(filters.syncs)
    if filters.stages:  # blocked deliveries are at the contract stage too
        where.append(f"stage IN ({_marks(filters.stages)})")
        params.extend(filters.stages)
    if filters.since is not None:
        where.append(f"{plus}created_at >= ?")
        params.append(filters.since)
    if filters.until is not None:
        where.append(f"{plus}created_at < ?")
        params.append(filters.until)
    if filters.status_codes:
        where.append(f"{plus}status_code IN ({_marks(filters.status_codes)})")
        params.extend(filters.status_codes)
    sql = (
        "SELECT id, message_id, sync, event_type, stage, status, attempts, status_code, error,"
        " first_attempt_at, last_attempt_at, next_attempt_at, created_at, destination, source"
        f" FROM deliveries{index} WHERE {' AND '.join(where)} ORDER BY id DESC"
    )
    fetched = _select_newest(store, sql, params, filters.limit)
    return [
        {
            "id": r[0],
            "message_id": r[1],
            "sync": r[2],
            "event_type": r[3],
            "stage": r[4],
            "status": r[5],
            "attempts": r[6] or 0,
            "status_code": r[7],
            "error": r[8],
            "first_attempt_at": iso(r[9]),
            "last_attempt_at": iso(r[10]),
            "next_attempt_at": iso(r[11]) if r[5] == "retrying" else None,
            "destination": r[13],
            "source": r[14],
            "created_at": iso(r[12]),
            "_at": r[10] or r[12],
        }
        for r in fetched
    ]


def _has_index(store: SqlReader, name: str) -> bool:
    """Whether the store has the index (a store opened readonly may predate it)."""
    with store.lock:
        found = store.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", [name]
        ).fetchone()
    return found is not None


def _select_newest(
    store: SqlReader, sql: str, params: list[object], limit: int | None
) -> list[tuple[Any, ...]]:
    """Rows of an `ORDER BY id DESC` query, at most `limit` of them."""
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows: list[tuple[Any, ...]] = store.rows(sql, params)
    return rows


def _window(column: str, filters: ErrorFilter) -> tuple[list[str], list[object]]:
    """The WHERE terms (and their parameters) of `--since` / `--until` on `column`."""
    where, params = ["1 = 1"], list[object]()
    if filters.since is not None:
        where.append(f"{column} >= ?")
        params.append(filters.since)
    if filters.until is not None:
        where.append(f"{column} < ?")
        params.append(filters.until)
    return where, params


def _violations(store: SqlReader, filters: ErrorFilter) -> list[dict[str, Any]]:
    if filters.status_codes:  # violations have no HTTP status
        return []
    where, params = _window("v.at", filters)
    if filters.statuses:
        where.append(f"v.outcome IN ({_marks(filters.statuses)})")
        params.extend(filters.statuses)
    sql = (
        "SELECT v.id, v.message_id, v.source, v.contract, v.version, v.event_name, v.kind,"
        " v.pointer, v.message, v.outcome, v.at FROM violations v"
        f" WHERE {' AND '.join(where)} ORDER BY v.id DESC"
    )
    fetched = _select_newest(store, sql, params, filters.limit)
    return [
        {
            "id": f"{VIOLATION_PREFIX}{r[0]}",
            "message_id": r[1],
            "sync": None,
            "event_type": None,
            "stage": "contract",
            "status": r[9],
            "attempts": 0,
            "status_code": None,
            "error": f"{r[6]} at {r[7] or '/'}: {r[8]}",
            "first_attempt_at": None,
            "last_attempt_at": None,
            "next_attempt_at": None,
            "source": r[2],
            "contract": r[3],
            "version": r[4],
            "event_name": r[5],
            "created_at": iso(r[10]),
            "_at": r[10],
        }
        for r in fetched
    ]


def _lists_rejected(filters: ErrorFilter) -> bool:
    """Rejected input belongs to no sync and has no HTTP status: listed by default, with
    `--stage source` or `--status rejected`, and left out by filters it cannot match."""
    if filters.syncs or filters.status_codes:
        return False
    if filters.stages and "source" not in filters.stages:
        return False
    return not filters.statuses or REJECTED_STATUS in filters.statuses


def _rejected(store: SqlReader, filters: ErrorFilter) -> list[dict[str, Any]]:
    if not _has_table(store, "rejected_input"):  # a store written by an older streamctl
        return []
    where, params = _window("at", filters)
    sql = (
        "SELECT id, source, origin, reason, at FROM rejected_input"
        f" WHERE {' AND '.join(where)} ORDER BY id DESC"
    )
    return [
        {
            "id": f"{REJECTED_PREFIX}{r[0]}",
            "message_id": None,
            "sync": None,
            "event_type": None,
            "stage": "source",
            "status": REJECTED_STATUS,
            "attempts": 0,
            "status_code": None,
            "error": r[3],
            "first_attempt_at": None,
            "last_attempt_at": None,
            "next_attempt_at": None,
            "source": r[1],
            "origin": r[2],
            "created_at": iso(r[4]),
            "_at": r[4],
        }
        for r in _select_newest(store, sql, params, filters.limit)
    ]


def _has_table(store: SqlReader, name: str) -> bool:
    if store.dialect == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = "SELECT 1 WHERE to_regclass(?) IS NOT NULL"
    return store.row(sql, [name]) is not None


def _rejected_detail(store: SqlReader, error_id: str) -> dict[str, Any] | None:
    number = error_id[len(REJECTED_PREFIX) :]
    if not number.isdigit() or not _has_table(store, "rejected_input"):
        return None
    row = store.row(
        "SELECT source, origin, reason, excerpt, at FROM rejected_input WHERE id = ?",
        [int(number)],
    )
    if row is None:
        return None
    source, origin, reason, excerpt, at = row
    return {
        "id": error_id, "stage": "source", "status": REJECTED_STATUS, "source": source,
        "origin": origin, "reason": reason, "excerpt": excerpt, "at": iso(at),
    }  # fmt: skip


def rejected_counts(store: SqlReader, since: float) -> dict[str, int]:
    """Input each source rejected since `since` (`status`)."""
    if not _has_table(store, "rejected_input"):
        return {}
    rows = store.rows(
        "SELECT source, count(*) FROM rejected_input WHERE at >= ? GROUP BY source ORDER BY source",
        [since],
    )
    return {source: int(count) for source, count in rows}


def partition_lags(store: SqlReader) -> list[PartitionLag]:
    if not _has_table(store, "source_lag"):
        return []
    rows = store.rows(
        "SELECT source, topic, partition_id, end_offset, committed, updated_at FROM source_lag"
        " ORDER BY source, topic, partition_id"
    )
    return [PartitionLag(*row) for row in rows]


def error_detail(store: SqlReader, error_id: str) -> dict[str, Any] | None:
    """`errors show ID`: the delivery (or violation, or rejected input), its event,
    payload and every attempt."""
    if error_id.startswith(REJECTED_PREFIX):
        return _rejected_detail(store, error_id)
    if error_id.startswith(VIOLATION_PREFIX):
        return _violation_detail(store, error_id)
    try:
        delivery_id = int(error_id)
    except ValueError:
        return None
    delivery = _delivery(store, delivery_id)
    if delivery is None:
        return None
    delivery["event"] = _event(store, delivery.pop("event_id"))
    return delivery


def _violation_detail(store: SqlReader, error_id: str) -> dict[str, Any] | None:
    try:
        number = int(error_id[len(VIOLATION_PREFIX) :])
    except ValueError:
        return None
    with store.lock:
        row = store.conn.execute(
            "SELECT id, event_id, message_id, source, contract, version, event_name, kind,"
            " pointer, message, outcome, at FROM violations WHERE id = ?",
            [number],
        ).fetchone()
    if row is None:
        return None
    keys = ("id", "event_id", "message_id", "source", "contract", "version", "event_name",
            "kind", "pointer", "message", "outcome", "at")  # fmt: skip
    detail = dict(zip(keys, row, strict=True))
    detail["id"] = error_id
    detail["stage"] = "contract"
    detail["at"] = iso(detail["at"])
    detail["event"] = _event(store, detail.pop("event_id"))
    return detail


DELIVERY_COLUMNS = (
    "id", "event_id", "message_id", "source", "sync", "destination", "event_type", "status",
    "stage", "error", "user_key", "payload", "attempts", "status_code", "response", "latency_ms",
    "created_at", "first_attempt_at", "last_attempt_at", "next_attempt_at", "finished_at",
)  # fmt: skip
TIME_COLUMNS = (
    "created_at",
    "first_attempt_at",
    "last_attempt_at",
    "next_attempt_at",
    "finished_at",
)


def _delivery_dict(store: SqlReader, row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    delivery = dict(zip(DELIVERY_COLUMNS, row, strict=True))
    delivery["payload"] = orjson.loads(delivery["payload"]) if delivery["payload"] else None
    for column in TIME_COLUMNS:
        delivery[column] = iso(delivery[column])
    delivery["attempts_made"] = delivery.pop("attempts") or 0
    delivery["attempts"] = _attempts(store, delivery["id"])
    if delivery["status"] == "function_error":
        delivery["traceback"] = _traceback(store, delivery["event_id"], delivery["sync"])
    return delivery


def _delivery(store: SqlReader, delivery_id: int) -> dict[str, Any] | None:
    with store.lock:
        row = store.conn.execute(
            f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM deliveries WHERE id = ?", [delivery_id]
        ).fetchone()
    return None if row is None else _delivery_dict(store, row)


def _attempts(store: SqlReader, delivery_id: int) -> list[dict[str, Any]]:
    with store.lock:
        rows = store.conn.execute(
            "SELECT at, status, status_code, latency_ms, error, response, retry_after"
            " FROM attempts WHERE delivery_id = ? ORDER BY id",
            [delivery_id],
        ).fetchall()
    return [
        {
            "at": iso(r[0]),
            "outcome": r[1],
            "status_code": r[2],
            "latency_ms": round(r[3], 1) if r[3] is not None else None,
            "error": r[4],
            "response": r[5],
            "retry_after": r[6],
        }
        for r in rows
    ]


def _traceback(store: SqlReader, event_id: int, sync: str) -> str | None:
    with store.lock:
        row = store.conn.execute(
            "SELECT traceback FROM function_errors WHERE event_id = ? AND sync = ? LIMIT 1",
            [event_id, sync],
        ).fetchone()
    return row[0] if row else None


def _event(store: SqlReader, event_id: int | None) -> dict[str, Any] | None:
    if event_id is None:
        return None
    with store.lock:
        row = store.conn.execute(
            "SELECT id, source, message_id, received_at, payload, contract_outcome, duplicate"
            " FROM events WHERE id = ?",
            [event_id],
        ).fetchone()
    if row is None:
        return None
    return {
        "id": row[0],
        "source": row[1],
        "message_id": row[2],
        "received_at": iso(row[3]),
        "payload": orjson.loads(row[4]),
        "contract": row[5],
        "duplicate": bool(row[6]),
    }


def archived_ids(store: SqlReader, filters: ErrorFilter) -> list[int]:
    """`errors retry`: archived deliveries matching the filters that can be sent again
    (they have a payload: mapping errors and blocked events never do)."""
    narrowed = ErrorFilter(filters.syncs, ("archived",), (), filters.since, filters.limit)
    return [
        int(row["id"]) for row in _delivery_errors(store, narrowed) if row["stage"] == "delivery"
    ]


def syncs_of(store: SqlReader, ids: Sequence[int]) -> list[str]:
    """The syncs the deliveries `ids` belong to, by name."""
    with store.lock:
        rows = store.conn.execute(
            "SELECT DISTINCT sync FROM deliveries WHERE id IN (SELECT value FROM json_each(?))"
            " ORDER BY sync",
            [orjson.dumps(list(ids)).decode()],
        ).fetchall()
    return [r[0] for r in rows]


def statuses_of(store: SqlReader, ids: Sequence[int]) -> dict[str, int]:
    """How many of the deliveries `ids` are in each status now."""
    with store.lock:
        rows = store.conn.execute(
            "SELECT status, count(*) FROM deliveries WHERE id IN (SELECT value FROM json_each(?))"
            " GROUP BY status",
            [orjson.dumps(list(ids)).decode()],
        ).fetchall()
    return {r[0]: r[1] for r in rows}


# -- status --------------------------------------------------------------------------------------

FUNNEL = (
    "blocked",
    "dropped",
    "filtered",
    "mapping_error",
    "function_error",
    "delivered",
    "archived",
)


def sync_status(store: SqlReader, since: float, syncs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The funnel of each sync over deliveries created since `since`, the error rate
    (failed attempts / attempts) and request latency percentiles of attempts since then.
    `syncs` are listed even with no rows (in that order, then any others found)."""
    with store.lock:
        funnel = store.conn.execute(
            "SELECT sync, count(DISTINCT event_id), "
            + ", ".join(f"count(*) FILTER (WHERE status = '{s}')" for s in FUNNEL)
            + ", count(*) FILTER (WHERE status IN ('pending', 'retrying'))"
            " FROM deliveries WHERE created_at >= ? GROUP BY sync",
            [since],
        ).fetchall()
        attempts = store.conn.execute(
            "SELECT sync, count(*), count(*) FILTER (WHERE status != 'delivered') FROM attempts"
            " WHERE at >= ? GROUP BY sync",
            [since],
        ).fetchall()
    by_sync: dict[str, dict[str, Any]] = {name: empty_status(name) for name in syncs}
    for row in funnel:
        entry = by_sync.setdefault(row[0], empty_status(row[0]))
        entry["received"] = row[1]
        for status, value in zip(FUNNEL, row[2:-1], strict=True):
            entry[_funnel_key(status)] = value or 0
        entry["retrying"] = row[-1] or 0
    for sync, total, failed in attempts:
        entry = by_sync.setdefault(sync, empty_status(sync))
        entry["attempts"] = total
        entry["failed_attempts"] = failed or 0
        entry["error_rate"] = round((failed or 0) / total, 4) if total else 0.0
        entry["latency_ms"] = latency_percentiles(store, sync, since, total)
    return list(by_sync.values())


def _funnel_key(status: str) -> str:
    return {"mapping_error": "mapping_errors", "function_error": "function_errors"}.get(
        status, status
    )


def empty_status(sync: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"sync": sync, "received": 0}
    for status in FUNNEL:
        entry[_funnel_key(status)] = 0
    entry.update(
        retrying=0,
        attempts=0,
        failed_attempts=0,
        error_rate=0.0,
        latency_ms={"p50": None, "p95": None, "p99": None},
    )
    return entry


def latency_percentiles(
    store: SqlReader, sync: str, since: float, count: int | None = None
) -> dict[str, float | None]:
    """Request latency of the sync's attempts since `since`: p50, p95, p99 (nearest rank)."""
    with store.lock:
        if count is None:
            counted = store.conn.execute(
                "SELECT count(*) FROM attempts WHERE sync = ? AND at >= ? AND latency_ms IS NOT NULL",
                [sync, since],
            ).fetchone()
            count = counted[0] if counted else 0
        out: dict[str, float | None] = {}
        for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            if not count:
                out[name] = None
                continue
            offset = max(0, min(count - 1, int(fraction * count + 0.999999) - 1))
            row = store.conn.execute(
                "SELECT latency_ms FROM attempts WHERE sync = ? AND at >= ?"
                " AND latency_ms IS NOT NULL ORDER BY latency_ms LIMIT 1 OFFSET ?",
                [sync, since, offset],
            ).fetchone()
            out[name] = round(row[0], 1) if row else None
    return out


# -- explain ---------------------------------------------------------------------------------------


def explain(store: SqlReader, message_id: str) -> list[dict[str, Any]]:
    """Every receipt of `message_id` (duplicates included), each with its contract check,
    violations, and per sync every decision with its attempts and responses."""
    with store.lock:
        event_ids = [
            r[0]
            for r in store.conn.execute(
                "SELECT id FROM events WHERE message_key = ? AND message_id = ? ORDER BY id",
                [message_key(message_id), message_id],
            ).fetchall()
        ]
        if not event_ids:  # an id a function gave to an event it produced
            event_ids = [
                r[0]
                for r in store.conn.execute(
                    "SELECT DISTINCT event_id FROM deliveries WHERE message_id = ? ORDER BY event_id",
                    [message_id],
                ).fetchall()
            ]
    story = []
    for event_id in event_ids:
        event = _event(store, event_id)
        if event is None:
            continue
        with store.lock:
            violations = store.conn.execute(
                "SELECT contract, version, event_name, kind, pointer, message, outcome"
                " FROM violations WHERE event_id = ? ORDER BY id",
                [event_id],
            ).fetchall()
            rows = store.conn.execute(
                f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM deliveries WHERE event_id = ? ORDER BY id",
                [event_id],
            ).fetchall()
        keys = ("contract", "version", "event_name", "kind", "pointer", "message", "outcome")
        event["violations"] = [dict(zip(keys, v, strict=True)) for v in violations]
        event["deliveries"] = [_delivery_dict(store, row) for row in rows]
        story.append(event)
    return story
