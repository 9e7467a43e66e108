"""The console's pages on a big store: every page should answer in under 300 ms.

    python benchmarks/console.py                        # 1,000,000 events over the last week
    python benchmarks/console.py --events 100000 --rounds 9
    python benchmarks/console.py --store /tmp/big.db     # build once, reuse on later runs

The store is written through the store's own API (`record_encoded`, `record_attempts`),
as `streamctl run` would over a week: events every few minutes in batches of 500, one
delivery each across three syncs (91% delivered, 5% filtered, 2% archived after a 500,
1% retrying, 0.5% mapping errors, 0.5% pending), one attempt per sent delivery with
latencies from 20 to 900 ms.

Then the console is served by uvicorn on 127.0.0.1 (as `streamctl console` serves it)
and every page is requested over HTTP, `--rounds` times in turn; the figures are the
median and the slowest of each page's rounds (client-side wall time, rendering and
transfer included). Printed beside them: the first roll-up of the store (once per
store, by the first page or `streamctl run`'s background task), and what one Overview
chart costs straight from the raw rows, which is why the rollups exist.
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

import httpx
import orjson
import uvicorn

from streamctl.config.loader import load_project
from streamctl.console import Console, ConsoleAccess, ConsoleSource
from streamctl.core.outcomes import STAGE_OF, Status
from streamctl.core.rows import AttemptRecord, DecisionRow, EncodedResults, EventRow
from streamctl.store import SqliteStore
from streamctl.store.rollups import aggregate, refresh

SYNCS = ("web-to-crm", "web-to-ads", "web-to-warehouse")
BATCH = 500
WEEK = 7 * 86400
PROJECT = """\
version: 1
store: state.db
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


def write_project(root: Path) -> None:
    (root / "syncs").mkdir(parents=True, exist_ok=True)
    (root / "streamctl.yaml").write_text(PROJECT)
    for name in SYNCS:
        (root / "syncs" / f"{name}.yaml").write_text(SYNC.format(name=name))


# Of every 200 deliveries: the final status of each slot.
MIX = (
    [Status.FILTERED] * 10 + [Status.ARCHIVED] * 4 + [Status.RETRYING] * 2
    + [Status.MAPPING_ERROR, Status.PENDING] + [Status.DELIVERED] * 182
)  # fmt: skip


def status_of(i: int) -> Status:
    return MIX[i % len(MIX)]


def build_store(path: Path, events: int, now: float) -> None:
    """`events` events spread over the week before `now`, with deliveries and attempts."""
    batches = max(1, events // BATCH)
    step = WEEK / batches
    rng = random.Random(7)
    with SqliteStore.open(path) as store:
        for b in range(batches):
            at = now - WEEK + b * step
            _record_batch(store, b * BATCH, at, rng)
            if b % 200 == 0:
                print(f"  {b * BATCH:,} events written", file=sys.stderr)


def _record_batch(store: SqliteStore, first: int, at: float, rng: random.Random) -> None:
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


def serve(project_root: Path, store_path: Path) -> tuple[str, uvicorn.Server]:
    project = load_project(project_root)
    console = Console(
        ConsoleSource(lambda: project, store_path, live=False),
        ConsoleAccess.for_host("127.0.0.1"),
    )
    server = uvicorn.Server(
        uvicorn.Config(console, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/console", server


def pages(store_path: Path) -> list[tuple[str, str]]:
    with SqliteStore.open(store_path, readonly=True) as store:
        archived = store.conn.execute(
            "SELECT id, message_id FROM deliveries WHERE status = 'archived' ORDER BY id DESC LIMIT 1"
        ).fetchone()
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
        ("delivery page", f"/errors/{archived[0]}"),
        ("debugger", "/debugger"),
        ("debugger, one event", f"/debugger/events/{archived[1]}"),
        ("alerts", "/alerts"),
    ]


def measure(base: str, chosen: list[tuple[str, str]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name, _ in chosen}
    with httpx.Client(timeout=60) as client:
        for _ in range(rounds):
            for name, path in chosen:
                started = time.perf_counter()
                reply = client.get(base + path)
                times[name].append((time.perf_counter() - started) * 1000)
                assert reply.status_code == 200, (path, reply.status_code, reply.text[:300])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--store", type=Path, help="reuse (or build) the store at this path")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streamctl-console-bench-"))
    write_project(work)
    store_path = args.store or work / "state.db"
    now = time.time()
    if not store_path.exists():
        started = time.perf_counter()
        build_store(store_path, args.events, now)
        print(f"store of {args.events:,} events built in {time.perf_counter() - started:.0f} s")
    if args.store:
        (work / "streamctl.yaml").write_text(PROJECT.replace("state.db", str(store_path)))
    with SqliteStore.open(store_path) as store:
        counts = {t: store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("events", "deliveries", "attempts")}  # fmt: skip
        started = time.perf_counter()
        raw_week = aggregate(store, now - WEEK, now, 3600)
        raw_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        minutes = refresh(store)
        first_refresh = time.perf_counter() - started
    print(", ".join(f"{n:,} {t}" for t, n in counts.items()))
    print(f"one week's chart from the raw rows: {raw_ms:,.0f} ms ({len(raw_week):,} buckets)")
    print(f"first roll-up of the store: {first_refresh:.1f} s ({minutes:,} minutes, once)")
    base, server = serve(work, store_path)
    chosen = pages(store_path)
    measure(base, chosen, 1)  # warm the page cache and the templates
    times = measure(base, chosen, args.rounds)
    server.should_exit = True
    print(f"\n{'page':<32}{'median ms':>10}{'max ms':>10}   ({args.rounds} rounds, over HTTP)")
    for name, values in times.items():
        print(f"{name:<32}{statistics.median(values):>10.1f}{max(values):>10.1f}")
    slowest = max(statistics.median(v) for v in times.values())
    print(f"\nslowest page median: {slowest:.1f} ms (target: under 300 ms)")


if __name__ == "__main__":
    main()
