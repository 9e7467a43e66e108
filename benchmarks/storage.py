"""Storage destinations' throughput beside the `file` destination and the database's own limit.

    python benchmarks/storage.py                       # 100,000 events, 3 alternating rounds
    python benchmarks/storage.py --events 20000 --rounds 5
    python benchmarks/storage.py --only file,postgres   # some destinations (and their limit)

One run, on one machine, in alternating rounds (file, postgres, duckdb, parquet, then
the plain loads), medians at the end: these machines drift by a third within minutes,
so only ratios measured side by side mean anything.

- replays: `streamctl replay --json` of the bench kit's events (../shared/bench,
  `gen_events.py`) in a subprocess, into a project whose one sync sends every event to
  the destination: the storage destinations with `type: event` (the whole event in the
  warehouse layout), `file` with the envelope, properties, traits and context mapped
  (what it takes to keep the whole event in NDJSON). events/s from the replay's own clock.
- the limit: the same rows (laid out beforehand, outside the clock) written with one
  `COPY` per table into PostgreSQL and one `INSERT ... SELECT ... FROM read_json(FILE)`
  per table into DuckDB: what the database takes with no pipeline, no store and no
  delivery around it.

PostgreSQL is pgserver's (the wheel's PostgreSQL 16), started in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIT = Path(__file__).resolve().parents[2] / "shared" / "bench"
if not KIT.exists():
    KIT = Path("/work/shared/bench")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROJECT = """\
version: 1
store: state.db
sources:
  web: {{ type: http, write_keys: [bench-key] }}
destinations:
  out:
    type: {type}
    config: {config}
"""
STORE_SYNC = """\
name: store-all
source: web
destination: out
event_types:
  - type: event
delivery: {{ batch_size: {batch} }}
"""
FILE_SYNC = """\
name: store-all
source: web
destination: out
event_types:
  - type: custom
    mappings:
      required:
        message_id: { field: messageId }
        type: { field: type }
        event: { field: event }
        user_id: { field: userId }
        anonymous_id: { field: anonymousId }
        timestamp: { field: timestamp }
        received_at: { field: receivedAt }
      properties:
        properties: { field: properties }
        traits: { field: traits }
        context: { field: context }
"""
KINDS = ("file", "postgres", "duckdb", "parquet")
BATCH = 5000  # events per load: a statement per table per batch costs the same for 10 rows or 5,000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=None, help="replay --workers (default: auto)"
    )
    parser.add_argument(
        "--only", default=",".join(KINDS), help="destinations to replay into (comma-separated)"
    )
    args = parser.parse_args()
    kinds = [k for k in KINDS if k in args.only.split(",")]

    import pgserver

    work = Path(tempfile.mkdtemp(prefix="streamctl-storage-bench-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    try:
        url = server.get_uri()
        events = work / "events.ndjson"
        subprocess.run(
            [sys.executable, str(KIT / "gen_events.py"), str(args.events), str(events)], check=True
        )
        rows = laid_out(events)
        figures: dict[str, list[float]] = {k: [] for k in (*KINDS, "copy", "insert")}
        for n in range(args.rounds):
            for kind in kinds:
                rate = replay(work / f"{kind}-{n}", kind, events, url, n, args.workers)
                figures[kind].append(rate)
                print(f"round {n + 1} {kind:8} {rate:10,.0f} events/s", file=sys.stderr)
            figures["copy"].append(args.events / copy_into_postgres(rows, url, f"limit_{n}"))
            if "duckdb" in kinds or "parquet" in kinds:
                figures["insert"].append(
                    args.events / insert_into_duckdb(rows, work / f"limit-{n}.duckdb")
                )
            limits = {k: figures[k][-1] for k in ("copy", "insert") if len(figures[k]) > n}
            print(
                f"round {n + 1} "
                + " ".join(f"{k} {v:,.0f}" for k, v in limits.items())
                + " events/s",
                file=sys.stderr,
            )
        report(figures, args.events)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def replay(root: Path, kind: str, events: Path, url: str, n: int, workers: int | None) -> float:
    config = {
        "file": {"path": "out.ndjson"},
        "postgres": {"url": url, "schema": f"bench_{n}"},
        "duckdb": {"path": "warehouse.duckdb"},
        "parquet": {"path": "lake"},
    }[kind]
    (root / "syncs").mkdir(parents=True)
    (root / "streamctl.yaml").write_text(PROJECT.format(type=kind, config=json.dumps(config)))
    (root / "syncs" / "store-all.yaml").write_text(
        FILE_SYNC if kind == "file" else STORE_SYNC.format(batch=BATCH)
    )
    command = [sys.executable, "-m", "streamctl", "replay", str(events), "-p", str(root), "--json"]
    if workers is not None:
        command += ["--workers", str(workers)]
    out = subprocess.run(
        command, capture_output=True, text=True, env={**_env(), "PYTHONPATH": str(ROOT)}
    )
    if out.returncode != 0:
        raise SystemExit(f"replay into {kind} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    summary = json.loads(out.stdout)[0]
    delivered = summary["syncs"][0].get("delivered", 0)
    if delivered != summary["events"]:
        raise SystemExit(f"{kind}: {delivered} of {summary['events']} events delivered")
    return float(summary["events"]) / float(summary["seconds"])


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def laid_out(events: Path) -> list[object]:
    """The batch's rows per table, as the storage destinations would write them."""
    import orjson

    from streamctl.destinations.warehouse import TableRows, layout_event, plan_load
    from streamctl.sources.normalise import normalise

    payloads = [
        orjson.loads(orjson.dumps(layout_event(normalise(orjson.loads(line)))))
        for line in events.read_bytes().splitlines()
    ]
    batch = TableRows.collect(payloads)
    schema: dict[str, dict[str, str]] = {}
    plan = plan_load(batch, schema)  # type: ignore[arg-type]
    from streamctl.destinations.warehouse import merge_schema

    merge_schema(schema, plan.changes)  # type: ignore[arg-type]
    plan = plan_load(batch, schema)  # type: ignore[arg-type]
    return [*plan.tables.values(), *([plan.users] if plan.users else [])]


def copy_into_postgres(tables: list[object], url: str, schema: str) -> float:
    import psycopg
    from psycopg import sql

    from streamctl.destinations.postgres_backend import SQL_TYPES

    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table in tables:
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(SQL_TYPES[t]))  # type: ignore[index]
                for c, t in zip(table.columns, table.types, strict=True)  # type: ignore[attr-defined]
            )
            conn.execute(
                sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (id))").format(
                    sql.Identifier(schema, table.name),
                    columns,  # type: ignore[attr-defined]
                )
            )
        conn.commit()
        started = time.perf_counter()
        for table in tables:
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(schema, table.name),  # type: ignore[attr-defined]
                sql.SQL(", ").join(map(sql.Identifier, table.columns)),  # type: ignore[attr-defined]
            )
            with conn.cursor().copy(statement) as copy:
                for row in table.tuples():  # type: ignore[attr-defined]
                    copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started


def insert_into_duckdb(tables: list[object], path: Path) -> float:
    """One `INSERT ... SELECT FROM read_json(FILE)` per table, the rows written as
    NDJSON first (inside the clock: DuckDB's Python API has no faster way in)."""
    import duckdb
    import orjson

    from streamctl.destinations.duckdb_backend import SQL_TYPES, quote

    con = duckdb.connect(str(path))
    for table in tables:
        columns = ", ".join(
            f"{quote(c)} {SQL_TYPES[t]}" for c, t in zip(table.columns, table.types, strict=True)
        )  # type: ignore[attr-defined]
        key = ", PRIMARY KEY (id)" if table.name == "users" else ""  # type: ignore[attr-defined]
        con.execute(f"CREATE TABLE {quote(table.name)} ({columns}{key})")  # type: ignore[attr-defined]
    started = time.perf_counter()
    for n, table in enumerate(tables):
        rows_file = path.with_name(f"{path.stem}-{n}.ndjson")
        rows_file.write_bytes(b"\n".join(map(orjson.dumps, table.rows)))  # type: ignore[attr-defined]
        types = ", ".join(
            f"'{c}': '{SQL_TYPES[t]}'" for c, t in zip(table.columns, table.types, strict=True)
        )  # type: ignore[attr-defined]
        con.execute(
            f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, table.columns))})"  # type: ignore[attr-defined]
            f" SELECT * FROM read_json('{rows_file}', format = 'newline_delimited', columns = {{{types}}})"
        )
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def report(figures: dict[str, list[float]], events: int) -> None:
    file_median = statistics.median(figures["file"])
    print(
        f"\n{events:,} events, {len(figures['file'])} alternating rounds (medians; ratio to the file replay)"
    )
    print(f"{'':28} {'events/s':>10} {'ratio':>7}   rounds")
    labels = {
        "file": "replay into file",
        "postgres": "replay into postgres",
        "duckdb": "replay into duckdb",
        "parquet": "replay into parquet",
        "copy": "plain COPY (postgres)",
        "insert": "plain INSERT (duckdb)",
    }
    for kind, label in labels.items():
        values = figures[kind]
        if not values:
            continue
        median = statistics.median(values)
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{label:28} {median:10,.0f} {median / file_median:7.2f}   {rounds}")
    for kind, floor in (("postgres", 0.6), ("duckdb", 0.8)):
        if not figures[kind] or not figures["file"]:
            continue
        ratios = [v / f for v, f in zip(figures[kind], figures["file"], strict=True)]
        print(f"{kind} / file per round: {', '.join(f'{r:.2f}' for r in ratios)} (floor {floor})")


if __name__ == "__main__":
    main()
