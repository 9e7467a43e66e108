"""Scale-out benchmark: sustained ingest-to-delivery events/s of `streamctl run --workers N`.

    python3 benchmarks/scale.py [--seconds 10] [--rounds 3] [--workers 0,1,2] [--baseline DIR]

Each round starts a fresh `streamctl run --workers N` (SQLite store) and the Node
sink of benchmarks/ingest.py, loads `/v1/batch` with 100-event batches from wrk for
`--seconds`, then waits until every event answered 200 has reached the sink. The
figure is sustained end-to-end throughput: events answered 200, divided by the time
from the first request to the last of them arriving at the sink (the load phase plus
the drain after it). Worker counts alternate within each round, and the medians and
the ratio to the first count are printed: the machine's speed drifts, ratios
measured in one run hold. Also printed: the largest resident memory of the listener
and of any worker process, sampled every second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from ingest import Bench, sample_event
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants alive now (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
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
) -> tuple[float, float, float, int, int, float]:
    """(sustained events/s, accepted events/s, delivered events/s once the load stopped,
    listener MiB, worker MiB, CPU ms per event) of one fresh run."""
    with tempfile.TemporaryDirectory(prefix="streamctl-scale-bench-") as tmp:
        bench = Bench(
            Path(tmp), seconds, connections, pythonpath, run_args=("--workers", str(workers))
        )
        bench.start()
        watch = MemoryWatch(bench.processes[-1].pid)
        try:
            warm_up(bench)
            cpu_before = cpu_seconds(bench.processes[-1].pid)
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
        finally:
            watch.stop()
            bench.stop()
        if delivered < accepted:
            print(f"  --workers {workers}: only {delivered:,} of {accepted:,} delivered")
        return (
            (delivered - 1) / elapsed, accepted / load_seconds, drain,
            watch.listener // 1024, watch.worker // 1024, cpu * 1000 / max(1, delivered - 1),
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load phase of each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--workers", default="0,1,2", help="worker counts to compare")
    parser.add_argument("--baseline", help="a checkout to compare with (PYTHONPATH)")
    args = parser.parse_args()
    for tool in ("wrk", "node"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed on PATH (apt-get install wrk / nodejs)")
    runs = [(int(n), None) for n in args.workers.split(",")]
    if args.baseline:
        runs = [run for n, _ in runs for run in ((n, None), (n, args.baseline))]
    print(
        f"{os.cpu_count()} cores; /v1/batch, 100 events a request, wrk {args.connections} "
        f"connections for {args.seconds:g} s, then drained to the sink; {args.rounds} rounds"
    )
    rates: dict[tuple[int, str | None], list[float]] = {run: [] for run in runs}
    costs: dict[tuple[int, str | None], list[float]] = {run: [] for run in runs}
    for round_ in range(args.rounds):
        for n, baseline in runs if round_ % 2 == 0 else runs[::-1]:
            sustained, accepted, drain, listener, worker, cpu = one_round(
                n, args.seconds, args.connections, baseline
            )
            rates[(n, baseline)].append(sustained)
            costs[(n, baseline)].append(cpu)
            print(
                f"round {round_ + 1} --workers {n}{' (baseline)' if baseline else ''}: "
                f"{sustained:,.0f} events/s end to end ({accepted:,.0f}/s accepted, "
                f"{drain:,.0f}/s delivered after the load; {cpu:.3f} CPU ms an event; "
                f"max RSS listener {listener} MiB, worker {worker} MiB)",
                flush=True,
            )
    base = statistics.median(rates[runs[0]])
    for run in runs:
        n, baseline = run
        median = statistics.median(rates[run])
        print(
            f"--workers {n}{' (baseline)' if baseline else ''}: median {median:,.0f} events/s "
            f"end to end, {median / base:.2f}x --workers {runs[0][0]}; median "
            f"{statistics.median(costs[run]):.3f} CPU ms an event"
        )
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


if __name__ == "__main__":
    main()
