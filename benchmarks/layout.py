"""`warehouse.layout_event` alone: CPU per event and payload size, this checkout beside another.

    python benchmarks/layout.py                                  # 20,000 events, 7 rounds
    python benchmarks/layout.py --baseline /tmp/main --events 50000

What the pipeline side of a `type: event` storage sync costs per event, before any
database: the bench kit's events (../shared/bench, `gen_events.py`), normalised as
the HTTP source does, laid out by `layout_event` (the storage destinations'
`build_payload`) in chunks of 5,000 kept until the chunk is done, with the cyclic
collector tuned as in a replay worker (`core.heap`), then (second column) each payload
encoded as the store keeps it (`orjson.dumps`).

`--baseline DIR`: another checkout's `streamctl/destinations/warehouse.py` (a `git
archive` of main, say), timed over the same events in alternating rounds (the order
flips each round), so the two are compared on the same machine in the same minutes.
Medians of the rounds' CPU time (`time.process_time`), in us an event; on a loaded
machine only the ratio in one run means anything.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KIT = Path(__file__).resolve().parents[2] / "shared" / "bench"
if not KIT.exists():
    KIT = Path("/work/shared/bench")

from streamctl.core.heap import tune_garbage_collector  # noqa: E402
from streamctl.sources.normalise import normalise  # noqa: E402

CHUNK = 5000  # events a replay worker decides (and keeps) at once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="another checkout to time beside")
    args = parser.parse_args()
    events = bench_events(args.events)
    tune_garbage_collector()  # as a replay worker runs
    versions = {"this": warehouse_of(ROOT, "warehouse_this")}
    if args.baseline is not None:
        versions[args.baseline.name] = warehouse_of(args.baseline.resolve(), "warehouse_base")
    layout: dict[str, list[float]] = {name: [] for name in versions}
    encoded: dict[str, list[float]] = {name: [] for name in versions}
    for n in range(args.rounds):
        order = list(versions) if n % 2 == 0 else list(reversed(versions))
        for name in order:
            lay = versions[name].layout_event
            layout[name].append(cpu_per_event(each, lay, events))
            encoded[name].append(cpu_per_event(encode_each, lay, events))
    print(f"{len(events):,} bench events, {args.rounds} alternating rounds, medians of CPU time")
    print(f"{'':24} {'layout us/ev':>12} {'+ JSON us/ev':>12} {'JSON bytes/ev':>13}")
    raw = sum(len(orjson.dumps(e)) for e in events) / len(events)
    for name, module in versions.items():
        size = sum(len(orjson.dumps(module.layout_event(e))) for e in events) / len(events)
        print(
            f"{name:24} {statistics.median(layout[name]) * 1e6:12.2f}"
            f" {statistics.median(encoded[name]) * 1e6:12.2f} {size:13.0f}"
            f"   rounds: {', '.join(f'{v * 1e6:.1f}' for v in layout[name])}"
        )
    print(f"{'(the event itself)':24} {'':12} {'':12} {raw:13.0f}")


def bench_events(count: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.ndjson"
        subprocess.run(
            [sys.executable, str(KIT / "gen_events.py"), str(count), str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return [normalise(orjson.loads(line)) for line in path.read_bytes().splitlines()]


def warehouse_of(checkout: Path, name: str) -> ModuleType:
    """A checkout's warehouse module, imported under `name` (its own imports resolve
    to this checkout's packages, which `layout_event` only takes types from)."""
    spec = importlib.util.spec_from_file_location(
        name, checkout / "streamctl" / "destinations" / "warehouse.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def each(lay: Callable[[Any], object], events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), CHUNK):  # kept per chunk, as a worker does
        [lay(event) for event in events[start : start + CHUNK]]


def encode_each(lay: Callable[[Any], object], events: list[dict[str, Any]]) -> None:
    dumps = orjson.dumps
    for start in range(0, len(events), CHUNK):
        [
            dumps(payload).decode()
            for payload in [lay(event) for event in events[start : start + CHUNK]]
        ]


def cpu_per_event(
    work: Callable[[Callable[[Any], object], list[dict[str, Any]]], None],
    lay: Callable[[Any], object],
    events: list[dict[str, Any]],
) -> float:
    started = time.process_time()
    work(lay, events)
    return (time.process_time() - started) / len(events)


if __name__ == "__main__":
    main()
