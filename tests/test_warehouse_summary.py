"""`plan_summary` (a batch planned from a summary of its values) against `plan_load`
(the same batch planned value by value): the same schema changes, column types and
discards on the same batches, schema known or not, with and without `widen_to_text`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streamctl.destinations.warehouse import (
    DISCARDS,
    INT64,
    ColumnSummary,
    LoadPlan,
    SummaryPlan,
    TableRows,
    TableSchema,
    ValueKind,
    as_text,
    is_timestamp,
    layout_event,
    layout_mapped,
    merge_schema,
    plan_load,
    plan_summary,
)
from streamctl.destinations.warehouse import _unique_keys as unique_keys


def kind_of(value: Any) -> ValueKind:
    """What a Python value of a decoded payload is, as `ValueKind` names it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint" if INT64[0] <= value <= INT64[1] else "bignum"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "timestamp" if is_timestamp(value) else "string"
    return "json"


def summarize(batch: TableRows) -> list[ColumnSummary]:
    """The summary a database's query gives, made in Python (the reference)."""
    summary: list[ColumnSummary] = []
    for table, entries in batch.tables.items():
        kinds: dict[str, dict[ValueKind, int]] = {}
        first: dict[str, ValueKind] = {}
        for _, _, row in unique_keys(table, entries):
            for column, value in row.items():
                if value is None:
                    continue
                kind = kind_of(value)
                counts = kinds.setdefault(column, {})
                counts[kind] = counts.get(kind, 0) + 1
                first.setdefault(column, kind)
        summary += [ColumnSummary(table, c, kinds[c], first[c]) for c in kinds]
    return summary


def collect(payloads: Sequence[dict[str, Any]]) -> TableRows:
    """A fresh batch (plan_load changes the rows it is given)."""
    return TableRows.collect(orjson.loads(orjson.dumps(list(payloads))))


def summary_discards(plan: SummaryPlan, batch: TableRows) -> list[tuple[Any, ...]]:
    """The discards rows a backend writes for a summary plan, carried ones first."""
    rows = [(*d, message_id, received) for message_id, received, d in batch.discards]
    for table, entries in batch.tables.items():
        for column in plan.tables[table]:
            if not column.discard:
                continue
            for message_id, received, row in unique_keys(table, entries):
                value = row.get(column.name)
                if value is not None and kind_of(value) in column.discard:
                    reason = column.reason(kind_of(value))
                    rows.append((table, column.name, as_text(value), reason, message_id, received))
    return rows


def compare(
    payloads: Sequence[dict[str, Any]],
    schema: dict[str, TableSchema] | None = None,
    widen_to_text: bool = False,
) -> SummaryPlan:
    """Plan both ways until no change is left; assert they agree at every step."""
    schema = {} if schema is None else {t: dict(c) for t, c in schema.items()}
    summary = summarize(collect(payloads))
    carried = bool(collect(payloads).discards)
    for _ in range(5):
        expected: LoadPlan = plan_load(collect(payloads), schema, widen_to_text=widen_to_text)
        got = plan_summary(summary, schema, widen_to_text=widen_to_text, carried_discards=carried)
        assert got.changes == expected.changes
        if not expected.changes:
            break
        merge_schema(schema, expected.changes)
    loads = dict(expected.tables)
    if expected.users is not None:
        loads["users"] = expected.users
    assert {t: [(c.name, c.type) for c in cols] for t, cols in got.tables.items()} == {
        t: list(zip(load.columns, load.types, strict=True)) for t, load in loads.items()
    }
    expected_discards = sorted(expected.discards.tuples()) if expected.discards else []
    assert sorted(summary_discards(got, collect(payloads))) == expected_discards
    assert got.discards == bool(expected_discards)
    return got


def track(message_id: str, name: str = "Order Completed", **properties: Any) -> dict[str, Any]:
    return layout_event(
        {
            "type": "track",
            "messageId": message_id,
            "userId": "u1",
            "receivedAt": "2026-12-03T10:00:00.000Z",
            "timestamp": "2026-12-03T09:59:59.500Z",
            "event": name,
            "context": {"library": {"name": "analytics.js"}, "page": {"url": "https://x"}},
            "properties": properties,
        }
    )


def identify(message_id: str, received: str, **traits: Any) -> dict[str, Any]:
    return layout_event(
        {
            "type": "identify",
            "messageId": message_id,
            "userId": "u1",
            "receivedAt": received,
            "traits": traits,
        }
    )


def test_every_call_and_new_columns_give_the_same_changes() -> None:
    payloads = [
        track("m1", total=30, currency="EUR", products=[{"id": "p1"}], at="2026-12-01T00:00:00Z"),
        track("m2", "Signed Up", plan="pro", trial=True),
        identify("m3", "2026-12-03T10:00:00.000Z", email="a@example.com", plan="free"),
        identify("m4", "2026-12-03T11:00:00.000Z", plan="pro", seats=3),
        layout_event({"type": "page", "messageId": "m5", "name": "Home", "properties": {"t": 1}}),
        layout_event({"type": "group", "messageId": "m6", "groupId": "g", "traits": {"n": 1.5}}),
        layout_event({"type": "alias", "messageId": "m7", "previousId": "a1"}),
    ]
    plan = compare(payloads)
    assert {c.name: c.type for c in plan.tables["order_completed"]}["at"] == "timestamp"


@pytest.mark.parametrize("widen_to_text", [False, True])
@pytest.mark.parametrize(
    ("values", "known"),
    [
        ([30, 30.5], None),  # bigint then double: a double column
        ([30.5, 30], None),
        ([30, "thirty"], None),  # first value decides; the string is discarded
        (["thirty", 30], None),  # a text column takes the integer as its text
        ([True, 1, "x"], None),
        ([1, 2**63], None),  # beyond int64: text, so discarded from a bigint column
        (["2026-12-03T10:00:00Z", "soon"], None),  # a timestamp column refuses other text
        (["soon", "2026-12-03T10:00:00Z"], None),
        ([1, 2], "double"),  # an integer into a known double column
        ([1.5, 2], "bigint"),  # a double widens a known bigint column
        (["x", 2], "boolean"),
        ([1, 2.5, "x"], "bigint"),
        ([True, False], "text"),
    ],
)
def test_type_conflicts_give_the_same_types_and_discards(
    values: list[Any], known: str | None, widen_to_text: bool
) -> None:
    payloads = [track(f"m{i}", total=v) for i, v in enumerate(values)]
    schema: dict[str, TableSchema] | None = None
    if known is not None:
        schema = {}
        merge_schema(schema, plan_load(collect(payloads[:1]), {}).changes)
        schema["order_completed"]["total"] = known  # type: ignore[assignment]
    compare(payloads, schema, widen_to_text)


def test_collisions_and_reserved_names_carry_their_discards() -> None:
    payloads = [
        track("m1", orderId="a", order_id="b", id="not-the-id", select=1, **{"from": "x"}),
        track("m2", **{"Ünïcode Kéy": "ü", "order": 2.5, "loaded_at": "x"}),
    ]
    assert compare(payloads).discards
    first = plan_summary(summarize(collect(payloads)), {}, carried_discards=True)
    assert DISCARDS in {c.table for c in first.changes}


def test_a_batch_with_one_event_twice_plans_its_first_copy() -> None:
    payloads = [track("m1", total=1), track("m1", total="one"), track("m2", total=2)]
    plan = compare(payloads)
    assert {c.name: c.type for c in plan.tables["order_completed"]}["total"] == "bigint"


def test_users_take_every_row_and_mapped_rows_their_own_table() -> None:
    payloads = [
        identify("m1", "2026-12-03T10:00:00.000Z", plan="free", seats=1),
        identify("m2", "2026-12-03T09:00:00.000Z", plan=2, seats=1.5),
        layout_mapped(
            "Orders",
            {"orderId": "o1", "total": 5, "nested": {"a": True}},
            {"messageId": "m3", "receivedAt": "2026-12-03T10:00:00.000Z"},
        ),
    ]
    compare(payloads)
    compare(payloads, widen_to_text=True)


def test_known_schema_plans_without_changes() -> None:
    payloads = [track("m1", total=1, note="x"), track("m2", total=2)]
    schema: dict[str, TableSchema] = {}
    merge_schema(schema, plan_load(collect(payloads), {}).changes)
    plan = compare(payloads, schema)
    assert plan.changes == []
    assert not plan.discards
