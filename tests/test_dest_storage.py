"""Storage destinations (postgres, duckdb, parquet) against real databases and files.

Every test runs on the three: PostgreSQL started by the suite (tests/services.py), a
DuckDB file, Parquet files read back with DuckDB. A test sends batches the way the
delivery engine does (`send`, payloads through JSON as the store keeps them), closes
the destination (a parquet destination rolls its files then) and reads the tables.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
import pytest

from streamctl.destinations.base import BatchResult, ItemStatus, MappedEvent
from streamctl.destinations.duckdb import DuckDBDestination
from streamctl.destinations.parquet import ParquetDestination
from streamctl.destinations.postgres import PostgresDestination
from streamctl.destinations.storage import StorageDestination
from streamctl.destinations.warehouse import TableRows, layout_event, snake_case

BACKENDS = ("postgres", "duckdb", "parquet")
_schemas = itertools.count()


def event(message_id: str, call: str = "track", **fields: Any) -> dict[str, Any]:
    base = {
        "type": call,
        "messageId": message_id,
        "userId": "u1",
        "anonymousId": "a1",
        "receivedAt": "2026-12-03T10:00:00.000Z",
        "sentAt": "2026-12-03T10:00:00.000Z",
        "timestamp": "2026-12-03T09:59:59.500Z",
        "originalTimestamp": "2026-12-03T09:59:59.500Z",
        "context": {
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "page": {"url": "https://shop.example.com/cart"},
        },
    }
    return {**base, **fields}


EVERY_CALL = [
    event(
        "m1",
        event="Order Completed",
        properties={"total": 30, "currency": "EUR", "products": [{"id": "p1"}]},
    ),
    event("m2", event="Signed Up", properties={"plan": "pro"}),
    event("m3", "identify", traits={"email": "old@example.com", "plan": "free"}),
    event("m4", "identify", receivedAt="2026-12-03T11:00:00.000Z", traits={"plan": "pro"}),
    event("m5", "page", name="Home", properties={"title": "Home", "path": "/"}),
    event("m6", "screen", name="Main", properties={"orientation": "portrait"}),
    event("m7", "group", groupId="g1", traits={"seats": 12}),
    event("m8", "alias", previousId="a1"),
]


class Warehouse:
    """One destination under test and a way to read what it stored."""

    def __init__(self, kind: str, tmp_path: Path, postgres_url: str, **config: Any) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.postgres_url = postgres_url
        self.schema = f"s{next(_schemas)}"
        self.config = config

    def destination(self, **extra: Any) -> StorageDestination:
        config = {**self.config, **extra}
        if self.kind == "postgres":
            return PostgresDestination(
                "wh", {"url": self.postgres_url, "schema": self.schema, **config}
            )
        if self.kind == "duckdb":
            return DuckDBDestination("wh", {"path": str(self.tmp_path / "w.duckdb"), **config})
        return ParquetDestination("wh", {"path": str(self.tmp_path / "lake"), **config})

    def store(self, *batches: Sequence[dict[str, Any]], **config: Any) -> list[BatchResult]:
        """Each batch sent by one destination, closed at the end."""
        destination = self.destination(**config)

        async def go() -> list[BatchResult]:
            try:
                return [await send(destination, batch) for batch in batches]
            finally:
                await destination.aclose()

        return asyncio.run(go())

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """`sql` with `{t:NAME}` standing for the table NAME."""
        if self.kind == "postgres":
            with psycopg.connect(self.postgres_url) as conn:
                conn.execute(f"SET search_path = {self.schema}")
                return conn.execute(sql.replace("{t:", "{").format_map(_Quoted())).fetchall()
        if self.kind == "duckdb":
            with duckdb.connect(str(self.tmp_path / "w.duckdb")) as con:
                return con.execute(sql.replace("{t:", "{").format_map(_Quoted())).fetchall()
        lake = self.tmp_path / "lake"
        return duckdb.sql(sql.replace("{t:", "{").format_map(_Files(lake))).fetchall()

    def columns(self, table: str) -> dict[str, str]:
        if self.kind == "postgres":
            rows = self.query(
                "SELECT column_name, data_type FROM information_schema.columns"
                f" WHERE table_schema = '{self.schema}' AND table_name = '{table}'"
            )
        elif self.kind == "duckdb":
            rows = self.query(
                f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}'"
            )
        else:
            rows = [(r[0], r[1]) for r in self.query(f"DESCRIBE SELECT * FROM {{t:{table}}}")]
        return {name: kind.lower() for name, kind in rows}


class _Quoted(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return '"' + key + '"'


class _Files(dict[str, str]):
    def __init__(self, lake: Path) -> None:
        super().__init__()
        self.lake = lake

    def __missing__(self, key: str) -> str:
        if key == "users":
            return f"read_parquet('{self.lake}/users/users.parquet')"
        return f"read_parquet('{self.lake}/{key}/*/*.parquet', union_by_name = true)"


def stored(payload: Any) -> str:
    """A payload as the delivery lane hands it to a storage destination: the JSON text
    the store keeps (`takes_payload_text`)."""
    return orjson.dumps(payload).decode()


async def send(destination: StorageDestination, events: Sequence[dict[str, Any]]) -> BatchResult:
    # As JSON text, as the lane hands over the payloads the store keeps; every other
    # one as a dict (one never stored).
    payloads = [stored(destination.build_payload("event", MappedEvent({}), e)) for e in events]
    mixed = [p if i % 2 == 0 else orjson.loads(p) for i, p in enumerate(payloads)]
    return await destination.send(None, "event", mixed)  # type: ignore[arg-type]


def delivered(results: list[BatchResult]) -> bool:
    return all(item.status is ItemStatus.DELIVERED for r in results for item in r.items)


@pytest.fixture(params=BACKENDS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    yield Warehouse(request.param, tmp_path, url)


# -- the layout -------------------------------------------------------------------------


def test_names_are_snake_case_as_segment_makes_them():
    assert snake_case("Order Completed") == "order_completed"
    assert snake_case("orderId") == "order_id"
    assert snake_case("HTTPStatus") == "http_status"
    assert snake_case("product-id") == "product_id"
    assert snake_case("2fa enabled") == "_2fa_enabled"
    assert snake_case("Größe") == "größe"
    assert snake_case("€") == ""
    assert len(snake_case("x" * 100).encode()) == 63


def test_colliding_names_keep_the_key_that_is_the_column_name_whatever_the_order():
    for properties in (
        {"orderId": "camel", "order_id": "snake"},
        {"order_id": "snake", "orderId": "camel"},
    ):
        laid = layout_event(event("m1", event="Order Completed", properties=properties))
        assert laid["rows"]["order_completed"]["order_id"] == "snake"
        assert laid["discards"] == [
            ["order_completed", "order_id", "camel", "column 'order_id' is taken by key 'order_id'"]
        ]
    # Neither is the column name itself: the first in code-point order wins.
    laid = layout_event(event("m1", event="X", properties={"Order Id": 1, "OrderId": 2}))
    assert laid["rows"]["x"]["order_id"] == 1  # "Order Id" < "OrderId": a space sorts first
    # A property named like a standard column never overwrites it.
    laid = layout_event(event("m1", event="X", properties={"user_id": "forged", "loaded_at": 1}))
    assert TableRows.collect([laid]).tables["x"][0][2]["user_id"] == "u1"
    assert {d[1] for d in laid["discards"]} == {"user_id", "loaded_at"}
    # A property against a column of the `tracks` row its event table's row extends.
    laid = layout_event(event("m1", event="X", properties={"context_page_url": "p"}))
    assert (
        TableRows.collect([laid]).tables["x"][0][2]["context_page_url"]
        == "https://shop.example.com/cart"
    )
    assert laid["discards"] == [
        [
            "x",
            "context_page_url",
            "p",
            "column 'context_page_url' is taken by key 'context.page.url'",
        ]
    ]
    context = {"page": {"URL": "https://c"}}
    laid = layout_event(
        event("m1", event="X", context=context, properties={"context_page_url": "p"})
    )
    tables = TableRows.collect([laid]).tables
    assert tables["x"][0][2]["context_page_url"] == "p"  # the key that is the column name
    assert tables["tracks"][0][2]["context_page_url"] == "https://c"
    assert laid["discards"] == [
        [
            "x",
            "context_page_url",
            "https://c",
            "column 'context_page_url' is taken by key 'context_page_url'",
        ]
    ]
    # More keys than the column names' cache holds, and a key too long for it.
    properties = {f"key{n}": n for n in range(3000)} | {"Long" + "x" * 100: 1}
    laid = layout_event(event("m1", event="X", properties=properties))
    assert laid["rows"]["x"] == {f"key{n}": n for n in range(3000)} | {"long" + "x" * 59: 1}
    # Most events have nothing to discard: their payloads carry no `discards`.
    assert "discards" not in layout_event(event("m1", event="X", properties={"a": 1}))


# -- every backend ------------------------------------------------------------------------


def test_every_standard_table_the_event_tables_and_users(warehouse: Warehouse):
    assert delivered(warehouse.store(EVERY_CALL))
    counts = {
        table: warehouse.query(f"SELECT count(*) FROM {{t:{table}}}")[0][0]
        for table in (
            "tracks",
            "order_completed",
            "signed_up",
            "identifies",
            "pages",
            "screens",
            "groups",
            "aliases",
            "users",
        )
    }
    assert counts == {
        "tracks": 2, "order_completed": 1, "signed_up": 1, "identifies": 2, "pages": 1,
        "screens": 1, "groups": 1, "aliases": 1, "users": 1,
    }  # fmt: skip
    tracks = warehouse.columns("tracks")
    for column in ("id", "received_at", "sent_at", "timestamp", "original_timestamp", "user_id",
                   "anonymous_id", "event", "event_text", "context_library_name",
                   "context_library_version", "context_page_url", "loaded_at", "uuid_ts"):  # fmt: skip
        assert column in tracks, column
    assert "total" not in tracks  # properties live in the event's own table
    assert "timestamp" in tracks["received_at"]
    row = warehouse.query(
        "SELECT id, event, event_text, total, currency, products, context_page_url, user_id"
        " FROM {t:order_completed}"
    )
    assert row == [("m1", "order_completed", "Order Completed", 30, "EUR", '[{"id":"p1"}]',
                    "https://shop.example.com/cart", "u1")]  # fmt: skip
    assert warehouse.query("SELECT name, title FROM {t:pages}") == [("Home", "Home")]
    assert warehouse.query("SELECT group_id, seats FROM {t:groups}") == [("g1", 12)]
    assert warehouse.query("SELECT previous_id, user_id FROM {t:aliases}") == [("a1", "u1")]
    # users: one row per userId, the latest value of each trait, no anonymous_id.
    assert warehouse.query("SELECT id, email, plan FROM {t:users}") == [
        ("u1", "old@example.com", "pro")
    ]
    assert "anonymous_id" not in warehouse.columns("users")


def test_a_new_property_adds_a_column(warehouse: Warehouse):
    first = [event("m1", event="Order Completed", properties={"total": 1})]
    later = [event("m2", event="Order Completed", properties={"total": 2, "coupon": "BF"})]
    assert delivered(warehouse.store(first, later))
    assert "coupon" in warehouse.columns("order_completed")
    assert warehouse.query("SELECT id, coupon FROM {t:order_completed} ORDER BY id") == [
        ("m1", None),
        ("m2", "BF"),
    ]


def test_a_type_conflict_widens_when_lossless_else_goes_to_discards(warehouse: Warehouse):
    batches = (
        [event("m1", event="Paid", properties={"amount": 3, "ok": True})],
        [event("m2", event="Paid", properties={"amount": 3.5})],  # bigint -> double
        [event("m3", event="Paid", properties={"amount": "lots", "ok": "yes"})],  # refused
    )
    assert delivered(warehouse.store(*batches))
    assert warehouse.columns("paid")["amount"].startswith("double")
    rows = warehouse.query("SELECT id, amount, ok FROM {t:paid} ORDER BY id")
    assert rows == [
        ("m1", 3.0, True),
        ("m2", 3.5, None),
        ("m3", None, None),
    ]  # the row is still written
    discards = warehouse.query(
        "SELECT table_name, column_name, column_value, reason, row_id FROM {t:discards} ORDER BY column_name"
    )
    assert discards == [
        ("paid", "amount", "lots", "incompatible schema conversion from text to double", "m3"),
        ("paid", "ok", "yes", "incompatible schema conversion from text to boolean", "m3"),
    ]


def test_widen_to_text_turns_the_column_into_text(warehouse: Warehouse):
    batches = (
        [event("m1", event="Paid", properties={"amount": 3})],
        [event("m2", event="Paid", properties={"amount": "lots"})],
    )
    assert delivered(warehouse.store(*batches, widen_to_text=True))
    assert warehouse.columns("paid")["amount"] in ("text", "varchar")
    assert warehouse.query("SELECT id, amount FROM {t:paid} ORDER BY id") == [
        ("m1", "3"),
        ("m2", "lots"),
    ]


def test_a_retried_batch_writes_nothing_twice(warehouse: Warehouse):
    batch = [*EVERY_CALL, event("m9", event="Paid", properties={"amount": "x", "Amount": 1})]
    # Sent twice by one destination, then again by a new one (a restart; parquet has
    # rolled its files by then).
    assert delivered(warehouse.store(batch, batch[3:], batch))
    assert delivered(warehouse.store(batch))
    for table, count in (
        ("tracks", 3),
        ("order_completed", 1),
        ("identifies", 2),
        ("users", 1),
        ("discards", 1),
    ):
        assert warehouse.query(f"SELECT count(*) FROM {{t:{table}}}") == [(count,)], table
    assert warehouse.query("SELECT plan FROM {t:users}") == [("pro",)]


def test_an_event_twice_in_one_batch_is_stored_once_as_first_sent(warehouse: Warehouse):
    first = event("m1", event="Paid", properties={"amount": 3})
    again = event("m1", event="Paid", properties={"amount": "three", "note": "late"})
    assert delivered(warehouse.store([first, again, event("m2", event="Paid")]))
    assert warehouse.query("SELECT id, amount FROM {t:paid} ORDER BY id") == [
        ("m1", 3),
        ("m2", None),
    ]
    assert warehouse.query("SELECT count(*) FROM {t:tracks}") == [(2,)]
    assert "note" not in warehouse.columns("paid")


def test_long_strings_unicode_and_reserved_words(warehouse: Warehouse):
    long_text = "é" * 15_000 + "x" * 1_000  # 31 KB of UTF-8: near the 32 KB event limit
    quoted = 'a "quoted" \\ back\\slash, a tab\t, a line\u2028break'
    properties = {"select": 1, "from": "here", "order": True, "Größe": "groß 🙂", "note": long_text,
                  "orderId": "camel", "order_id": quoted}  # fmt: skip
    assert delivered(
        warehouse.store([event("m1", event="Bestellung Abgeschlossen", properties=properties)])
    )
    rows = warehouse.query(
        'SELECT "select", "from", "order", "größe", note, order_id FROM {t:bestellung_abgeschlossen}'
    )
    assert rows == [(1, "here", True, "groß 🙂", long_text, quoted)]
    # The colliding key's value is kept in discards.
    assert warehouse.query("SELECT column_name, column_value, row_id FROM {t:discards}") == [
        ("order_id", "camel", "m1")
    ]


def test_a_duckdb_file_locked_by_another_process_is_a_retry(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = asyncio.run(send(DuckDBDestination("wh", {"path": str(path)}), EVERY_CALL[:1]))
    finally:
        holder.communicate("")
    assert result.items[0].status is ItemStatus.RETRY, result.items[0].error
    assert "lock" in (result.items[0].error or "")


def test_postgres_unreachable_is_a_retry(monkeypatch: pytest.MonkeyPatch):
    from streamctl.destinations import postgres_backend

    monkeypatch.setattr(postgres_backend, "CONNECT_TIMEOUT", 1)
    destination = PostgresDestination(
        "wh", {"host": "127.0.0.1", "port": 9, "user": "x", "password": "pw-secret"}
    )
    result = asyncio.run(send(destination, EVERY_CALL[:1]))
    assert result.items[0].status is ItemStatus.RETRY
    assert "pw-secret" not in (result.items[0].error or "")
    assert destination.target() == "postgresql://127.0.0.1:9/#public"


@pytest.mark.parametrize("kind", ["postgres", "duckdb"])
def test_two_writers_create_the_same_tables_and_columns_at_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
):
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else ""
    warehouse = Warehouse(kind, tmp_path, url)
    writers = [warehouse.destination() for _ in range(2)]
    start = threading.Barrier(2)
    results: list[BatchResult] = []

    def write(n: int) -> None:
        batch = [
            event(f"w{n}-{i}", event="Order Completed", properties={f"p{i}": i, "shared": n})
            for i in range(5)
        ]
        payloads = [stored(layout_event(e)) for e in batch]
        start.wait()
        for _ in range(3):  # a transient conflict is retried, as the engine would
            result = asyncio.run(writers[n].send(None, "event", payloads))  # type: ignore[arg-type]
            if result.items[0].status is not ItemStatus.RETRY:
                break
        results.append(result)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for writer in writers:
        asyncio.run(writer.aclose())
    assert delivered(results), [r.items[0].error for r in results]
    assert warehouse.query("SELECT count(*) FROM {t:order_completed}") == [(10,)]
    assert {f"p{i}" for i in range(5)} | {"shared"} <= set(warehouse.columns("order_completed"))


# -- end to end -------------------------------------------------------------------------------

REPLAY_PROJECT = """\
version: 1
store: .streamctl/state.db
sources:
  web: {{ type: http, write_keys: [test-key] }}
destinations:
  warehouse:
    type: {kind}
    config: {config}
"""
STORE_ALL = """\
name: store-all
source: web
destination: warehouse
event_types:
  - type: event
"""
ORDERS_AS_ROWS = """\
name: orders
source: web
destination: warehouse
event_types:
  - type: row
    filter: { field: event, op: eq, value: Order Completed }
    mappings:
      required:
        table: { static: orders }
        revenue: { field: properties.total }
        customer: { field: userId }
"""


def test_streamctl_replay_into_each(warehouse: Warehouse):
    root = warehouse.tmp_path
    config = {
        "postgres": {"url": warehouse.postgres_url, "schema": warehouse.schema},
        "duckdb": {"path": "w.duckdb"},
        "parquet": {"path": "lake"},
    }[warehouse.kind]
    (root / "syncs").mkdir()
    (root / "streamctl.yaml").write_text(
        REPLAY_PROJECT.format(kind=warehouse.kind, config=orjson.dumps(config).decode())
    )
    (root / "syncs" / "store-all.yaml").write_text(STORE_ALL)
    (root / "syncs" / "orders.yaml").write_text(ORDERS_AS_ROWS)
    events = [{k: v for k, v in e.items() if k != "receivedAt"} for e in EVERY_CALL]
    (root / "events.ndjson").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    out = subprocess.run(
        [sys.executable, "-m", "streamctl", "replay", "events.ndjson", "-p", str(root), "--json"],
        capture_output=True, text=True, cwd=root, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    syncs = {s["sync"]: s for s in orjson.loads(out.stdout)[0]["syncs"]}
    assert syncs["store-all"]["delivered"] == len(events)
    assert syncs["orders"]["delivered"] == 1
    assert warehouse.query("SELECT count(*) FROM {t:tracks}") == [(2,)]
    assert warehouse.query("SELECT id, total FROM {t:order_completed}") == [("m1", 30)]
    assert warehouse.query("SELECT id, revenue, customer FROM {t:orders}") == [("m1", 30, "u1")]
    assert warehouse.query("SELECT count(*) FROM {t:users}") == [(1,)]


def test_destinations_show_lists_the_storage_types():
    from typer.testing import CliRunner

    from streamctl.cli.main import app

    listed = CliRunner().invoke(app, ["destinations", "list", "--json"])
    assert listed.exit_code == 0
    for kind in BACKENDS:
        shown = CliRunner().invoke(app, ["destinations", "show", kind, "--json"])
        assert shown.exit_code == 0, shown.output
        document = orjson.loads(shown.stdout)
        assert [t["type"] for t in document["event_types"]] == ["event", "row", "violations"]
        assert document["event_types"][1]["required"] == {"table": "string"}
        assert kind in listed.stdout


def test_the_warehouse_example_replays_into_duckdb_and_parquet(tmp_path: Path):
    import shutil

    root = Path(__file__).resolve().parent.parent
    project = tmp_path / "warehouse"
    shutil.copytree(
        root / "examples" / "warehouse", project, ignore=shutil.ignore_patterns(".streamctl", "out")
    )
    lines = (root / "examples" / "events.ndjson").read_text().splitlines(keepends=True)[:200]
    (tmp_path / "events.ndjson").write_text("".join(lines))
    out = subprocess.run(
        [sys.executable, "-m", "streamctl", "replay", str(tmp_path / "events.ndjson"), "-p", str(project), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    with duckdb.connect(str(project / "out" / "warehouse.duckdb")) as con:
        tables = {
            t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        calls = tables & {"tracks", "identifies", "pages", "screens", "groups", "aliases"}
        stored = sum(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in calls)  # type: ignore[index]
    assert stored == 200
    orders = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{project}/out/lake/orders/*/*.parquet')"
    ).fetchall()
    events = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{project}/out/lake/order_completed/*/*.parquet')"
    ).fetchall()
    assert orders == events and orders[0][0] > 0


VIOLATIONS_PROJECT = """\
version: 1
store: .streamctl/state.db
sources:
  web: { type: http, write_keys: [test-key], contract: web }
destinations:
  warehouse:
    type: duckdb
    config: { path: w.duckdb }
"""
CONTRACT = """\
name: web
on_undeclared_event: allow
events:
  - name: Order Completed
    on_violation: block
    on_undeclared_fields: allow
    properties:
      type: object
      required: [total]
      properties:
        total: { type: number, minimum: 0 }
"""
STORE_WITH_VIOLATIONS = """\
name: store-all
source: web
destination: warehouse
event_types:
  - type: event
  - type: violations
"""


def test_a_sync_that_asks_for_it_stores_contract_violations(tmp_path: Path):
    (tmp_path / "syncs").mkdir()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "streamctl.yaml").write_text(VIOLATIONS_PROJECT)
    (tmp_path / "contracts" / "web.yaml").write_text(CONTRACT)
    (tmp_path / "syncs" / "store-all.yaml").write_text(STORE_WITH_VIOLATIONS)
    events = [
        event("ok", event="Order Completed", properties={"total": 3}),
        event("neg", event="Order Completed", properties={"total": -1}),  # blocked
        event("sig", event="Signed Up"),
    ]
    (tmp_path / "events.ndjson").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    out = subprocess.run(
        [sys.executable, "-m", "streamctl", "replay", "events.ndjson", "-p", str(tmp_path), "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        # The blocked event is not in the layout, but its violation is stored.
        assert con.execute("SELECT id FROM order_completed").fetchall() == [("ok",)]
        rows = con.execute(
            "SELECT id, event_name, event_type, outcome, has_schema_violated,"
            " has_undeclared_schema, violations, payload::JSON->>'messageId' FROM event_violations"
            " ORDER BY id"
        ).fetchall()
    # Every event with a finding, blocked or allowed (an undeclared event is allowed here).
    blocked, undeclared = rows
    assert blocked[:6] == ("neg", "Order Completed", "track", "blocked", True, False)
    assert "/properties/total" in blocked[6] and blocked[7] == "neg"
    assert undeclared[:6] == ("sig", "Signed Up", "track", "allowed", False, True)


def test_a_property_named_date_and_mixed_numbers_in_one_batch(warehouse: Warehouse):
    batch = [
        event("m1", event="Booked", properties={"date": "next week", "seats": 2}),
        event("m2", event="Booked", properties={"seats": 2.5}),
        event("m3", event="Booked", properties={"seats": "many"}),
    ]
    assert delivered(warehouse.store(batch))
    # Parquet files are partitioned by a `date` column: the property is `date_` there.
    date = "date_" if warehouse.kind == "parquet" else "date"
    rows = warehouse.query(f"SELECT id, {date}, seats FROM {{t:booked}} ORDER BY id")
    assert rows == [("m1", "next week", 2.0), ("m2", None, 2.5), ("m3", None, None)]
    assert warehouse.query("SELECT row_id, column_value FROM {t:discards}") == [("m3", "many")]


def test_payloads_as_objects_and_as_text_in_one_batch(warehouse: Warehouse):
    # A payload that never went through the store arrives as the object itself.
    destination = warehouse.destination()
    laid = [destination.build_payload("event", MappedEvent({}), e) for e in EVERY_CALL[:4]]
    batch = [laid[0], stored(laid[1]), laid[2], stored(laid[3])]

    async def go() -> BatchResult:
        try:
            return await destination.send(None, "event", batch)  # type: ignore[arg-type]
        finally:
            await destination.aclose()

    assert delivered([asyncio.run(go())])
    assert warehouse.query("SELECT count(*) FROM {t:tracks}") == [(2,)]
    assert warehouse.query("SELECT plan FROM {t:users}") == [("pro",)]


def test_a_nul_character_in_a_string(warehouse: Warehouse):
    # PostgreSQL's text cannot hold U+0000: it is dropped there, kept elsewhere.
    assert delivered(warehouse.store([event("m1", event="Typed", properties={"text": "a\u0000b"})]))
    expected = "ab" if warehouse.kind == "postgres" else "a\u0000b"
    assert warehouse.query("SELECT text FROM {t:typed}") == [(expected,)]


def test_payloads_of_the_previous_version_load_beside_todays(warehouse: Warehouse):
    # Deliveries still pending from before an upgrade (every other one here): their
    # payloads name their event, carry `"discards": []` and say which row an event
    # table's extends, where today's leave all of that to their rows.
    destination = warehouse.destination()
    batch = [*EVERY_CALL, event("m9", event="X", properties={"orderId": 1, "order_id": 2})]
    laid = [destination.build_payload("event", MappedEvent({}), e) for e in batch]
    assert set(laid[0]) == {"rows"} and len(laid[-1]["discards"]) == 1
    payloads = [stored(previous_version(p) if i % 2 else p) for i, p in enumerate(laid)]

    async def go() -> BatchResult:
        try:
            return await destination.send(None, "event", payloads)  # type: ignore[arg-type]
        finally:
            await destination.aclose()

    assert delivered([asyncio.run(go())])
    assert warehouse.query("SELECT id, event, total FROM {t:order_completed}") == [
        ("m1", "order_completed", 30)
    ]
    assert warehouse.query("SELECT id, event, plan FROM {t:signed_up}") == [
        ("m2", "signed_up", "pro")
    ]
    assert warehouse.query("SELECT count(*) FROM {t:identifies}") == [(2,)]
    assert warehouse.query("SELECT plan FROM {t:users}") == [("pro",)]
    assert warehouse.query("SELECT order_id, user_id FROM {t:x}") == [(2, "u1")]
    assert warehouse.query("SELECT row_id, column_value FROM {t:discards}") == [("m9", "1")]


def previous_version(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload as `layout_event` made it before 2026-12-04."""
    rows = payload["rows"]
    first = next(iter(rows.values()))
    old = {"message_id": first["id"], "received_at": first.get("received_at"), "rows": rows}
    old["discards"] = payload.get("discards", [])
    if "tracks" in rows and len(rows) > 1:
        old["extends"] = {table: "tracks" for table in rows if table != "tracks"}
    return old
