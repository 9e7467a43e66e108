"""The console's pages on a big store: every page should answer in under 300 ms.

    python benchmarks/console.py                        # 1,000,000 events over the last week
    python benchmarks/console.py --events 100000 --rounds 9
    python benchmarks/console.py --sqlite-file /tmp/big.db   # build once, reuse on later runs
    python benchmarks/console.py --store postgres --events 200000   # PostgreSQL beside SQLite

The store is written through the store's own API (`record_encoded`, `record_attempts`),
as `streamctl run` would over a week: events every few minutes in batches of 500, one
delivery each across three syncs (91% delivered, 5% filtered, 2% archived after a 500,
1% retrying, 0.5% mapping errors, 0.5% pending), one attempt per sent delivery with
latencies from 20 to 900 ms.

Then the console is served by uvicorn on 127.0.0.1 (as `streamctl console` serves it)
and every page is requested over HTTP, `--rounds` times in turn; the figures are the
median and the slowest of each page's rounds (client-side wall time, rendering and
transfer included). Printed beside them: the first roll-up of the store (once per
store, by the first page or `streamctl run`'s background task), the roll-up of one
more minute (what each `run` node's console does every minute, 5 in a row: the
minutes after the first roll-up's end), and what one Overview chart costs straight
from the raw rows, which is why the rollups exist.

`--store postgres` builds the same events into a PostgreSQL store too (`--postgres-url`,
or a PostgreSQL 16 from the pgserver wheel started here, fsync on) and serves a second
console from it; each round requests every page of both, alternating, and the table
shows both medians and their ratio (PostgreSQL / SQLite).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from postgres import fresh_database, start_postgres

from streamctl.config.loader import load_project
from streamctl.console import Console, ConsoleAccess, ConsoleSource
from streamctl.core.outcomes import STAGE_OF, Status
from streamctl.core.rows import AttemptRecord, DecisionRow, EncodedResults, EventRow
from streamctl.store.backend import open_location
from streamctl.store.base import ConsoleStore, Store
from streamctl.store.queries import ErrorFilter

SYNCS = ("web-to-crm", "web-to-ads", "web-to-warehouse")
BATCH = 500
WEEK = 7 * 86400
PROJECT = """\
version: 1
store: {store}
sources:
  web: { type: http, write_keys: ["bench-key-0001"] }
destinations:
  hook: { type: webhook, config: { url: "http://127.0.0.1:9/events" } }
"""
SYNC = """\
name: {name}
source: web
destination: hook
event_types:
  - type: custom
    filter: {{ field: event, op: neq, value: Ignored }}
    mappings:
      required:
        message_id: {{ field: messageId }}
        event: {{ field: event }}
"""


def write_project(root: Path, store: str) -> None:
    (root / "syncs").mkdir(parents=True, exist_ok=True)
    (root / "streamctl.yaml").write_text(PROJECT.replace("{store}", store))
    for name in SYNCS:
        (root / "syncs" / f"{name}.yaml").write_text(SYNC.format(name=name))


# Of every 200 deliveries: the final status of each slot.
MIX = (
    [Status.FILTERED] * 10 + [Status.ARCHIVED] * 4 + [Status.RETRYING] * 2
    + [Status.MAPPING_ERROR, Status.PENDING] + [Status.DELIVERED] * 182
)  # fmt: skip


def status_of(i: int) -> Status:
    return MIX[i % len(MIX)]


def build_store(location: str, events: int, now: float) -> None:
    """`events` events spread over the week before `now`, with deliveries and attempts."""
    batches = max(1, events // BATCH)
    step = WEEK / batches
    rng = random.Random(7)
    store = open_location(location)
    try:
        for b in range(batches):
            at = now - WEEK + b * step
            _record_batch(store, b * BATCH, at, rng)
            if b % 200 == 0:
                print(f"  {b * BATCH:,} events written", file=sys.stderr)
    finally:
        store.close()


def _record_batch(store: Store, first: int, at: float, rng: random.Random) -> None:
    encoded = EncodedResults("web")
    finals: list[Status] = []
    for k in range(BATCH):
        i = first + k
        message_id = f"m-{i:08d}"
        event = {"type": "track", "event": "Order Completed", "userId": f"u{i % 5000}",
                 "messageId": message_id, "properties": {"total": i % 97}}  # fmt: skip
        encoded.events.append(EventRow(message_id, orjson.dumps(event).decode(), None))
        final = status_of(i)
        recorded = Status.PENDING if final in _SENT else final
        error = "field event is missing" if final is Status.MAPPING_ERROR else None
        payload = orjson.dumps({"message_id": message_id}).decode() if final in _SENT else None
        encoded.decisions.append(
            DecisionRow(k, message_id, SYNCS[i % 3], "custom" if final is not Status.FILTERED else None,
             recorded.value, STAGE_OF[recorded].value, error, f"u{i % 5000}", payload)
        )  # fmt: skip
        finals.append(final)
    recorded = store.record_encoded(encoded, destinations=dict.fromkeys(SYNCS, "hook"), now=at)
    store.record_attempts(_attempts(recorded.pending, finals, at, rng))


_SENT = (Status.DELIVERED, Status.ARCHIVED, Status.RETRYING, Status.PENDING)


def _attempts(pending, finals, at, rng):  # type: ignore[no-untyped-def]
    sent = [f for f in finals if f in _SENT]
    groups: dict[tuple[str, Status, float], list[int]] = {}
    for delivery, final in zip(pending, sent, strict=True):
        if final is Status.PENDING:
            continue
        latency = rng.choice((20.0, 35.0, 60.0, 90.0, 150.0, 400.0, 900.0))
        groups.setdefault((delivery.sync, final, latency), []).append(delivery.id)
    records = []
    for (sync, final, latency), ids in groups.items():
        ok = final is Status.DELIVERED
        records.append(
            AttemptRecord(
                ids, sync, "hook", at + 0.5, "delivered" if ok else "retry", 200 if ok else 500,
                latency, None if ok else "HTTP 500", None if ok else '{"error": "upstream"}',
                None, final, 1, at + 60 if final is Status.RETRYING else None, at + 0.5,
            )
        )  # fmt: skip
    return records


# -- measuring ---------------------------------------------------------------------------------


def serve(project_root: Path) -> tuple[str, uvicorn.Server]:
    project = load_project(project_root)
    console = Console(
        ConsoleSource(lambda: project, live=False), ConsoleAccess.for_host("127.0.0.1")
    )
    server = uvicorn.Server(
        uvicorn.Config(console, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/console", server


def pages(store: ConsoleStore) -> list[tuple[str, str]]:
    (archived,) = store.list_errors(ErrorFilter(statuses=("archived",), limit=1))
    return [
        ("overview, last hour", "/"),
        ("overview, last day", "/?window=day"),
        ("overview, last week", "/?window=week"),
        ("overview, one sync, week", f"/?window=week&sync={SYNCS[1]}"),
        ("syncs", "/syncs"),
        ("errors", "/errors"),
        ("errors, sync + archived", f"/errors?sync={SYNCS[2]}&status=archived"),
        ("errors, status code 500, 1d", "/errors/rows?code=500&since=1d"),
        ("errors, retrying", "/errors/rows?status=retrying"),
        ("errors, code 502 (matches none)", "/errors/rows?code=502"),
        ("delivery page", f"/errors/{archived['id']}"),
        ("debugger", "/debugger"),
        ("debugger, one event", f"/debugger/events/{archived['message_id']}"),
        ("alerts", "/alerts"),
    ]


def measure(
    consoles: dict[str, tuple[str, list[tuple[str, str]]]], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Per store, per page: the client's wall times; each round requests every page of
    every store in turn (the machine's drift spreads over all of them alike)."""
    times: dict[str, dict[str, list[float]]] = {
        kind: {name: [] for name, _ in chosen} for kind, (_, chosen) in consoles.items()
    }
    with httpx.Client(timeout=60) as client:
        for _ in range(rounds):
            for position in range(len(next(iter(consoles.values()))[1])):
                for kind, (base, chosen) in consoles.items():
                    name, path = chosen[position]
                    started = time.perf_counter()
                    reply = client.get(base + path)
                    times[kind][name].append((time.perf_counter() - started) * 1000)
                    assert reply.status_code == 200, (
                        kind,
                        path,
                        reply.status_code,
                        reply.text[:300],
                    )
    return times


def prepare(kind: str, root: Path, location: str, events: int, now: float) -> tuple[str, Any]:
    """Build the store (unless it holds events), print its size and first roll-up, and
    serve a console from it: (base URL, server)."""
    write_project(root, location)
    store = open_location(location)
    try:
        if store.latest_event_id() == 0:  # type: ignore[attr-defined]
            started = time.perf_counter()
            build_store(location, events, now)
            print(
                f"{kind}: store of {events:,} events built in {time.perf_counter() - started:.0f} s"
            )
        started = time.perf_counter()
        raw_week = store.rollup_tables.aggregate(now - WEEK, now, 3600)  # type: ignore[attr-defined]
        raw_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        minutes = store.refresh_rollups(now)  # type: ignore[attr-defined]
        first_refresh = time.perf_counter() - started
        each_minute = []  # what `run` then does every minute: roll up the one that settled
        for k in range(1, 6):
            started = time.perf_counter()
            store.refresh_rollups(now + 60 * k)  # type: ignore[attr-defined]
            each_minute.append((time.perf_counter() - started) * 1000)
        stored = sum(n for _s, sync, metric, n in raw_week if metric == "events" and sync == "*")
    finally:
        store.close()
    print(f"{kind}: {stored:,} events in the last week")
    print(f"{kind}: one week's chart from the raw rows: {raw_ms:,.0f} ms ({len(raw_week):,} rows)")
    print(f"{kind}: first roll-up of the store: {first_refresh:.1f} s ({minutes:,} minutes, once)")
    print(f"{kind}: then a minute's roll-up: median {statistics.median(each_minute):.1f} ms of 5")
    return serve(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--store", choices=("sqlite", "postgres"), default="sqlite",
        help="postgres: also serve the console from a PostgreSQL store, beside SQLite",
    )  # fmt: skip
    parser.add_argument("--sqlite-file", type=Path, help="reuse (or build) the SQLite store here")
    parser.add_argument(
        "--postgres-url", help="a PostgreSQL database to use (kept if it holds events)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streamctl-console-bench-"))
    now = time.time()
    locations = {"sqlite": str((args.sqlite_file or work / "state.db").resolve())}
    postgres = None
    if args.store == "postgres":
        if args.postgres_url is None:
            postgres = start_postgres(work)
        locations["postgres"] = args.postgres_url or fresh_database(postgres)
    servers = []
    try:
        consoles = {}
        for kind, location in locations.items():
            base, server = prepare(kind, work / kind, location, args.events, now)
            servers.append(server)
            store = open_location(location)
            try:
                consoles[kind] = (base, pages(store))  # type: ignore[arg-type]
            finally:
                store.close()
        measure(consoles, 1)  # warm the caches and the templates
        times = measure(consoles, args.rounds)
    finally:
        for server in servers:
            server.should_exit = True
        if postgres is not None:
            postgres.stop()
    report(times, args.rounds)


def report(times: dict[str, dict[str, list[float]]], rounds: int) -> None:
    kinds = list(times)
    header = "".join(f"{kind + ' median':>17}{'max':>8}" for kind in kinds)
    ratio = f"{'pg/sqlite':>11}" if len(kinds) == 2 else ""
    print(f"\n{'page (ms)':<32}{header}{ratio}   ({rounds} rounds, over HTTP)")
    for name in times[kinds[0]]:
        medians = [statistics.median(times[kind][name]) for kind in kinds]
        cells = "".join(
            f"{m:>17.1f}{max(times[kind][name]):>8.1f}"
            for kind, m in zip(kinds, medians, strict=True)
        )
        extra = f"{medians[1] / medians[0]:>11.2f}" if len(kinds) == 2 else ""
        print(f"{name:<32}{cells}{extra}")
    for kind in kinds:
        slowest = max(statistics.median(v) for v in times[kind].values())
        print(f"{kind}: slowest page median {slowest:.1f} ms (target: under 300 ms)")


if __name__ == "__main__":
    main()
