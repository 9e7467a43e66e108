"""Storage destinations' throughput beside the `file` destination and the database's own limit.

    python benchmarks/storage.py                       # 100,000 events, 3 alternating rounds
    python benchmarks/storage.py --events 20000 --rounds 5
    python benchmarks/storage.py --kinds file,duckdb --baseline /tmp/main  # A/B a change

`--baseline DIR` (repeatable): another checkout (a `git archive` of main, say); each
round replays into the storage destinations with its code too, beside this checkout's
(the order rotates from round to round), so a change is measured against the code
before it in one run. Its rows are labelled `KIND@DIR's name`.

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
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
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
# CPU seconds per event of each replay (process and workers): steadier than events/s
# on a loaded machine, where the wall clock mostly measures the other processes.
CPU: dict[str, list[float]] = defaultdict(list)
# CPU seconds per event of the PostgreSQL server during each postgres replay.
SERVER_CPU: dict[str, list[float]] = defaultdict(list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=None, help="replay --workers (default: auto)"
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="replays to run (comma-separated; file always)"
    )
    parser.add_argument(
        "--baseline", type=Path, action="append", default=[], help="a checkout to replay beside"
    )
    parser.add_argument("--no-limit", action="store_true", help="skip the plain loads")
    args = parser.parse_args()
    kinds = ["file", *(k for k in args.kinds.split(",") if k in KINDS and k != "file")]
    runs = [(k, ROOT, 0) for k in kinds]  # (label, checkout, its number)
    for number, other in enumerate(args.baseline, 1):
        runs += [(f"{k}@{other.name}", other.resolve(), number) for k in kinds if k != "file"]

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
        figures: dict[str, list[float]] = {k: [] for k, _, _ in runs}
        if not args.no_limit:
            figures.update(copy=[], insert=[])
        for n in range(args.rounds):
            # The checkouts take turns at going first: none always runs right after
            # the file replay.
            versions = 1 + len(args.baseline)
            ordered = sorted(
                runs, key=lambda r: (kinds.index(r[0].split("@")[0]), (r[2] - n) % versions)
            )
            for label, code, _ in ordered:
                kind = label.split("@")[0]
                rate = replay(work / f"{label}-{n}", kind, events, url, n, args.workers, code)
                figures[label].append(rate)
                print(f"round {n + 1} {label:13} {rate:10,.0f} events/s", file=sys.stderr)
            if args.no_limit:
                continue
            figures["copy"].append(args.events / copy_into_postgres(rows, url, f"limit_{n}"))
            cpu = time.process_time()  # DuckDB's threads included: one process
            figures["insert"].append(
                args.events / insert_into_duckdb(rows, work / f"limit-{n}.duckdb")
            )
            CPU["insert"].append((time.process_time() - cpu) / args.events)
            print(
                f"round {n + 1} copy {figures['copy'][-1]:,.0f} insert {figures['insert'][-1]:,.0f} events/s",
                file=sys.stderr,
            )
        report(figures, args.events)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def replay(
    root: Path, kind: str, events: Path, url: str, n: int, workers: int | None, code: Path
) -> float:
    config = {
        "file": {"path": "out.ndjson"},
        "postgres": {
            "url": url,
            "schema": f"bench_{root.name.replace('@', '_').replace('-', '_')}",
        },
        "duckdb": {"path": "warehouse.duckdb"},
        "parquet": {"path": "lake"},
    }[kind]
    (root / "syncs").mkdir(parents=True)
    (root / "streamctl.yaml").write_text(PROJECT.format(type=kind, config=json.dumps(config)))
    (root / "syncs" / "store-all.yaml").write_text(FILE_SYNC if kind == "file" else STORE_SYNC)
    command = [sys.executable, "-m", "streamctl", "replay", str(events), "-p", str(root), "--json"]
    if workers is not None:
        command += ["--workers", str(workers)]
    before = _children_cpu()
    server_before = _server_cpu(url) if kind == "postgres" else 0.0
    # In the checkout's folder: `python -m` puts the current folder ahead of PYTHONPATH,
    # so from another checkout's folder every replay would run that checkout's code.
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=code,
        env={**_env(), "PYTHONPATH": str(code)},
    )
    if out.returncode != 0:
        raise SystemExit(f"replay into {kind} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    summary = json.loads(out.stdout)[0]
    delivered = summary["syncs"][0].get("delivered", 0)
    if delivered != summary["events"]:
        raise SystemExit(f"{kind}: {delivered} of {summary['events']} events delivered")
    label = root.name.rsplit("-", 1)[0]
    CPU[label].append((_children_cpu() - before) / summary["events"])
    if kind == "postgres":
        SERVER_CPU[label].append((_server_cpu(url) - server_before) / summary["events"])
    return float(summary["events"]) / float(summary["seconds"])


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (a replay, with its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(url: str) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster with the backends it
    has reaped (cutime, cstime) and those still running. Linux's /proc only."""
    from urllib.parse import parse_qs, urlparse

    host = parse_qs(urlparse(url).query).get("host", [""])[0]
    pid_file = Path(host) / "postmaster.pid"
    if not pid_file.exists():
        return 0.0
    postmaster = int(pid_file.read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a backend that just exited: its time is in the postmaster's cutime
        pid, parent = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(map(int, fields[11:15]))  # utime stime cutime cstime
        elif parent == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def _env() -> dict[str, str]:
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

    from streamctl.destinations.duckdb_staging import SQL_TYPES, quote

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
        "copy": "plain COPY (postgres)",
        "insert": "plain INSERT (duckdb)",
    }
    for kind in figures:
        label = labels.get(kind) or "replay into " + kind
        values = figures[kind]
        median = statistics.median(values)
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{label:28} {median:10,.0f} {median / file_median:7.2f}   {rounds}")
    file_cpu = statistics.median(CPU["file"])
    print(
        "\nCPU of the whole replay (process and workers), us/event (ratio: file's / this);"
        " insert: the plain DuckDB INSERT's"
    )
    for kind, values in CPU.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v * 1e6:,.0f}" for v in values)
        print(f"{kind:28} {median * 1e6:10,.0f} {file_cpu / median:7.2f}   {rounds}")
    if SERVER_CPU:
        print("\nCPU of the PostgreSQL server during each replay, us/event (+ the replay's: total)")
    for kind, values in SERVER_CPU.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v * 1e6:,.0f}" for v in values)
        total = median + statistics.median(CPU[kind])
        print(f"{kind:28} {median * 1e6:10,.0f} {total * 1e6:7,.0f}   {rounds}")
    floors = {"postgres": 0.6, "duckdb": 0.8}
    for kind in figures:
        floor = floors.get(kind.split("@")[0])
        if floor is None:
            continue
        ratios = [v / f for v, f in zip(figures[kind], figures["file"], strict=True)]
        print(f"{kind} / file per round: {', '.join(f'{r:.2f}' for r in ratios)} (floor {floor})")


if __name__ == "__main__":
    main()
