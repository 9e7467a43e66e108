"""Replay throughput beside Segment's actions runtime, in the same run on the same machine.

    .venv/bin/python benchmarks/replay.py                     # 100,000 events, peer and streamctl
    .venv/bin/python benchmarks/replay.py --million           # and 1,000,000: memory stays flat
    .venv/bin/python benchmarks/replay.py --events 20000 --skip-peer
    .venv/bin/python benchmarks/replay.py --rounds 5              # 5 alternating pairs, median ratio
    .venv/bin/python benchmarks/replay.py --store postgres        # and on PostgreSQL, beside SQLite

The kit is ../shared/bench (README there): `gen_events.py` makes the events,
`sink.js` counts what arrives, `segment_actions_peer.js` is the peer (Segment's
`@segment/actions-core`: FQL subscription, mapping-kit with one @template, batched
POSTs). It is copied to a temporary folder and `npm install`ed there once
(`--kit DIR` reuses a prepared copy).

The streamctl side is the equivalent sync (below): the same filter
`type = track and event = Order Completed`, the same 8 fields (one a template),
batches of 100, 8 requests in flight, every outcome recorded in SQLite. It runs
as `streamctl replay --json` in a subprocess; events/s is counted over all input
events like the peer's, from the replay's own clock (file reading, parsing,
normalising, pipeline, SQLite and delivery included; interpreter start-up not).
Peak memory is sampled from /proc over the whole process tree (worker processes
included). Figures on shared machines are noisy: compare the ratio of one run.

`--store postgres` runs streamctl a second time in each round on a PostgreSQL store
(`--postgres-url`, or a PostgreSQL 16 from the pgserver wheel started here, with
its default durability: fsync on), right after the SQLite run, and prints the
ratio PostgreSQL / SQLite per round and its median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from postgres import fresh_database, start_postgres

KIT = Path(__file__).resolve().parents[2] / "shared" / "bench"
if not KIT.exists():
    KIT = Path("/work/shared/bench")

PROJECT = """\
version: 1
store: {store}
sources:
  web: {{ type: http, write_keys: [bench-key] }}
destinations:
  sink:
    type: webhook
    config: {{ url: "{url}" }}
"""

# The peer's mapping (segment_actions_peer.js): user_id, event_name, order_id,
# revenue, currency (literal), email, label (@template "{{event}} by {{userId}}"),
# properties.
SYNC = """\
name: orders-to-sink
source: web
destination: sink
event_types:
  - type: custom
    filter:
      all:
        - { field: type, op: eq, value: track }
        - { field: event, op: eq, value: Order Completed }
    mappings:
      required:
        user_id: { field: userId }
        event_name: { field: event }
        order_id: { field: properties.order_id }
        revenue: { field: properties.total }
        currency: { static: USD }
        email: { field: context.traits.email }
        label: { template: "{{ event.event }} by {{ event.userId }}" }
        properties: { field: properties }
delivery:
  batch_size: 100
  concurrency: 8
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help="also replay 1,000,000 events")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--workers", type=int, default=None, help="replay --workers (default: auto)"
    )
    parser.add_argument("--kit", type=Path, help="a copy of the bench kit with node_modules")
    parser.add_argument(
        "--rounds", type=int, default=1, help="pairs of runs (peer, streamctl), alternating"
    )
    parser.add_argument(
        "--store", choices=("sqlite", "postgres"), default="sqlite",
        help="postgres: also replay into a PostgreSQL store, beside SQLite",
    )  # fmt: skip
    parser.add_argument("--postgres-url", help="a PostgreSQL database to use (it is emptied)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="streamctl-replay-bench-"))
    postgres = None
    if args.store == "postgres" and not args.postgres_url:
        postgres = start_postgres(work)
    kit = args.kit or prepare_kit(work / "kit")
    port = free_port()
    sink = subprocess.Popen(["node", str(kit / "sink.js"), str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/ingest"
        sizes = [args.events] + ([1_000_000] if args.million else [])
        results = []
        for size in sizes:
            events = work / f"events-{size}.ndjson"
            subprocess.run(
                [sys.executable, str(kit / "gen_events.py"), str(size), str(events)], check=True
            )
            rounds = args.rounds if size == args.events else 1
            with_peer = not args.skip_peer and size == args.events
            for n in range(rounds):
                peer = run_peer(kit, events, url, port) if with_peer else None
                ours = run_streamctl(work / f"project-{size}-{n}", events, url, port, args.workers)
                on_pg = None
                if args.store == "postgres":
                    database = fresh_database(postgres, args.postgres_url)
                    on_pg = run_streamctl(
                        work / f"project-{size}-{n}-pg", events, url, port, args.workers, database
                    )
                results.append((size, peer, ours, on_pg))
            events.unlink()
        report(results)
    finally:
        sink.terminate()
        sink.wait()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


def prepare_kit(target: Path) -> Path:
    shutil.copytree(KIT, target)
    for path in target.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    print(f"npm install in {target} ...", file=sys.stderr)
    subprocess.run(["npm", "install", "--silent"], cwd=target, check=True)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the sink did not start on port {port}")


def sink_count(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count") as response:
        return json.loads(response.read())


def run_peer(kit: Path, events: Path, url: str, port: int) -> dict[str, float]:
    before = sink_count(port)
    started = time.perf_counter()
    out = subprocess.run(
        ["node", str(kit / "segment_actions_peer.js"), str(events), url, "100", "8"],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["wall"] = time.perf_counter() - started
    figures["delivered"] = sink_count(port)["events"] - before["events"]
    return figures


def run_streamctl(
    root: Path,
    events: Path,
    url: str,
    port: int,
    workers: int | None,
    postgres_url: str | None = None,
) -> dict[str, float]:
    (root / "syncs").mkdir(parents=True)
    (root / "streamctl.yaml").write_text(PROJECT.format(url=url, store=postgres_url or "state.db"))
    (root / "syncs" / "orders-to-sink.yaml").write_text(SYNC)
    command = [sys.executable, "-m", "streamctl", "replay", str(events), "-p", str(root), "--json"]
    if workers is not None:
        command += ["--workers", str(workers)]
    before = sink_count(port)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = MemorySampler(process.pid)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.stop()
    if process.returncode != 0:
        raise SystemExit(f"streamctl replay failed ({process.returncode}):\n{stderr}")
    summary = json.loads(stdout)[0]
    recorded, stored_events, attempts = recorded_rows(root, postgres_url)
    size = summary["events"]
    return {
        "events": size,
        "seconds": summary["seconds"],
        "wall": wall,
        "events_per_s": size / summary["seconds"],
        "delivered": sink_count(port)["events"] - before["events"],
        "recorded": recorded,
        "stored_events": stored_events,
        "attempts": attempts,
        "peak_main_mb": sampler.peak_main / 1024,
        "peak_tree_mb": sampler.peak_tree / 1024,
    }


def recorded_rows(root: Path, postgres_url: str | None) -> tuple[dict[str, int], int, int]:
    """Deliveries by status, events and attempts in the store."""
    queries = (
        "SELECT status, count(*) FROM deliveries GROUP BY status",
        "SELECT count(*) FROM events",
        "SELECT count(*) FROM attempts",
    )
    if postgres_url is not None:
        import psycopg

        with psycopg.connect(postgres_url) as pg:
            answers = [pg.execute(q).fetchall() for q in queries]
    else:
        with sqlite3.connect(root / "state.db") as conn:
            answers = [conn.execute(q).fetchall() for q in queries]
    return dict(answers[0]), answers[1][0][0], answers[2][0][0]


class MemorySampler(threading.Thread):
    """Peak resident memory (KiB) of a process and of its whole tree, from /proc."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_main = 0
        self.peak_tree = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            main = rss_kib(self.pid)
            tree = main + sum(rss_kib(child) for child in descendants(self.pid))
            self.peak_main = max(self.peak_main, main)
            self.peak_tree = max(self.peak_tree, tree)
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self.join()


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            found.extend(descendants(child))
    return found


Result = tuple[int, dict[str, float] | None, dict[str, float], dict[str, float] | None]


def report(results: list[Result]) -> None:
    print()
    for size, peer, ours, on_pg in results:
        print(f"== {size:,} events ==")
        if peer is not None:
            print(
                f"segment actions-core: {peer['events_per_s']:>9,.0f} events/s"
                f"  ({peer['seconds']:.2f} s, {peer['wall']:.2f} s wall with start-up;"
                f" {peer['delivered']:,} delivered to the sink;"
                " file read and parsed before its clock starts)"
            )
        for name, figures in (("SQLite", ours), ("PostgreSQL", on_pg)):
            if figures is None:
                continue
            print(
                f"streamctl replay ({name}): {figures['events_per_s']:>9,.0f} events/s"
                f"  ({figures['seconds']:.2f} s replay, {figures['wall']:.2f} s wall with"
                f" start-up; {figures['delivered']:,} delivered to the sink)"
            )
            print(
                f"  recorded in {name}: {figures['stored_events']:,} events, deliveries"
                f" {figures['recorded']}, {figures['attempts']:,} attempts; peak memory"
                f" {figures['peak_main_mb']:.0f} MB main process,"
                f" {figures['peak_tree_mb']:.0f} MB with its worker processes"
            )
        if peer is not None:
            print(
                f"ratio streamctl (SQLite) / peer: {ours['events_per_s'] / peer['events_per_s']:.2f}"
            )
            if on_pg is not None:
                print(
                    "ratio streamctl (PostgreSQL) / peer:"
                    f" {on_pg['events_per_s'] / peer['events_per_s']:.2f}"
                )
        if on_pg is not None:
            print(f"ratio PostgreSQL / SQLite: {on_pg['events_per_s'] / ours['events_per_s']:.2f}")
        print()
    _median(
        "streamctl / peer", [o["events_per_s"] / p["events_per_s"] for _, p, o, _ in results if p]
    )
    _median(
        "PostgreSQL / SQLite",
        [pg["events_per_s"] / o["events_per_s"] for _, _, o, pg in results if pg],
    )


def _median(name: str, ratios: list[float]) -> None:
    if len(ratios) > 1:
        print(
            f"ratio {name} over {len(ratios)} rounds: median"
            f" {statistics.median(ratios):.2f} (from {min(ratios):.2f} to {max(ratios):.2f}):"
            f" {', '.join(f'{r:.2f}' for r in ratios)}"
        )


if __name__ == "__main__":
    main()
