"""CPU per request of httpx's default transport (httpcore) beside LeanTransport.

    .venv/bin/python benchmarks/transport.py                  # starts ../shared/bench/sink.js
    .venv/bin/python benchmarks/transport.py --url http://127.0.0.1:9870/ingest

The request is replay's: a POST of 100 mapped events (about 27 KB of JSON) to the
bench kit's Node sink on 127.0.0.1, 8 in flight, keep-alive. Each round measures,
in this process only (the sink is another process):
- `client`: `httpx.AsyncClient.request` over each transport (what destinations call);
- `transport`: `handle_async_request` alone, without httpx's client layer.
Figures on a shared machine are noisy: compare the two within a round.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson

from streamctl.delivery.transport import LeanTransport

KIT = Path(__file__).resolve().parents[2] / "shared" / "bench"
if not KIT.exists():
    KIT = Path("/work/shared/bench")
LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=128)  # default_client's
HEADERS = {"Content-Type": "application/json"}
TIMEOUT = httpx.Timeout(30.0).as_dict()
BODY = orjson.dumps(
    [
        {
            "user_id": f"u{i}",
            "event_name": "Order Completed",
            "order_id": f"o{i}",
            "revenue": 12.5,
            "currency": "USD",
            "email": "a@example.com",
            "label": f"Order Completed by u{i}",
            "properties": {"order_id": f"o{i}", "total": 12.5, "products": [{"sku": "x"}] * 3},
        }
        for i in range(100)
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running sink (default: start sink.js)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sink = None
    url = args.url
    if url is None:
        port = free_port()
        sink = subprocess.Popen(["node", str(KIT / "sink.js"), str(port)])
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/ingest"
    try:
        print(f"POST {len(BODY):,} bytes, {args.requests} requests, {args.concurrency} in flight")
        for _ in range(args.rounds):
            asyncio.run(one_round(url, args.requests, args.concurrency))
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait()


async def one_round(url: str, requests: int, concurrency: int) -> None:
    transports: list[tuple[str, Callable[[], httpx.AsyncBaseTransport]]] = [
        ("httpx default (httpcore)", lambda: httpx.AsyncHTTPTransport(limits=LIMITS)),
        ("LeanTransport", lambda: LeanTransport(limits=LIMITS)),
    ]
    for name, make in transports:
        async with httpx.AsyncClient(transport=make(), timeout=30.0) as client:

            async def via_client(client: httpx.AsyncClient = client) -> None:
                response = await client.request("POST", url, headers=HEADERS, content=BODY)
                response.raise_for_status()

            cpu = await cpu_per_request(via_client, requests, concurrency)
        transport = make()

        async def alone(transport: httpx.AsyncBaseTransport = transport) -> None:
            request = httpx.Request(
                "POST", url, headers=HEADERS, content=BODY, extensions={"timeout": TIMEOUT}
            )
            response = await transport.handle_async_request(request)
            await response.aread()

        bare = await cpu_per_request(alone, requests, concurrency)
        await transport.aclose()
        print(f"{name:26s} client {cpu:.3f} ms/request   transport alone {bare:.3f} ms/request")


async def cpu_per_request(
    send: Callable[[], Awaitable[None]], requests: int, concurrency: int
) -> float:
    """Milliseconds of this process's CPU per request, after a warm-up."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await send()

    await asyncio.gather(*(one() for _ in range(100)))
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(requests)))
    return (time.process_time() - started) / requests * 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"the sink did not start on port {port}")


if __name__ == "__main__":
    main()
