"""A kafka source's throughput: events/s from a topic into the file destination.

    python benchmarks/kafka_source.py [--events N] [--rounds R] [--max-poll-records M]
                                      [--baseline DIR] [--workers N]

Starts Tansu (the test suite's broker, memory storage), produces N Segment events to
a fresh topic (one partition), then runs `streamctl run` with a `type: kafka` source
reading it into the `file` destination, and times two rates, each from its first
event on (the consumer group's join, seconds on Tansu, is left out): events stored
(taken from the topic into the ingest queue, `streamctl_events_accepted_total` of
`/metrics`) and events delivered (lines in the file). A third figure is the source
alone, in this process: polled, parsed and normalised, handed to an ingest that
takes everything at once (no store, no delivery). Each round
also replays the same events from an NDJSON file (`streamctl replay --json`, the same
sync, timed by its own report: start-up left out too) as the scale: rounds alternate which goes first, figures are medians, and the ratio
kafka / replay is taken within each round. Wall-clock rates on one shared machine.
`--baseline DIR` (a `git archive` of main, say) runs `streamctl run` of that checkout
too in each round, in alternating order, and prints its figures and the ratio of this
checkout's delivered rate to the baseline's within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamctl.core.model import KafkaSourceConfig, SourceConfig  # noqa: E402
from streamctl.sources.kafka import KafkaSource  # noqa: E402
from tests.listener_harness import FILE_SYNC, ListenerProcess  # noqa: E402
from tests.services import start_tansu, stop  # noqa: E402


def events(n: int) -> list[bytes]:
    return [
        orjson.dumps({"type": "track", "event": "Order Completed", "userId": f"u{i % 97}",
                      "messageId": f"m-{i}", "properties": {"order_id": f"o-{i}", "total": i}})
        for i in range(n)
    ]  # fmt: skip


def produce(broker: str, topic: str, values: list[bytes]) -> None:
    async def send() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send(topic, value, partition=0) for value in values]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(send())


def project(root: Path, source: dict[str, object]) -> Path:
    root.mkdir(parents=True)
    config = {
        "version": 1,
        "store": ".streamctl/state.db",
        "listen": {"host": "127.0.0.1", "port": 0},
        "sources": {"web": source},
        "destinations": {"local-file": {"type": "file", "config": {"path": "out.ndjson"}}},
    }
    (root / "streamctl.yaml").write_text(json.dumps(config))
    (root / "syncs").mkdir()
    (root / "syncs" / "web-to-file.yaml").write_text(FILE_SYNC)
    return root


def lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def accepted(url: str) -> int:
    """Events the kafka source stored (handed to the queue), from `run`'s /metrics."""
    text = httpx.get(f"{url}/metrics").text
    found = re.search(r'^streamctl_events_accepted_total\{source="web"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def kafka_round(
    broker: str,
    values: list[bytes],
    folder: Path,
    max_poll: int,
    code: Path = ROOT,
    workers: int | None = None,
) -> tuple[float, float]:
    """(events/s stored from the topic, events/s delivered into the file), each from its
    first event on, by `streamctl run` of the checkout `code`."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    produce(broker, topic, values)
    source = {"type": "kafka", "brokers": [broker], "topics": [topic], "format": "segment",
              "max_poll_records": max_poll}  # fmt: skip
    root = project(folder / topic, source)
    out = root / "out.ndjson"
    n = len(values)
    extra = () if workers is None else ("--workers", str(workers))
    with ListenerProcess(root, *extra, env={"PYTHONPATH": str(code)}) as run:
        deadline = time.monotonic() + 600
        while (first_stored := accepted(run.url)) == 0:
            assert time.monotonic() < deadline, "nothing consumed"
            time.sleep(0.01)
        began = time.perf_counter()
        stored_after = delivered_after = None
        first_delivered = began_delivering = None
        while stored_after is None or delivered_after is None:
            assert time.monotonic() < deadline, "not everything consumed and delivered"
            now = time.perf_counter()
            if stored_after is None and accepted(run.url) >= n:
                stored_after = now - began
            done = lines(out)
            if first_delivered is None and done:
                first_delivered, began_delivering = done, now
            if delivered_after is None and done >= n:
                delivered_after = now - (began_delivering or began)
            time.sleep(0.05)  # /metrics costs the process measured: not too often
    delivered_from = first_delivered or 0
    return (n - first_stored) / stored_after, (n - delivered_from) / delivered_after


class Discard:
    """An ingest that takes everything at once: the source's own cost, alone."""

    def __init__(self) -> None:
        self.taken = 0
        self.first: tuple[float, int] | None = None

    async def submit(self, source: str, events: list[dict[str, object]]) -> None:
        if self.first is None:
            self.first = (time.perf_counter(), len(events))
        self.taken += len(events)

    async def record_rejected(self, rejected: object) -> None: ...

    async def record_lag(self, source: str, lags: object) -> None: ...


def consume_round(broker: str, values: list[bytes], max_poll: int) -> float:
    """Events/s the source polls, parses and normalises, handed to `Discard`, in-process."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    produce(broker, topic, values)
    config = KafkaSourceConfig(brokers=(broker,), group=f"g-{topic}", topics=(topic,),
                               max_poll_records=max_poll)  # fmt: skip
    ingest = Discard()
    source = KafkaSource(SourceConfig("web", "kafka", kafka=config), ingest)

    async def consume() -> float:
        task = asyncio.create_task(source.run())
        while ingest.taken < len(values):
            await asyncio.sleep(0.01)
        ended = time.perf_counter()
        source.stopping.set()
        await task
        assert ingest.first is not None
        return (len(values) - ingest.first[1]) / (ended - ingest.first[0])

    return asyncio.run(consume())


def replay_round(values: list[bytes], folder: Path) -> float:
    root = project(
        folder / f"replay-{uuid.uuid4().hex[:8]}", {"type": "http", "write_keys": ["bench-key-1"]}
    )
    file = root / "events.ndjson"
    file.write_bytes(b"\n".join(values) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "streamctl", "replay", str(file), "--project", str(root), "--json"],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert lines(root / "out.ndjson") == len(values)
    (report,) = json.loads(done.stdout)
    return len(values) / report["seconds"]  # its own time: no start-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-poll-records", type=int, default=500)
    parser.add_argument("--baseline", type=Path, help="another checkout's `run` to compare with")
    parser.add_argument("--workers", type=int, help="`run --workers N` (default: run's own)")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(ROOT)  # `run` children import this checkout
    values = events(args.events)
    process, broker = start_tansu()
    figures: dict[str, list[float]] = {}

    def note(name: str, rate: float) -> None:
        figures.setdefault(name, []).append(rate)

    runs: list[tuple[str, Path | None]] = [("kafka source", ROOT), ("replay", None)]
    if args.baseline is not None:
        runs.append(("baseline kafka source", args.baseline.resolve()))
    try:
        with tempfile.TemporaryDirectory() as folder:
            for round_no in range(args.rounds):
                shift = round_no % len(runs)
                for name, code in runs[shift:] + runs[:shift]:  # each goes first in turn
                    if code is None:
                        note("replay -> file", replay_round(values, Path(folder)))
                        continue
                    stored, delivered = kafka_round(
                        broker, values, Path(folder), args.max_poll_records, code, args.workers
                    )
                    note(f"{name} stored", stored)
                    note(f"{name} -> file", delivered)
                note("source alone", consume_round(broker, values, args.max_poll_records))
                print(f"round {round_no + 1}: " + "; ".join(
                    f"{name} {rates[-1]:,.0f}" for name, rates in figures.items()
                ) + " events/s", flush=True)  # fmt: skip
    finally:
        stop(process)
    print(
        f"{args.events:,} events, max_poll_records {args.max_poll_records}, {args.rounds} rounds:"
    )
    for name, rates in figures.items():
        print(f"  {name + ':':32} median {statistics.median(rates):,.0f} events/s"
              f" ({min(rates):,.0f}-{max(rates):,.0f})")  # fmt: skip
    replay = figures["replay -> file"]
    ratios = {
        "kafka -> file / replay": [
            k / r for k, r in zip(figures["kafka source -> file"], replay, strict=True)
        ]
    }
    if args.baseline is not None:
        baseline = figures["baseline kafka source -> file"]
        ratios["baseline kafka -> file / replay"] = [
            b / r for b, r in zip(baseline, replay, strict=True)
        ]
        ratios["kafka -> file: this / baseline"] = [
            k / b for k, b in zip(figures["kafka source -> file"], baseline, strict=True)
        ]
    for name, values_ in ratios.items():
        print(f"  {name}: median {statistics.median(values_):.2f}"
              f" ({min(values_):.2f}-{max(values_):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
