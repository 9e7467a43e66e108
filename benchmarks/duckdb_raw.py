"""DuckDB doing the warehouse layout itself: raw events in, Segment's tables out (issue 16).

    python benchmarks/duckdb_raw.py                      # 50,000 events, 5 rounds
    python benchmarks/duckdb_raw.py --events 60000 --rounds 3 --batch 20000
    python benchmarks/duckdb_raw.py --replays --events 50000 --rounds 3

What it measures: the CPU (time.process_time of this one process, DuckDB's threads
included, `SET threads = 1` as the product) of loading the bench events in batches of
10,000 into a DuckDB file in Segment's warehouse layout, two ways, in alternating
rounds (medians), each into a fresh file:

- `today`: the product's path. `DuckDBDestination.load(payloads)` with each payload
  the event laid out in Python by `warehouse.layout_event` (done outside the clock:
  the pipeline's workers do it) as the store hands it over, its JSON text.
- `raw`: the same destination code, but the batch is the raw events' JSON text
  (`orjson.dumps(normalise(event))`, what the store keeps for an event) and the
  layout is done by DuckDB (`RawBatch`): `json_group_structure` over the batch gives
  the events' keys and JSON types, one typed `read_json` reads it (nested objects as
  STRUCTs), and each table's rows are struct field accesses, snake-cased and
  flattened by names computed once per batch in Python; collisions are a
  `coalesce` in claim order with a `discards` row per value that lost. From there it
  is the product's code: `StagedBatch`'s summary, `plan_summary`, `DuckDBBackend`'s
  inserts (skipping stored ids), `discards`, the `users` upsert and the commit.

Per step (each SQL statement timed by the cursor that runs it): `structure`
(json_group_structure), `read` (the typed read_json into a temporary table), `summary`
(the queries `plan_summary` needs; the raw path's own: `groups`, the columns each
table's rows hold and the event names, `unique`, `collisions`), each table's
`INSERT ... SELECT`, `discards`, `users`, `commit`, and `python` (the rest: the NDJSON
file, building SQL, planning).

`--replays`: whole `streamctl replay` subprocesses instead (file, duckdb today, duckdb
with `RawBatch`, and a load that does nothing with either payload), their CPU in the
replay's clock and the CPU of the threads running the load.

Checks, outside the clock: the two files hold the same tables, columns, types and rows
(every table compared with `EXCEPT` both ways, `loaded_at`/`uuid_ts` aside); loading
the raw path's first batch again writes nothing; the layout rules' test events
(collisions, type conflicts, reserved words, unicode) give the same rows both ways.

What `RawBatch` does not do as `layout_event` does: a key that is an object in one
event and a scalar in another of the batch (read as JSON, the objects left out, not
flattened); a track event name that is not a string anywhere in the batch (no event
tables for that batch); an envelope field of another type than string (`userId: true`
is `true`, Python's `str` gives `True`); three keys colliding in one row (the same value
wins; the discard's reason names the first key holding a value, Python's the key that
held the column when the next came); mapped rows and violations (not raw events).
Keys differing only in case in one object are handled: DuckDB's STRUCT fields are
case-insensitive, so such an object is read as JSON and its leaves taken with `->`.

Figures and the conclusion: docs/destinations/duckdb.md#raw-events-laid-out-by-duckdb-a-measurement
(in short: 16-18 us an event steady in-process, ~20 over all of a replay's batches,
28-35 inside the replays; the floor of 0.8 leaves all of DuckDB's work in a replay
~11-14: not reachable this way).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KIT = ROOT.parent / "shared" / "bench"
if not KIT.exists():
    KIT = Path("/work/shared/bench")

import duckdb  # noqa: E402
import orjson  # noqa: E402

from streamctl.destinations.duckdb import DuckDBDestination  # noqa: E402
from streamctl.destinations.duckdb_backend import DuckDBBackend  # noqa: E402
from streamctl.destinations.duckdb_staging import (  # noqa: E402
    LEAF_TYPES,
    StagedBatch,
    Value,
    literal,
    quote,
)
from streamctl.destinations.warehouse import (  # noqa: E402
    _ENVELOPE,
    CALL_TABLES,
    DISCARD_COLUMNS,
    LOAD_TIME_COLUMNS,
    USERS,
    _claim_rank,
    event_table,
    layout_event,
    snake_case,
)
from streamctl.sources.normalise import normalise  # noqa: E402
from tests.test_dest_storage import event  # noqa: E402

BATCH = 10_000
# The envelope's standard columns: (column, the event's key, read as text like `_text`).
ENVELOPE = (("id", "messageId", True), *_ENVELOPE)
OBJECTS = ("context", "properties", "traits")

# -- the layout in DuckDB ------------------------------------------------------------------


class Candidate:
    """One value that may fill a column of a table's row: a standard one (the envelope)
    or a flattened key's (`path`, as `layout_event` names it)."""

    def __init__(self, value: Value, path: str, standard: bool, own: bool = True) -> None:
        self.value, self.path, self.standard, self.own = value, path, standard, own

    def rank(self, column: str) -> tuple[int, bool, str]:
        """Lower wins: a standard column, then `warehouse._claim_rank`."""
        return (0, False, "") if self.standard else (1, *_claim_rank(column, self.path))


class RawBatch(StagedBatch):
    """A batch of raw events (their JSON text) laid out by DuckDB (module docstring).

    It fills what `StagedBatch` plans and loads from (`raw`, `tables`, `sources`,
    `unique`) so the summary, `plan_summary`, the inserts, discards and the `users`
    merge are the product's own."""

    def _stage(self) -> None:
        path = literal(self.file.as_posix())
        structure = self.structure()
        columns = {"n": "BIGINT"}
        for key, kind in structure.items():
            if key != "n" and (
                key in OBJECTS or key in {k for _, k, _ in ENVELOPE} or key in ("type", "event")
            ):
                read = _read_type(kind)
                if read is not None:
                    columns[key] = read
        self.leaves = structure
        spec = ", ".join(f"{quote(k)}: {literal(v)}" for k, v in columns.items())
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE batch AS SELECT * FROM read_json("
            f"{path}, format = 'newline_delimited', columns = {{{spec}}})"
        )
        self.read_columns = columns
        self.carried_discards = False
        self.filters: dict[str, str] = {}
        self.collisions: dict[str, list[tuple[str, list[Candidate]]]] = {}
        self._lay_out()
        self._views()

    # -- which rows and columns each table gets ---------------------------------------------

    def _lay_out(self) -> None:
        envelope = self._envelope()
        context = self._flattened("context", "context_")
        properties = self._flattened("properties", "")
        traits = self._flattened("traits", "")
        groups = self._groups([envelope, context, properties, traits])
        call = "coalesce(\"type\", 'track')" if "type" in self.read_columns else "'track'"
        candidates: dict[str, dict[str, list[Candidate]]] = {}
        tables: dict[str, list[tuple[Any, ...]]] = defaultdict(list)  # table -> its groups
        for kind, table in CALL_TABLES.items():
            self.filters[table] = f"{call} = {literal(kind)}"
            candidates[table] = _merge(envelope, context)
            tables[table] = [g for g in groups if g[0] == kind]
        track_names = sorted({g[1] for g in groups if g[0] == "track" and g[1]})
        if track_names:
            snake = " ".join(
                f'WHEN "event" = {literal(n)} THEN {literal(snake_case(n))}' for n in track_names
            )
            tracks = candidates["tracks"]
            tracks["event"] = [Candidate(Value(f"CASE {snake} END", "VARCHAR"), "", True)]
            tracks["event_text"] = [Candidate(Value("NULLIF(\"event\", '')", "VARCHAR"), "", True)]
        by_table: dict[str, list[str]] = defaultdict(list)
        for name in track_names:
            if event_table(name):
                by_table[event_table(name)].append(name)
        for table, names in by_table.items():
            base = {
                c: [Candidate(x.value, x.path, x.standard, own=False) for x in cs]
                for c, cs in candidates["tracks"].items()
            }
            candidates[table] = _merge(base, properties)
            self.filters[table] = (
                f"{call} = 'track' AND \"event\" IN ({', '.join(map(literal, names))})"
            )
            tables[table] = [g for g in groups if g[0] == "track" and g[1] in names]
            self.bases[table] = ["tracks"]
        for table, obj in (
            ("identifies", traits),
            ("groups", traits),
            ("pages", properties),
            ("screens", properties),
        ):
            candidates[table] = _merge(candidates[table], obj)
        if "userId" in self.read_columns:
            user_id = Value(_as_text('"userId"', self.read_columns["userId"]), "VARCHAR")
            users = {"id": [Candidate(user_id, "", True)]}
            if "received_at" in envelope:
                users["received_at"] = envelope["received_at"]
            candidates[USERS] = _merge(users, traits)
            self.filters[USERS] = f"{call} = 'identify' AND \"userId\" IS NOT NULL"
            tables[USERS] = [g for g in groups if g[0] == "identify" and g[2]]
        for table, columns in candidates.items():
            present = self._first_rows(columns, tables[table])
            if not present:
                continue  # no row in this batch
            values: dict[str, Value] = {}
            for column in sorted(present, key=present.__getitem__):
                claims = sorted(columns[column], key=lambda x: x.rank(column))
                if not column or column in LOAD_TIME_COLUMNS:
                    self.collisions.setdefault(table, []).append((column, claims))
                    continue
                values[column] = _coalesce([c.value for c in claims])
                if len(claims) > 1:
                    self.collisions.setdefault(table, []).append((column, claims))
            self.raw[table] = values
            self.own[table] = (
                {c for c in values if any(x.own and not x.standard for x in columns[c])}
                if table in by_table
                else set(values)
            )
        self.carried_discards = False
        if self.collisions:
            found = self.con.execute(
                f"/* collisions */ SELECT EXISTS ({self._collision_discards()})"
            ).fetchall()
            self.carried_discards = bool(found[0][0])

    def _groups(self, objects: Sequence[Mapping[str, list[Candidate]]]) -> list[tuple[Any, ...]]:
        """The batch's rows grouped by what decides their tables (call type, track
        event name, whether there is a userId): per group, each value's first row
        (`n`) holding it, None where none does. One query over the batch."""
        self.expressions = list(
            dict.fromkeys(c.value.sql for obj in objects for cs in obj.values() for c in cs)
        )
        call = "coalesce(\"type\", 'track')" if "type" in self.read_columns else "'track'"
        event = (
            f"CASE WHEN {call} = 'track' THEN \"event\" END"
            if self.read_columns.get("event") == "VARCHAR"
            else "NULL"
        )
        user = '"userId" IS NOT NULL' if "userId" in self.read_columns else "false"
        firsts = ", ".join(f"min(n) FILTER ({e} IS NOT NULL)" for e in self.expressions)
        return self.con.execute(
            f"/* groups */ SELECT {call}, {event}, {user}, min(n), {firsts} FROM batch GROUP BY ALL"
        ).fetchall()

    def _first_rows(
        self, columns: Mapping[str, list[Candidate]], groups: Sequence[tuple[Any, ...]]
    ) -> dict[str, int]:
        """The table's columns some row of it holds, and the first such row's `n`
        (`event` and `event_text`: the first row with an event name)."""
        place = {e: i + 4 for i, e in enumerate(self.expressions)}
        present: dict[str, int] = {}
        for column, claims in columns.items():
            firsts = [
                g[place[c.value.sql]] if c.value.sql in place else g[3] if g[1] else None
                for g in groups
                for c in claims
            ]
            firsts = [f for f in firsts if f is not None]
            if firsts:
                present[column] = min(firsts)
        return present

    def _envelope(self) -> dict[str, list[Candidate]]:
        out: dict[str, list[Candidate]] = {}
        for column, key, text in ENVELOPE:
            read = self.read_columns.get(key)
            if read is None:
                continue
            sql = quote(key)
            value = Value(_as_text(sql, read), "VARCHAR") if text else Value(sql, _leaf(read))
            out[column] = [Candidate(value, "", True)]
        return out

    def _flattened(self, key: str, prefix: str) -> dict[str, list[Candidate]]:
        """An object's leaves as columns (`context.page.url` -> `context_page_url`)."""
        out: dict[str, list[Candidate]] = {}
        structure = self.leaves.get(key)
        if key not in self.read_columns or not isinstance(structure, dict):
            return out

        def walk(
            obj: Mapping[str, Any], sql: str, column_prefix: str, path: str, in_json: bool
        ) -> None:
            for name, kind in obj.items():
                key_path = f"{path}.{name}" if path else name
                snake = snake_case(name)
                column = f"{column_prefix}{snake}" if snake else ""
                if in_json:  # an object read as JSON (keys differing only in case)
                    pointer = "/" + name.replace("~", "~0").replace("/", "~1")
                    field = f"({sql} -> {literal(pointer)})"
                else:
                    field = f"{sql}.{quote(name)}"
                if isinstance(kind, dict) and kind and column:
                    walk(kind, field, column + "_", key_path, in_json or _read_type(kind) == "JSON")
                elif kind != "NULL":
                    leaf = "JSON" if in_json else _leaf(_read_type(kind) or "JSON")
                    if isinstance(kind, dict) and not in_json:
                        field = f"to_json({field})"
                    elif kind == "JSON" or in_json:  # an object (`{}`, or mixed): not flattened
                        field = (
                            f"CASE WHEN json_type({field}) = 'OBJECT' THEN NULL ELSE {field} END"
                        )
                    out.setdefault(column, []).append(
                        Candidate(Value(field, leaf), key_path, False)
                    )

        walk(structure, quote(key), prefix, key if prefix else "", self.read_columns[key] == "JSON")
        return out

    # -- StagedBatch's hooks -------------------------------------------------------------

    def _views(self) -> None:
        unique = self._unique_ids()
        for table, values in self.raw.items():
            selected = ", ".join(f"{v.sql} AS {quote(c)}" for c, v in values.items())
            one_per_key = ""
            if table != USERS and not unique:
                one_per_key = " QUALIFY row_number() OVER (PARTITION BY id ORDER BY __n) = 1"
            self.sources[table] = (
                f"(SELECT n AS __n, {self._message_id()} AS __message_id,"
                f" {self._received()} AS __received_at, {selected}"
                f" FROM batch WHERE {self.filters[table]}{one_per_key})"
            )
            self.tables[table] = {c: Value(quote(c), v.leaf) for c, v in values.items()}
        self.unique = set(self.raw) if unique else set()

    def _message_id(self) -> str:
        read = self.read_columns.get("messageId")
        return "''" if read is None else _as_text('"messageId"', read)

    def _received(self) -> str:
        read = self.read_columns.get("receivedAt")
        return "NULL" if read is None else _as_text('"receivedAt"', read)

    def _unique_ids(self) -> bool:
        """Whether every messageId is once in the batch; the batch's `received_at`
        span too (`received_span`), in the same query."""
        received = f"TRY_CAST({self._received()} AS TIMESTAMPTZ)"
        unique, low, high = self.con.execute(
            f"/* unique */ SELECT count(DISTINCT {self._message_id()}) = count(*),"
            f" min({received})::VARCHAR, max({received})::VARCHAR FROM batch"
        ).fetchall()[0]
        self._span = (low, high)
        return bool(unique)

    def received_span(self) -> tuple[str | None, str | None]:
        assert self._span is not None
        return self._span

    def discards(self, tables: Mapping[str, Any]) -> str | None:
        """The collisions' losers (as `layout_event` discards them), then the type
        conflicts (`StagedBatch.discards`)."""
        collided = self._collision_discards() if self.carried_discards else None
        parts = [collided] if collided else []
        carried, self.carried_discards = self.carried_discards, False
        try:
            typed = super().discards(tables)  # the type conflicts only
        finally:
            self.carried_discards = carried
        if typed is not None:
            parts.append(f"SELECT * FROM ({typed})")
        if not parts:
            return None
        names = ", ".join(map(quote, DISCARD_COLUMNS))
        return f"SELECT * FROM ({' UNION ALL '.join(parts)}) s({names})"

    def _collision_discards(self) -> str:
        """`SELECT` of the values that lost a column to another key (as `layout_event`
        discards them), in `discards`' columns."""
        parts = []
        received = f"TRY_CAST({self._received()} AS TIMESTAMPTZ)"
        event_tables = self.event_tables()
        for table, collisions in self.collisions.items():
            for column, claims in collisions:
                winner = claims[0]
                named = bool(column) and column not in LOAD_TIME_COLUMNS
                for place, loser in enumerate(claims):
                    if named and place == 0:
                        continue
                    if table in event_tables and not (loser.own or winner.own):
                        continue  # discarded with its `tracks` row already
                    reason = _reason(column, loser, winner)
                    condition = f"{loser.value.sql} IS NOT NULL"
                    if named:  # it lost to a claim before it holding a value: that one's
                        before = " OR ".join(f"{c.value.sql} IS NOT NULL" for c in claims[:place])
                        condition += f" AND ({before})"
                        if place > 1:
                            reason = (
                                "CASE "
                                + " ".join(
                                    f"WHEN {c.value.sql} IS NOT NULL THEN {_reason(column, loser, c)}"
                                    for c in claims[:place]
                                )
                                + " END"
                            )
                    parts.append(
                        f"SELECT {literal(table)}, {literal(column or loser.path)},"
                        f" {loser.value.text()}, {reason}, {self._message_id()}, {received}"
                        f" FROM batch WHERE ({self.filters[table]}) AND {condition}"
                    )
        return " UNION ALL ".join(parts) or "SELECT NULL, NULL, NULL, NULL, NULL, NULL WHERE false"

    def event_tables(self) -> set[str]:
        return {t for t in self.raw if t not in (*CALL_TABLES.values(), USERS)}


def _reason(column: str, loser: Candidate, winner: Candidate) -> str:
    if not column:
        return literal(f"key {loser.path!r} gives no column name")
    if column in LOAD_TIME_COLUMNS:
        return literal(f"{loser.path!r} would overwrite the column {column!r}")
    if winner.standard:
        return literal(f"{loser.path!r} would overwrite the standard column {column!r}")
    return literal(f"column {column!r} is taken by key {winner.path!r}")


def _merge(*groups: Mapping[str, list[Candidate]]) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = {}
    for group in groups:
        for column, claims in group.items():
            out.setdefault(column, []).extend(claims)
    return out


def _coalesce(values: Sequence[Value]) -> Value:
    if len(values) == 1:
        return values[0]
    if len({v.leaf for v in values}) == 1:
        return Value(f"coalesce({', '.join(v.sql for v in values)})", values[0].leaf)
    parts = [v.sql if v.leaf == "JSON" else f"to_json({v.sql})" for v in values]
    return Value(f"coalesce({', '.join(parts)})", "JSON")


def _read_type(kind: Any) -> str | None:
    """How a key of the structure is read: objects as STRUCTs of their leaves."""
    if isinstance(kind, dict):
        fields = {k: _read_type(v) for k, v in kind.items()}
        kept = {k: t for k, t in fields.items() if t is not None}
        if not kept:
            return None
        if len({k.lower() for k in kept}) < len(kept):
            return "JSON"  # a STRUCT's field names are case-insensitive in DuckDB
        return "STRUCT(" + ", ".join(f"{quote(k)} {t}" for k, t in kept.items()) + ")"
    if kind == "NULL":
        return None
    return LEAF_TYPES.get(kind, "JSON") if isinstance(kind, str) else "JSON"


def _leaf(read: str) -> str:
    return read if read in LEAF_TYPES.values() else "JSON"


def _as_text(sql: str, read: str) -> str:
    """`str(value)` of an envelope field in SQL (a JSON string unquoted)."""
    if read == "VARCHAR":
        return sql
    if read == "JSON":
        return f"({sql} ->> '$')"
    return f"{sql}::VARCHAR"


# -- timing each statement -----------------------------------------------------------------


class Clock:
    """CPU seconds per step of the loads since `reset`: the process's (in-process, where
    only the load runs) or the calling thread's (in a replay, beside the other threads;
    DuckDB runs a query in the thread that calls it with `threads = 1`)."""

    def __init__(self, timer: Any = time.process_time) -> None:
        self.steps: dict[str, float] = defaultdict(float)
        self.timer = timer

    def reset(self) -> None:
        self.steps = defaultdict(float)


class TimedCursor:
    """A DuckDB cursor whose statements add their CPU time to a step of `clock`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, clock: Clock, schema: str) -> None:
        self._con, self._clock, self._schema = con, clock, quote(schema)

    def execute(self, sql: str, params: Any = None) -> Any:
        timer = self._clock.timer
        started = timer()
        try:
            return self._con.execute(sql, params) if params is not None else self._con.execute(sql)
        finally:
            self._clock.steps[self._step(sql)] += timer() - started

    def _step(self, sql: str) -> str:
        if sql.startswith("SELECT json_group_structure"):
            return "structure"
        if sql.startswith("CREATE OR REPLACE TEMP TABLE batch"):
            return "read"
        if sql.startswith(("COMMIT", "BEGIN", "ROLLBACK")):
            return sql.split()[0].lower()
        if sql.startswith(("INSERT", f"INSERT INTO {self._schema}")):
            table = sql.split(" INTO ", 1)[1].split(" ", 1)[0].split(".", 1)[1].strip('"')
            return table if table in (USERS, "discards") else f"insert {table}"
        if sql.startswith("/* "):
            return "summary: " + sql[3 : sql.index(" */")]
        return "summary"

    def close(self) -> None:
        self._con.close()


class TimedBackend(DuckDBBackend):
    def __init__(self, path: Path, schema: str, batch: type[StagedBatch], clock: Clock) -> None:
        super().__init__(path, schema)
        self.batch_class, self.clock = batch, clock

    def stage(self, payloads: Sequence[Any]) -> StagedBatch:
        cursor = TimedCursor(self.con.cursor(), self.clock, self.namespace)
        return self.batch_class(cursor, self.path.parent, payloads, owns_connection=True)  # type: ignore[arg-type]


class TimedDestination(DuckDBDestination):
    def __init__(self, path: Path, batch: type[StagedBatch], clock: Clock) -> None:
        super().__init__("bench", {"path": str(path), "schema": "main"})
        self.batch_class, self.clock = batch, clock

    def open_backend(self) -> TimedBackend:
        return TimedBackend(Path(str(self.config["path"])), "main", self.batch_class, self.clock)


# -- the benchmark --------------------------------------------------------------------------

PATHS = {"today": StagedBatch, "raw": RawBatch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=BATCH, help="events a batch (in-process)")
    parser.add_argument(
        "--replays", action="store_true", help="whole replays instead of in-process loads"
    )
    args = parser.parse_args()
    if args.replays:
        replays(args.events, args.rounds)
        return
    work = Path(tempfile.mkdtemp(prefix="streamctl-duckdb-raw-"))
    try:
        events = work / "events.ndjson"
        subprocess.run(
            [sys.executable, str(KIT / "gen_events.py"), str(args.events), str(events)], check=True
        )
        normalised = [normalise(orjson.loads(line)) for line in events.read_bytes().splitlines()]
        texts = {
            "raw": [orjson.dumps(e).decode() for e in normalised],
            "today": [orjson.dumps(layout_event(e)).decode() for e in normalised],
        }
        size = args.batch
        batches = {k: [v[i : i + size] for i in range(0, len(v), size)] for k, v in texts.items()}
        per_event: dict[str, list[float]] = defaultdict(list)  # path -> CPU s/event, per round
        steady: dict[str, list[float]] = defaultdict(list)  # ... batches after the first
        steps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        arrow: list[tuple[float, float]] = []
        clock = Clock()
        for n in range(args.rounds):
            for path in ("today", "raw") if n % 2 == 0 else ("raw", "today"):
                totals = load_all(
                    work / f"{path}-{n}.duckdb", PATHS[path], batches[path], clock, steps[path]
                )
                per_event[path].append(sum(totals) / args.events)
                steady[path].append(sum(totals[1:]) / (args.events - len(batches[path][0])))
                print(
                    f"round {n + 1} {path:5} {per_event[path][-1] * 1e6:6.1f} us/event"
                    f" (after the first batch {steady[path][-1] * 1e6:5.1f})",
                    file=sys.stderr,
                )
            arrow.append(read_with_arrow(batches["raw"]))
        report(per_event, steady, steps, arrow, args)
        check_same(work / "today-0.duckdb", work / "raw-0.duckdb")
        check_retry(work / "raw-0.duckdb", batches["raw"][0], clock)
        check_rules(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_all(
    file: Path,
    batch: type[StagedBatch],
    payloads: Sequence[Sequence[str]],
    clock: Clock,
    steps: dict[str, list[float]],
) -> list[float]:
    """Each batch's CPU seconds; the steps of the batches after the first (the tables
    exist then: the steady state, DuckDB's checkpoints included) added to `steps` as
    CPU seconds an event of those batches."""
    destination = TimedDestination(file, batch, clock)
    totals = []
    summed: dict[str, float] = defaultdict(float)
    count = 1
    try:
        for number, texts in enumerate(payloads):
            clock.reset()
            started = time.process_time()
            destination.load(texts)
            total = time.process_time() - started
            totals.append(total)
            if number == 0:
                continue
            known = dict(clock.steps)
            known["python"] = total - sum(known.values())
            for step, seconds in known.items():
                summed[step] += seconds
                count = len(payloads) - 1
        for step, seconds in summed.items():
            steps[step].append(seconds / (count * len(payloads[1])))
    finally:
        asyncio.run(destination.aclose())
    return totals


def read_with_arrow(batches: Sequence[Sequence[str]]) -> tuple[float, float]:
    """CPU seconds an event of the read done by pyarrow's JSON reader (schema inferred),
    then of copying its table into a DuckDB temporary table: the alternative to
    `structure` + `read`. The first batch warms the reader up (its first calls cost
    several times more) and is not counted."""
    try:
        import pyarrow.json as pa_json
    except ImportError:
        return float("nan"), float("nan")
    import io

    con = duckdb.connect()
    con.execute("SET threads = 1")
    options = pa_json.ReadOptions(use_threads=False, block_size=1 << 26)
    read = copy = 0.0
    count = 0
    for number, texts in enumerate(batches):
        data = "\n".join(texts).encode()
        started = time.process_time()
        arrow_table = pa_json.read_json(io.BytesIO(data), read_options=options)  # noqa: F841
        parsed = time.process_time()
        con.execute("CREATE OR REPLACE TEMP TABLE batch AS SELECT * FROM arrow_table")
        if number:
            read += parsed - started
            copy += time.process_time() - parsed
            count += len(texts)
    con.close()
    return read / count, copy / count


def report(
    per_event: Mapping[str, list[float]],
    steady: Mapping[str, list[float]],
    steps: Mapping[str, Mapping[str, list[float]]],
    arrow: list[tuple[float, float]],
    args: argparse.Namespace,
) -> None:
    print(
        f"\n{args.events:,} bench events in batches of {args.batch:,}, {args.rounds} alternating rounds;"
        " CPU us an event of the whole load (this process, DuckDB's threads included), medians"
    )
    for path in per_event:
        rounds = ", ".join(f"{v * 1e6:.1f}" for v in per_event[path])
        print(
            f"{path:6} all batches {statistics.median(per_event[path]) * 1e6:6.1f}"
            f"   after the first {statistics.median(steady[path]) * 1e6:6.1f}   ({rounds})"
        )
    print("\nper step, batches after the first: CPU us an event (medians of the rounds)")
    names = sorted({s for path in steps.values() for s in path}, key=_step_order)
    print(f"{'step':28} {'today':>8} {'raw':>8}")
    for name in names:
        cells = []
        for path in ("today", "raw"):
            values = steps.get(path, {}).get(name)
            cells.append(f"{statistics.median(values) * 1e6:8.2f}" if values else f"{'-':>8}")
        print(f"{name:28} {' '.join(cells)}")
    read, copy = (statistics.median(a[i] for a in arrow) * 1e6 for i in (0, 1))
    print(
        "\ninstead of structure + read: pyarrow.json.read_json (schema inferred)"
        f" {read:.2f} us an event, + its copy into a DuckDB temporary table {copy:.2f}"
    )


def _step_order(name: str) -> tuple[int, str]:
    order = ["python", "structure", "read", "summary", "begin"]
    tail = ["discards", USERS, "commit"]
    if name in order:
        return (order.index(name), name)
    if name in tail:
        return (20 + tail.index(name), name)
    return (10, name)


# -- checks -----------------------------------------------------------------------------------


def check_same(today: Path, raw: Path) -> list[str]:
    """The tables both ways: the same columns, types and rows (printed: what differs)."""
    con = duckdb.connect()
    con.execute(f"ATTACH {literal(str(today))} AS a (READ_ONLY)")
    con.execute(f"ATTACH {literal(str(raw))} AS b (READ_ONLY)")
    differences = []
    schemas = {}
    for db in ("a", "b"):
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_catalog = ? AND column_name NOT IN ('loaded_at', 'uuid_ts')"
            " ORDER BY table_name, ordinal_position",
            [db],
        ).fetchall()
        schema: dict[str, dict[str, str]] = defaultdict(dict)
        for table, column, data_type in rows:
            schema[table][column] = data_type
        schemas[db] = schema
    for table in sorted(set(schemas["a"]) | set(schemas["b"])):
        a, b = schemas["a"].get(table), schemas["b"].get(table)
        if a is None or b is None:
            differences.append(f"{table}: only in {'raw' if a is None else 'today'}")
            continue
        if a != b:
            differences.append(f"{table}: columns today {a} raw {b}")
        common = ", ".join(quote(c) for c in a if c in b)
        for x, y, label in (("a", "b", "today"), ("b", "a", "raw")):
            extra = con.execute(
                f"SELECT count(*) FROM (SELECT {common} FROM {x}.{quote(table)}"
                f" EXCEPT ALL SELECT {common} FROM {y}.{quote(table)})"
            ).fetchall()[0][0]
            if extra:
                sample = con.execute(
                    f"SELECT {common} FROM {x}.{quote(table)} EXCEPT ALL"
                    f" SELECT {common} FROM {y}.{quote(table)} LIMIT 2"
                ).fetchall()
                differences.append(f"{table}: {extra} rows only {label}'s, e.g. {sample}")
    counts = {
        t: con.execute(f"SELECT count(*) FROM b.{quote(t)}").fetchall()[0][0] for t in schemas["b"]
    }
    con.close()
    print(f"\nsame tables, columns, types and rows both ways: {not differences} ({counts})")
    for line in differences:
        print("  " + line)
    return differences


def check_retry(file: Path, texts: Sequence[str], clock: Clock) -> None:
    def counts() -> dict[str, int]:
        with duckdb.connect(str(file)) as con:
            tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
            return {
                t: con.execute(f"SELECT count(*) FROM {quote(t)}").fetchall()[0][0] for t in tables
            }

    before = counts()
    destination = TimedDestination(file, RawBatch, clock)
    destination.load(texts)
    asyncio.run(destination.aclose())
    print(f"the raw path's first batch loaded again writes nothing: {counts() == before}")


# The layout's rules, a batch each (as tests/test_dest_storage.py has them).
RULES = [
    [
        event("m1", event="Order Completed", properties={"total": 30, "products": [{"id": "p1"}]}),
        event("m2", "identify", traits={"email": "a@x.example", "plan": "free", "name": "A"}),
        event("m3", "identify", receivedAt="2026-12-03T11:00:00.000Z", traits={"plan": "pro"}),
        event("m4", "page", name="Home", properties={"title": "Home", "name": "forged"}),
        event("m5", "group", groupId="g1", traits={"seats": 12, "name": "Acme"}),
        event("m6", "alias", previousId="a1"),
        event("m7", "screen", name="Main", properties={"orientation": "portrait"}),
    ],
    [
        event(
            "m8",
            event="Paid",
            properties={"amount": 3, "ok": True, "orderId": "c", "order_id": "s"},
        ),
        event("m9", event="Paid", properties={"user_id": "forged", "loaded_at": 1, "€": 2}),
        event(
            "m10",
            event="paid",
            properties={"Order Id": 1, "OrderId": 2, "when": "2026-12-03T10:00:00Z"},
        ),
    ],
    [
        event("m11", event="Paid", properties={"amount": 3.5, "when": "soon"}),  # widen; discard
        event("m12", event="Paid", properties={"amount": "lots", "ok": "yes"}),  # discards
        event("m13", event="Bestellung", properties={"select": 1, "from": "h", "Größe": "groß 🙂"}),
        event("m14", event="Booked", properties={"date": "next week", "seats": 2}),
        event(
            "m15", event="Booked", properties={"seats": 2.5, "nested": {"deep": {"x": [1, 2.5]}}}
        ),
        event("m16", event="Booked", properties={"seats": "many", "big": 2**63 + 1}),
        event("m17", "identify", userId="u2", traits={"id": "x", "received_at": "y"}),
    ],
]


def check_rules(work: Path) -> None:
    """The rules' events both ways, each path into its own file; the files compared."""
    clock = Clock()
    batches = [[normalise(e) for e in events] for events in RULES]
    for path, batch in PATHS.items():
        destination = TimedDestination(work / f"rules-{path}.duckdb", batch, clock)
        for normalised in batches:
            if path == "raw":
                payloads = [orjson.dumps(e).decode() for e in normalised]
            else:
                payloads = [orjson.dumps(layout_event(e)).decode() for e in normalised]
            destination.load(payloads)
        asyncio.run(destination.aclose())
    print("the layout's rules (collisions, conflicts, reserved words, unicode):", end="")
    check_same(work / "rules-today.duckdb", work / "rules-raw.duckdb")


# -- whole replays ------------------------------------------------------------------------------

# label: (destination type, patch mode)
REPLAYS = {
    "file": ("file", ""),
    "duckdb today": ("duckdb", "today"),
    "duckdb raw": ("duckdb", "raw"),
    "no-op load, raw payload": ("duckdb", "noop-raw"),
    "no-op load, today's payload": ("duckdb", "noop"),
}


def replays(events: int, rounds: int) -> None:
    """Each replay kind in turn (the order rotating), `rounds` times, each beside a
    replay of 100 events (its fixed CPU: start-up, forks, outside the replay's clock)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from storage import FILE_SYNC, PROJECT, STORE_SYNC, _children_cpu

    work = Path(tempfile.mkdtemp(prefix="streamctl-duckdb-raw-replays-"))
    try:
        files = {}
        for count in (events, 100):
            files[count] = work / f"events-{count}.ndjson"
            subprocess.run(
                [sys.executable, str(KIT / "gen_events.py"), str(count), str(files[count])],
                check=True,
            )
        rates: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[float]] = defaultdict(list)
        fixed: dict[str, list[float]] = defaultdict(list)
        loads: dict[str, list[float]] = defaultdict(list)  # the load threads' CPU
        batches: dict[str, list[float]] = defaultdict(list)  # events a batch, on average
        steps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        labels = list(REPLAYS)
        for n in range(rounds):
            for label in labels[n % len(labels) :] + labels[: n % len(labels)]:
                kind, mode = REPLAYS[label]
                for count, file in files.items():
                    root = work / f"{n}-{labels.index(label)}-{count}"
                    (root / "syncs").mkdir(parents=True)
                    config = {"path": "out.ndjson" if kind == "file" else "w.duckdb"}
                    (root / "streamctl.yaml").write_text(
                        PROJECT.format(type=kind, config=orjson.dumps(config).decode())
                    )
                    (root / "syncs" / "store-all.yaml").write_text(
                        FILE_SYNC if kind == "file" else STORE_SYNC
                    )
                    before = _children_cpu()
                    out = subprocess.run(
                        [
                            sys.executable,
                            str(Path(__file__).with_name("duckdb_raw_replay.py")),
                            mode,
                            "replay",
                            str(file),
                            "-p",
                            str(root),
                            "--json",
                        ],
                        capture_output=True,
                        text=True,
                        cwd=ROOT,
                    )
                    if out.returncode != 0:
                        raise SystemExit(f"{label} failed:\n{out.stderr[-3000:]}")
                    summary = orjson.loads(out.stdout)[0]
                    delivered = summary["syncs"][0].get("delivered", 0)
                    if delivered != summary["events"]:
                        raise SystemExit(f"{label}: {delivered} of {summary['events']} delivered")
                    used = _children_cpu() - before
                    if count == 100:
                        fixed[label].append(used)
                    else:
                        rates[label].append(count / summary["seconds"])
                        cpu[label].append(used / count)
                        for line in out.stderr.splitlines():
                            if line.startswith("load-thread-cpu "):
                                _, seconds, calls = line.split()
                                loads[label].append(float(seconds) / count)
                                if int(calls):
                                    batches[label].append(count / int(calls))
                            if line.startswith("load-steps "):
                                timed = orjson.loads(line.split(" ", 1)[1])
                                for step, spent in timed.items():
                                    steps[label][step].append(spent / count)
                                rest = -sum(timed.values()) / count
                                steps[label]["python"].append(rest)
                        if steps[label].get("python"):  # the load's CPU outside statements
                            steps[label]["python"][-1] += loads[label][-1]
                print(
                    f"round {n + 1} {label:28} {rates[label][-1]:9,.0f} events/s"
                    f" {cpu[label][-1] * 1e6:5.0f} us/event, fixed {fixed[label][-1]:.2f} s",
                    file=sys.stderr,
                )
        file_rate = statistics.median(rates["file"])
        print(
            f"\nreplays of {events:,} bench events, {rounds} rounds (order rotating), medians;"
            " CPU of the replay process and its workers; fixed: the CPU seconds of a"
            " 100-event replay (start-up and forks, outside the replay's clock);"
            " in clock: (CPU - fixed) / events"
        )
        print(
            f"{'':30} {'events/s':>9} {'ratio':>6} {'CPU us':>7} {'fixed s':>8}"
            f" {'in clock':>9} {'load us':>8}"
        )
        for label in labels:
            rate, used = statistics.median(rates[label]), statistics.median(cpu[label])
            base = statistics.median(fixed[label])
            load = f"{statistics.median(loads[label]) * 1e6:8.1f}" if loads[label] else ""
            print(
                f"{label:30} {rate:9,.0f} {rate / file_rate:6.2f} {used * 1e6:7.1f}"
                f" {base:8.2f} {(used - base / events) * 1e6:9.1f} {load}"
            )
        print("load us: the CPU of the threads running the destination's load, per event")
        for label, sizes in batches.items():
            rounds = ", ".join(f"{size:,.0f}" for size in sizes)
            print(f"{label}: events a batch on average, per round: {rounds}")
        print("\nthe load's steps in the replays (CPU us an event of the thread running each)")
        names = sorted({n for label in steps.values() for n in label}, key=_step_order)
        print(f"{'step':28} " + " ".join(f"{label:>14}" for label in steps))
        for name in names:
            cells = [
                f"{statistics.median(steps[label][name]) * 1e6:14.2f}"
                if steps[label].get(name)
                else f"{'-':>14}"
                for label in steps
            ]
            print(f"{name:28} {' '.join(cells)}")
        for label in labels[1:]:
            ratios = [r / f for r, f in zip(rates[label], rates["file"], strict=True)]
            print(f"{label} / file per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
