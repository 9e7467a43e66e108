"""Scale-out benchmark: sustained ingest-to-delivery events/s of `streamctl run --workers N`
and over the Kafka bus (`run --bus` + N `streamctl worker --bus`).

    python3 benchmarks/scale.py [--seconds 10] [--rounds 3] [--workers 0,1,2] [--bus 1,2] [--baseline DIR]

Each round starts a fresh `streamctl run --workers N` (SQLite store) and the Node
sink of benchmarks/ingest.py, loads `/v1/batch` with 100-event batches from wrk for
`--seconds`, then waits until every event answered 200 has reached the sink. The
figure is sustained end-to-end throughput: events answered 200, divided by the time
from the first request to the last of them arriving at the sink (the load phase plus
the drain after it). Worker counts alternate within each round, and the medians and
the ratio to the first count are printed: the machine's speed drifts, ratios
measured in one run hold. Also printed: the CPU time (user + system) the listener and
its workers spent per event delivered, and the listener's part of it (the rest is the
workers'), and the largest resident memory of the listener and of any worker process,
sampled every second.

A bus round (`--bus 1,2`: one round with 1 worker, one with 2; `--bus ''`: none) runs
the same load against an ingest node, `streamctl run --bus kafka://...`, with N
`streamctl worker --bus` processes delivering to the same sink: the broker is a fresh
Tansu (the test suite's, memory storage) and the store a fresh database on a
PostgreSQL started once for the run (pgserver, fsync on), which the workers share.
The load starts once the workers' consumer group is stable with N members (a
rebalance stops consumption for several seconds on Tansu). Bus rounds alternate with
the `--workers` rounds. Memory: the RSS of the ingest node, of each worker and of the
broker, sampled every second from the warm-up to the end of the drain: the first, the
last and the largest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from ingest import Bench, sample_event
from postgres import fresh_database, start_postgres
from replay import rss_kib


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class MemoryWatch:
    """The largest RSS seen of the listener and of each worker (the fork server excluded)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.listener = 0
        self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            self.listener = max(self.listener, rss_kib(self.pid))
            for child in children(self.pid):  # the fork server; workers are its children
                for worker in children(child) or [child]:
                    self.worker = max(self.worker, rss_kib(worker))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU of a process and (unless told not to) its descendants alive
    now (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if not descendants:
        return own
    return own + sum(cpu_seconds(child) for child in children(pid))


def warm_up(bench: Bench) -> None:
    """One event through to the sink: the workers have started (loaded the project)."""
    event = {**sample_event(0), "messageId": "warm-up"}
    auth = ("bench-write-key", "")
    httpx.post(f"{bench.url}/v1/track", json=event, auth=auth).raise_for_status()
    deadline = time.monotonic() + 60
    while httpx.get(f"{bench.sink_url}/count").json()["events"] < 1:
        if time.monotonic() > deadline:
            raise SystemExit("the warm-up event never reached the sink")
        time.sleep(0.05)


def one_round(
    workers: int, seconds: float, connections: int, pythonpath: str | None = None
) -> tuple[float, float, float, int, int, float, float]:
    """(sustained events/s, accepted events/s, delivered events/s once the load stopped,
    listener MiB, worker MiB, CPU ms per event, of which the listener's) of one fresh run."""
    with tempfile.TemporaryDirectory(prefix="streamctl-scale-bench-") as tmp:
        bench = Bench(
            Path(tmp), seconds, connections, pythonpath, run_args=("--workers", str(workers))
        )
        bench.start()
        watch = MemoryWatch(bench.processes[-1].pid)
        try:
            warm_up(bench)
            cpu_before = cpu_seconds(bench.processes[-1].pid)
            listener_before = cpu_seconds(bench.processes[-1].pid, descendants=False)
            started = time.monotonic()
            load_seconds, ok, _, _ = bench.wrk(
                "/v1/batch", {"batch": [sample_event(i) for i in range(100)]}
            )
            accepted = ok * 100 + 1  # and the warm-up event
            loaded_at = time.monotonic()
            at_load_end = httpx.get(f"{bench.sink_url}/count").json()["events"]
            delivered = 0
            while time.monotonic() - started < 600:
                delivered = httpx.get(f"{bench.sink_url}/count").json()["events"]
                if delivered >= accepted:
                    break
                time.sleep(0.1)
            elapsed = time.monotonic() - started
            drain = (delivered - at_load_end) / max(1e-9, time.monotonic() - loaded_at)
            cpu = cpu_seconds(bench.processes[-1].pid) - cpu_before
            listener_cpu = cpu_seconds(bench.processes[-1].pid, descendants=False)
            listener_cpu -= listener_before
        finally:
            watch.stop()
            bench.stop()
        if delivered < accepted:
            print(f"  --workers {workers}: only {delivered:,} of {accepted:,} delivered")
        return (
            (delivered - 1) / elapsed, accepted / load_seconds, drain,
            watch.listener // 1024, watch.worker // 1024, cpu * 1000 / max(1, delivered - 1),
            listener_cpu * 1000 / max(1, delivered - 1),
        )  # fmt: skip


# -- over the Kafka bus --------------------------------------------------------------


class ProcessMemory:
    """The RSS of named processes, sampled every second: the first, last and largest."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.largest: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            for name, pid in self.pids.items():
                rss = rss_kib(pid)
                self.first.setdefault(name, rss)
                self.last[name] = rss
                self.largest[name] = max(self.largest.get(name, 0), rss)
            if self._stop.wait(1.0):
                return

    def stop(self) -> str:
        """`name first->last (largest)` in MiB for each process, once sampling stopped."""
        self._stop.set()
        self._thread.join()
        return ", ".join(
            f"{name} {self.first[name] >> 10}->{self.last[name] >> 10} ({self.largest[name] >> 10})"
            for name in self.pids
        )


def wait_for_group(bootstrap: str, group: str, members: int) -> None:
    """Return once the consumer group is stable with `members` members."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def stable() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            response = (await admin.describe_consumer_groups([group]))[0]
            _, _, state, _, _, joined = response.groups[0]
            return bool(state == "Stable" and len(joined) == members)
        finally:
            await admin.close()

    deadline = time.monotonic() + 120
    while not asyncio.run(stable()):
        if time.monotonic() > deadline:
            raise SystemExit(f"the group {group} never had {members} stable members")
        time.sleep(0.5)


def bus_round(
    workers: int, seconds: float, connections: int, postgres: Any
) -> tuple[float, float, float, str]:
    """(sustained events/s, accepted events/s, delivered events/s once the load stopped,
    memory) of a fresh ingest node, broker, database and `workers` workers."""
    from tests.services import start_tansu, stop

    broker, bootstrap = start_tansu()
    bus = f"kafka://{bootstrap}/bench"
    store = fresh_database(postgres)
    with tempfile.TemporaryDirectory(prefix="streamctl-scale-bus-") as tmp:
        bench = Bench(Path(tmp), seconds, connections, store=store, run_args=("--bus", bus))
        consumers: list[subprocess.Popen[bytes]] = []
        memory: ProcessMemory | None = None
        try:
            bench.start()
            command = [sys.executable, "-m", "streamctl", "worker", "--bus", bus]
            consumers = [
                subprocess.Popen([*command, "--project", str(Path(tmp) / "project")])
                for _ in range(workers)
            ]
            warm_up(bench)
            wait_for_group(bootstrap, "bench.workers", workers)
            pids = {"ingest": bench.processes[-1].pid, "broker": broker.pid}
            pids |= {f"worker {i + 1}": w.pid for i, w in enumerate(consumers)}
            memory = ProcessMemory(pids)
            sustained, accepted, drain = load_and_drain(bench)
        finally:
            memory_figures = memory.stop() if memory is not None else ""
            for consumer in consumers:
                consumer.terminate()
            for consumer in consumers:
                consumer.wait(60)
            bench.stop()
            stop(broker)
    return sustained, accepted, drain, memory_figures


def load_and_drain(bench: Bench) -> tuple[float, float, float]:
    """Load /v1/batch with wrk, wait for every accepted event at the sink: (sustained
    events/s, accepted events/s, delivered events/s once the load stopped)."""
    started = time.monotonic()
    load_seconds, ok, _, _ = bench.wrk(
        "/v1/batch", {"batch": [sample_event(i) for i in range(100)]}
    )
    accepted = ok * 100 + 1  # and the warm-up event
    loaded_at = time.monotonic()
    at_load_end = sink_count(bench)
    delivered = at_load_end
    while delivered < accepted and time.monotonic() - started < 900:
        time.sleep(0.1)
        delivered = sink_count(bench)
    elapsed = time.monotonic() - started
    if delivered < accepted:
        print(f"  only {delivered:,} of {accepted:,} delivered")
    drain = (delivered - at_load_end) / max(1e-9, time.monotonic() - loaded_at)
    return (delivered - 1) / elapsed, accepted / load_seconds, drain


def sink_count(bench: Bench) -> int:
    return int(httpx.get(f"{bench.sink_url}/count").json()["events"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load phase of each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--workers", default="0,1,2", help="worker counts to compare")
    parser.add_argument(
        "--bus", default="1,2", help="`streamctl worker --bus` counts to compare ('': none)"
    )
    parser.add_argument("--baseline", help="a checkout to compare --workers with (PYTHONPATH)")
    args = parser.parse_args()
    for tool in ("wrk", "node"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed on PATH (apt-get install wrk / nodejs)")
    runs: list[tuple[int, str | None]] = [(int(n), None) for n in args.workers.split(",") if n]
    if args.baseline:
        runs = [run for n, _ in runs for run in ((n, None), (n, args.baseline))]
    bus_counts = [int(n) for n in args.bus.split(",") if n]
    postgres = (
        start_postgres(Path(tempfile.mkdtemp(prefix="streamctl-scale-pg-"))) if bus_counts else None
    )
    print(
        f"{os.cpu_count()} cores; /v1/batch, 100 events a request, wrk {args.connections} "
        f"connections for {args.seconds:g} s, then drained to the sink; {args.rounds} rounds"
    )
    rates: dict[tuple[int, str | None], list[float]] = {run: [] for run in runs}
    costs: dict[tuple[int, str | None], list[float]] = {run: [] for run in runs}
    bus_rates: dict[int, list[float]] = {n: [] for n in bus_counts}
    modes: list[tuple[str, int, str | None]] = [("workers", n, b) for n, b in runs]
    modes += [("bus", n, None) for n in bus_counts]
    for round_ in range(args.rounds):
        for mode, n, baseline in modes if round_ % 2 == 0 else modes[::-1]:
            if mode == "bus":
                sustained, accepted, drain, memory = bus_round(
                    n, args.seconds, args.connections, postgres
                )
                bus_rates[n].append(sustained)
                print(
                    f"round {round_ + 1} --bus, {n} workers: {sustained:,.0f} events/s end to end "
                    f"({accepted:,.0f}/s accepted, {drain:,.0f}/s delivered after the load; "
                    f"RSS MiB first->last (largest): {memory})",
                    flush=True,
                )
                continue
            sustained, accepted, drain, listener, worker, cpu, listener_cpu = one_round(
                n, args.seconds, args.connections, baseline
            )
            rates[(n, baseline)].append(sustained)
            costs[(n, baseline)].append(cpu)
            print(
                f"round {round_ + 1} --workers {n}{' (baseline)' if baseline else ''}: "
                f"{sustained:,.0f} events/s end to end ({accepted:,.0f}/s accepted, "
                f"{drain:,.0f}/s delivered after the load; {cpu:.3f} CPU ms an event, "
                f"{listener_cpu:.3f} of it the listener's; "
                f"max RSS listener {listener} MiB, worker {worker} MiB)",
                flush=True,
            )
    base = statistics.median(rates[runs[0]]) if runs else 0.0
    for run in runs:
        n, baseline = run
        median = statistics.median(rates[run])
        print(
            f"--workers {n}{' (baseline)' if baseline else ''}: median {median:,.0f} events/s "
            f"end to end, {median / base:.2f}x --workers {runs[0][0]}; median "
            f"{statistics.median(costs[run]):.3f} CPU ms an event"
        )
    for n in bus_counts:
        median = statistics.median(bus_rates[n])
        compared = f", {median / base:.2f}x --workers {runs[0][0]}" if base else ""
        print(f"--bus, {n} workers: median {median:,.0f} events/s end to end{compared}")
    if args.baseline:
        for n, _ in runs[::2]:
            pairs = zip(rates[(n, None)], rates[(n, args.baseline)], strict=True)
            ratios = sorted(mine / theirs for mine, theirs in pairs)
            cost_pairs = zip(costs[(n, None)], costs[(n, args.baseline)], strict=True)
            cost_ratios = sorted(mine / theirs for mine, theirs in cost_pairs)
            print(
                f"--workers {n}: this / baseline: events/s median {statistics.median(ratios):.2f}x "
                f"({ratios[0]:.2f}-{ratios[-1]:.2f}), CPU per event median "
                f"{statistics.median(cost_ratios):.2f}x ({cost_ratios[0]:.2f}-{cost_ratios[-1]:.2f})"
            )
    if postgres is not None:
        postgres.stop()


if __name__ == "__main__":
    main()
