"""Ingest benchmark: `streamctl run` under load from separate processes, delivery running.

    .venv/bin/python benchmarks/ingest.py [--seconds 10] [--connections 64] [--rate 1000]
    .venv/bin/python benchmarks/ingest.py --baseline /tmp/main-checkout --rounds 5 --seconds 5

Processes: `streamctl run` (the listener, group commit to SQLite with
synchronous=FULL, the pipeline and delivery in the same process), a local sink
(Node, `node` on PATH) that the project's sync delivers to, and the load generator:
wrk (Debian's package: `apt-get install wrk`; C, event-driven, one thread) for the
two throughput phases, and an asyncio client for the paced latency phase. The
figures printed:

1. `/v1/batch` with 100-event batches: events/s answered 200 (durably stored);
2. `/v1/track` with one event a request: requests/s answered 200;
3. end-to-end latency at a steady 1,000 events/s (one event per `/v1/track`
   request): from the request being sent to the event arriving at the sink,
   p50/p95/p99, measured with wall clocks of the same machine (the event carries its
   send time; the sink subtracts it from its arrival time).

Responses other than 200 (429 when the queue between ingest and delivery is full)
are counted and reported, never counted as accepted. `--store postgres` runs the
same phases on a PostgreSQL store (benchmarks/postgres.py): the queue's appends are
then COPYs committed with synchronous_commit on.

`--baseline DIR` compares this checkout with another (a `git archive` of main, say):
phases 1 and 2 run in alternating pairs (the order flips every round, since the
machine's speed drifts), `streamctl run` importing from DIR or from here, and the
median ratio (this / baseline) of each phase is printed with its range: of the
throughput, and of the server's CPU time per accepted event (user + system, from
/proc), which other processes on a shared machine disturb far less than wall time.
The compared instances have no sync: with delivery running, the CPU per event would
depend on the rate (delivery yields to ingest only above 10,000 events/s), so a
slower round would look costlier per event.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from postgres import fresh_database, start_postgres

WRITE_KEY = "bench-write-key"
AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()

# Records each event's latency: now (ms since the epoch) minus the event's sent_ms.
SINK_JS = r"""
const http = require('http');
const { performance } = require('perf_hooks');
const port = Number(process.argv[2]);
let requests = 0, events = 0, latencies = [];
const now = () => performance.timeOrigin + performance.now();
http.createServer((req, res) => {
  if (req.method === 'GET') {
    const body = JSON.stringify(req.url === '/latencies' ? {latencies} : {requests, events});
    if (req.url === '/reset') { latencies = []; }
    res.writeHead(200, {'content-type': 'application/json'});
    return res.end(body);
  }
  const chunks = [];
  req.on('data', c => chunks.push(c));
  req.on('end', () => {
    const arrived = now();
    requests++;
    let items;
    try { const d = JSON.parse(Buffer.concat(chunks).toString()); items = Array.isArray(d) ? d : [d]; }
    catch (e) { items = []; }
    events += items.length;
    for (const item of items) {
      const sent = item.properties && item.properties.sent_ms;
      if (typeof sent === 'number' && sent > 0) latencies.push(arrived - sent);
    }
    res.writeHead(200, {'content-type': 'application/json'}); res.end('{"ok":true}');
  });
}).listen(port, '127.0.0.1');
"""

PROJECT = """\
version: 1
store: {store}
listen: {{ host: 127.0.0.1, port: {port} }}
sources:
  web:
    type: http
    write_keys: ["{key}"]
destinations:
  sink:
    type: webhook
    config: {{ url: "http://127.0.0.1:{sink_port}/ingest" }}
"""

SYNC = """\
name: web-to-sink
source: web
destination: sink
event_types:
  - type: custom
    mappings:
      required:
        message_id: { field: messageId }
        event: { field: event }
        user_id: { field: userId }
      properties:
        sent_ms: { field: properties.sent_ms }
        plan: { field: properties.plan }
delivery:
  batch_size: 100
  concurrency: 8
"""

# Every event gets a unique messageId, as SDKs assign them: no uuid to make on the
# server, and no duplicate for the dedupe to skip.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{auth}"
local template = [[{body}]]
local requests_made = 0

request = function()
  requests_made = requests_made + 1
  local prefix = "{phase}-" .. requests_made .. "-"
  local n = 0
  local body = template:gsub("@MID@", function() n = n + 1; return prefix .. n end)
  return wrk.format(nil, nil, nil, body)
end

done = function(summary, latency, requests)
  io.write(string.format("WRK_RESULT %d %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_event(i: int) -> dict[str, Any]:
    """A typical web track call, about 400 bytes serialised."""
    return {
        "type": "track",
        "messageId": "@MID@",
        "event": "Product Viewed",
        "userId": f"user-{i % 5000}",
        "properties": {"product_id": f"sku-{i % 977}", "price": 19.99, "plan": "pro", "sent_ms": 0},
        "context": {
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "page": {"path": "/products/widget", "url": "https://shop.example/products/widget"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        },
        "timestamp": "2026-11-26T12:00:00.000Z",
    }


class Bench:
    def __init__(
        self,
        workdir: Path,
        seconds: float,
        connections: int,
        pythonpath: str | None = None,
        deliver: bool = True,
        store: str = ".streamctl/state.db",
        run_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.pythonpath = pythonpath
        self.deliver = deliver
        self.store = store
        self.run_args = run_args
        self.seconds = seconds
        self.connections = connections
        self.sink_port = free_port()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sink_url = f"http://127.0.0.1:{self.sink_port}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        project = self.workdir / "project"
        (project / "syncs").mkdir(parents=True)
        (project / "streamctl.yaml").write_text(
            PROJECT.format(
                store=self.store, port=self.port, key=WRITE_KEY, sink_port=self.sink_port
            )
        )
        if self.deliver:
            (project / "syncs" / "web-to-sink.yaml").write_text(SYNC)
        sink_js = self.workdir / "sink.js"
        sink_js.write_text(SINK_JS)
        self.processes.append(subprocess.Popen(["node", str(sink_js), str(self.sink_port)]))
        run = [sys.executable, "-m", "streamctl", "run", "--project", str(project), *self.run_args]
        env = {**os.environ, "PYTHONPATH": self.pythonpath} if self.pythonpath else None
        self.processes.append(subprocess.Popen(run, stderr=subprocess.PIPE, env=env))
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.processes[-1].poll() is None:
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    httpx.get(f"{self.sink_url}/count")
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        stderr = self.processes[-1].stderr
        raise SystemExit(
            "streamctl run did not become ready: " + (stderr.read().decode() if stderr else "")
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    def server_cpu_seconds(self) -> float:
        """CPU time (user + system) the `streamctl run` process has used so far (Linux)."""
        fields = Path(f"/proc/{self.processes[-1].pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wrk(self, path: str, body: dict[str, Any]) -> tuple[float, int, int, int]:
        """Run wrk for `seconds`; returns (seconds, requests answered 2xx, non-2xx, socket errors)."""
        script = self.workdir / "post.lua"
        text = json.dumps(body).replace("]]", "] ]")
        script.write_text(
            WRK_SCRIPT.format(auth=AUTH, body=text, phase=path.strip("/").replace("/", "-"))
        )
        command = [
            "wrk", "-t1", f"-c{self.connections}", f"-d{self.seconds:g}s", "--latency",
            "-s", str(script), f"{self.url}{path}",
        ]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        found = re.search(r"WRK_RESULT (\d+) (\d+) (\d+) (\d+)", output)
        if found is None:
            raise SystemExit(f"unexpected wrk output:\n{output}")
        requests, duration_us, non_2xx, socket_errors = map(int, found.groups())
        return duration_us / 1e6, requests - non_2xx, non_2xx, socket_errors

    async def paced_latency(self, rate: float, seconds: float) -> list[float]:
        """One event per /v1/track request at `rate` requests/s; latencies in ms at the sink.

        A hand-written HTTP/1.1 keep-alive client on asyncio streams (about 30 us a
        request), so the pace holds: httpx would need more CPU than the server.
        """
        httpx.get(f"{self.sink_url}/reset")
        total = int(rate * seconds)
        connections = [await asyncio.open_connection("127.0.0.1", self.port) for _ in range(32)]
        idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for connection in connections:
            idle.put_nowait(connection)
        statuses: dict[int, int] = {}
        template = sample_event(0)

        async def send_one(i: int) -> None:
            reader, writer = await idle.get()
            body = {**template, "userId": f"user-{i}", "messageId": f"paced-{i}"}
            body["properties"] = {**template["properties"], "sent_ms": time.time() * 1000.0}
            payload = json.dumps(body).encode()
            head = (
                f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            writer.write(head.encode() + payload)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            status = int(status_line.split()[1])
            statuses[status] = statuses.get(status, 0) + 1
            idle.put_nowait((reader, writer))

        started = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(send_one(i)))
        await asyncio.gather(*tasks)
        lag = time.perf_counter() - started - seconds
        for _, writer in connections:
            writer.close()
        if statuses.keys() != {200}:
            print(f"  latency phase answers: {statuses}")
        if lag > 0.5:
            print(f"  the client fell {lag:.1f} s behind the pace: figures are not at {rate:g}/s")
        latencies: list[float] = []
        for _ in range(100):
            latencies = httpx.get(f"{self.sink_url}/latencies").json()["latencies"]
            if len(latencies) >= statuses.get(200, 0):
                break
            await asyncio.sleep(0.1)
        return sorted(latencies)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(fraction * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="length of each throughput phase"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s of the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--store", choices=("sqlite", "postgres"), default="sqlite",
        help="postgres: `streamctl run` on a PostgreSQL store (a pgserver one, or --postgres-url)",
    )  # fmt: skip
    parser.add_argument("--postgres-url", help="a PostgreSQL database to use (it is emptied)")
    parser.add_argument(
        "--baseline", help="another checkout to compare with (phases 1 and 2, alternating)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="pairs of runs with --baseline")
    args = parser.parse_args()
    for tool in ("wrk", "node"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed on PATH (apt-get install wrk / nodejs)")
    if args.baseline:
        return compare(args)
    print(
        f"load generator: wrk {args.connections} connections, 1 thread; paced asyncio client "
        f"for latency; {os.cpu_count()} cores; a fresh `streamctl run` and store per phase"
    )
    with fresh_instance(args) as bench:
        batch = {"batch": [sample_event(i) for i in range(100)]}
        seconds, ok, refused, errors = bench.wrk("/v1/batch", batch)
        print(
            f"/v1/batch (100 events a request): {ok * 100 / seconds:,.0f} events/s accepted "
            f"({ok / seconds:,.0f} requests/s; {refused} answered non-200, {errors} socket errors)"
        )
        report_drain(bench, ok * 100)
    with fresh_instance(args) as bench:
        seconds, ok, refused, errors = bench.wrk("/v1/track", sample_event(1))
        print(
            f"/v1/track (1 event a request): {ok / seconds:,.0f} requests/s accepted "
            f"({refused} answered non-200, {errors} socket errors)"
        )
        report_drain(bench, ok)
    with fresh_instance(args) as bench:
        latencies = asyncio.run(bench.paced_latency(args.rate, args.latency_seconds))
        print(
            f"end to end at {args.rate:,.0f} events/s ({len(latencies)} events, request sent -> "
            f"arrived at the sink): p50 {percentile(latencies, 0.5):.1f} ms, "
            f"p95 {percentile(latencies, 0.95):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms"
        )
    if POSTGRES is not None:
        POSTGRES.stop()


POSTGRES: Any = None  # the benchmark's own server, with --store postgres


def compare(args: argparse.Namespace) -> None:
    """Alternating rounds of the two throughput phases: baseline checkout vs this one."""
    here = str(Path(__file__).resolve().parent.parent)
    batch = {"batch": [sample_event(i) for i in range(100)]}
    phases = {"/v1/batch": (batch, 100), "/v1/track": (sample_event(1), 1)}
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    print(
        f"baseline {args.baseline} vs this checkout {here}: {args.rounds} rounds of {args.seconds:g} s"
    )
    for round_number in range(args.rounds):
        order = [("baseline", args.baseline), ("this", here)]
        for name, pythonpath in order if round_number % 2 == 0 else order[::-1]:
            for path, (body, events) in phases.items():
                with fresh_instance(args, pythonpath, deliver=False) as bench:
                    cpu_before = bench.server_cpu_seconds()
                    seconds, ok, refused, errors = bench.wrk(path, body)
                    cpu_used = bench.server_cpu_seconds() - cpu_before
                accepted = ok * events
                rates.setdefault((path, name), []).append(accepted / seconds)
                cpu.setdefault((path, name), []).append(cpu_used / max(accepted, 1) * 1e6)
                print(
                    f"  round {round_number + 1} {name:8} {path}: {accepted / seconds:,.0f} events/s, "
                    f"{cpu[(path, name)][-1]:.1f} CPU us/event ({refused} non-200, {errors} socket errors)"
                )
    for path in phases:
        for label, figures, unit in (("events/s", rates, ",.0f"), ("CPU us/event", cpu, ".1f")):
            ours, theirs = figures[(path, "this")], figures[(path, "baseline")]
            ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
            print(
                f"{path} {label}: baseline median {statistics.median(theirs):{unit}}, this median "
                f"{statistics.median(ours):{unit}}; ratio this / baseline median "
                f"{statistics.median(ratios):.3f} (from {min(ratios):.3f} to {max(ratios):.3f})"
            )


@contextlib.contextmanager
def fresh_instance(
    args: argparse.Namespace, pythonpath: str | None = None, *, deliver: bool = True
) -> Iterator[Bench]:
    global POSTGRES
    with tempfile.TemporaryDirectory(prefix="streamctl-ingest-bench-") as tmp:
        store = ".streamctl/state.db"
        if args.store == "postgres":
            if POSTGRES is None and not args.postgres_url:
                POSTGRES = start_postgres(Path(tempfile.mkdtemp(prefix="streamctl-ingest-pg-")))
            store = fresh_database(POSTGRES, args.postgres_url)
        bench = Bench(Path(tmp), args.seconds, args.connections, pythonpath, deliver, store)
        bench.start()
        try:
            yield bench
        finally:
            bench.stop()


def report_drain(bench: Bench, accepted: int) -> None:
    """How long delivery took, after the load stopped, to bring every accepted event to the sink."""
    started = time.monotonic()
    delivered = 0
    while time.monotonic() - started < 300:
        delivered = httpx.get(f"{bench.sink_url}/count").json()["events"]
        if delivered >= accepted:
            break
        time.sleep(0.2)
    print(
        f"  delivery: {delivered:,} of {accepted:,} accepted events at the sink "
        f"{time.monotonic() - started:.1f} s after the load stopped"
    )


if __name__ == "__main__":
    main()
