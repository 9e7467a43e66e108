"""What a storage replay costs before the database is reached: the CPU budget issue 16's
floors (PostgreSQL 0.6, DuckDB 0.8 of the `file` replay's events/s) leave the load.

    python3 benchmarks/storage_budget.py [--events 50000] [--rounds 3]

Replays of the same bench events (../shared/bench), alternating rounds, each a
`streamctl replay` subprocess whose CPU (process and worker processes, user + system)
is read from rusage:

- `file`: the `file` destination as in benchmarks/storage.py, the floors' yardstick;
- `layout, no load`: a `type: event` storage sync whose load returns at once: the
  pipeline lays out every event (`warehouse.layout_event`), the store keeps its payload,
  delivery records every outcome, and no database sees a row. Every storage replay
  costs this before its database does anything;
- `raw, no load`: the same with the event itself as the payload, no layout: what
  would be left if the layout moved into the database.

The load is skipped by patching `StorageDestination.load` in the replay process
(the worker processes are forked from it), here only, never in streamctl. Each kind
is also replayed with 200 events in each round: that CPU is mostly start-up (imports,
forking the workers), outside the replay's clock; the per-event figures are the
difference (steady CPU an event).
The plain DuckDB INSERT and PostgreSQL COPY of the laid-out rows (storage.py's
limits; the COPY with the server's CPU) say what the database alone costs an event.

Both replays are CPU-bound on the 2-core machine, so a storage replay at ratio r of
the file replay's events/s may spend file's steady CPU / r an event; less the
`layout, no load` figure, that is what the database load may cost.
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

import storage as bench  # benchmarks/storage.py: its project, syncs, limits and CPU readers

SMALL = 200  # events of the start-up replays
PATCH = """
import sys
from streamctl.destinations.storage import StorageDestination
StorageDestination.load = lambda self, payloads: None
if {raw}:
    StorageDestination.build_payload = lambda self, event_type, mapped, event: dict(event)
sys.argv = ["streamctl", *sys.argv[1:]]
from streamctl.cli.main import main
main()
"""
KINDS = {  # label: (destination type, sync, the replay's Python code or None for -m)
    "file": ("file", bench.FILE_SYNC, None),
    "layout, no load": ("duckdb", bench.STORE_SYNC, PATCH.format(raw=False)),
    "raw, no load": ("duckdb", bench.STORE_SYNC, PATCH.format(raw=True)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import pgserver

    work = Path(tempfile.mkdtemp(prefix="streamctl-storage-budget-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    try:
        events, small = work / "events.ndjson", work / "small.ndjson"
        generate = [sys.executable, str(bench.KIT / "gen_events.py")]
        subprocess.run([*generate, str(args.events), str(events)], check=True)
        small.write_bytes(b"\n".join(events.read_bytes().splitlines()[:SMALL]) + b"\n")
        startup: dict[str, list[float]] = {label: [] for label in KINDS}
        cpu: dict[str, list[float]] = {label: [] for label in KINDS}
        rates: dict[str, list[float]] = {label: [] for label in KINDS}
        for n in range(args.rounds):
            order = list(KINDS)[n % len(KINDS) :] + list(KINDS)[: n % len(KINDS)]
            for label in order:
                name = f"{n}-{label}".replace(" ", "_").replace(",", "")
                base, _, _ = replay_cpu(work / f"{name}-small", label, small)
                seconds, count, rate = replay_cpu(work / name, label, events)
                startup[label].append(base)
                cpu[label].append((seconds - base) / (count - SMALL))
                rates[label].append(rate)
                print(f"round {n + 1} {label:16} {rate:10,.0f} events/s", file=sys.stderr)
        limits = database_limits(events, server.get_uri(), work)
        report(args.events, startup, cpu, rates, limits)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def replay_cpu(root: Path, label: str, events: Path) -> tuple[float, int, float]:
    """Replay `events` as `label` says: (CPU seconds, events, events/s by its clock)."""
    kind, sync, code = KINDS[label]
    config = {"file": {"path": "out.ndjson"}, "duckdb": {"path": "warehouse.duckdb"}}[kind]
    (root / "syncs").mkdir(parents=True)
    (root / "streamctl.yaml").write_text(bench.PROJECT.format(type=kind, config=json.dumps(config)))
    (root / "syncs" / "store-all.yaml").write_text(sync)
    runner = ["-m", "streamctl"] if code is None else ["-c", code]
    command = [sys.executable, *runner, "replay", str(events), "-p", str(root), "--json"]
    before = bench._children_cpu()
    env = {**bench._env(), "PYTHONPATH": str(bench.ROOT)}
    out = subprocess.run(command, capture_output=True, text=True, cwd=bench.ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"replay {label!r} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    summary = json.loads(out.stdout)[0]
    if summary["syncs"][0].get("delivered", 0) != summary["events"]:
        raise SystemExit(f"{label}: not every event was delivered: {summary}")
    return bench._children_cpu() - before, summary["events"], summary["events"] / summary["seconds"]


def database_limits(events: Path, url: str, work: Path) -> dict[str, float]:
    """CPU seconds an event of the plain loads of the laid-out rows (no pipeline)."""
    rows = bench.laid_out(events)
    count = sum(1 for _ in events.open("rb"))
    started = time.process_time()  # DuckDB's threads included: this process
    bench.insert_into_duckdb(rows, work / "limit.duckdb")
    duckdb_cpu = (time.process_time() - started) / count
    server_before, started = bench._server_cpu(url), time.process_time()
    bench.copy_into_postgres(rows, url, "limit")
    copy_cpu = time.process_time() - started + bench._server_cpu(url) - server_before
    return {"plain DuckDB INSERT": duckdb_cpu, "plain PostgreSQL COPY (+ server)": copy_cpu / count}


def report(
    events: int,
    startup: dict[str, list[float]],
    cpu: dict[str, list[float]],
    rates: dict[str, list[float]],
    limits: dict[str, float],
) -> None:
    print(f"\n{events:,} events, {len(cpu['file'])} alternating rounds, medians")
    print(f"{'':34} {'events/s':>10} {'steady CPU us/event':>20} {'start-up CPU s':>15}")
    for label in KINDS:
        steady = statistics.median(cpu[label]) * 1e6
        print(
            f"{label:34} {statistics.median(rates[label]):10,.0f} {steady:20.1f} {statistics.median(startup[label]):15.2f}"
        )
    for label, seconds in limits.items():
        print(f"{label:34} {'':10} {seconds * 1e6:20.1f}")
    file_cpu = statistics.median(cpu["file"]) * 1e6
    before_load = statistics.median(cpu["layout, no load"]) * 1e6
    raw = statistics.median(cpu["raw, no load"]) * 1e6
    print("\nThe load's budget, us of CPU an event (both replays CPU-bound on the same cores)")
    for name, floor, limit in (
        ("postgres", 0.6, "plain PostgreSQL COPY (+ server)"),
        ("duckdb", 0.8, "plain DuckDB INSERT"),
    ):
        whole = file_cpu / floor
        print(
            f"{name} at {floor}: the whole replay {whole:.1f}; the load after the layout"
            f" {whole - before_load:.1f}, layout included {whole - raw:.1f};"
            f" the database's own plain load of the rows {limits[limit] * 1e6:.1f}"
        )


if __name__ == "__main__":
    main()
