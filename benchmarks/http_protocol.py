"""What the listener's guarded HTTP protocol costs per request, in-process.

    python benchmarks/http_protocol.py [--requests 2000] [--rounds 15]
    python benchmarks/http_protocol.py --baseline /tmp/main/streamctl/sources/http_protocol.py

Each round opens `--requests` connections of streamctl's protocol class
(streamctl.sources.http_protocol) on a loop that is not running and hands each one
`/v1/track` request (headers and a Content-Length body, one read) to
`data_received`: the header limit's counting, the parser (httptools) and uvicorn's
request set-up, without the app or a socket. It prints the process CPU time per
request (the garbage collector off while timing). With `--baseline FILE` (another
version of http_protocol.py, say main's) the two alternate within each round, and
the median ratio (this / baseline) is printed with its range.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import statistics
import sys
import time
from types import ModuleType
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from streamctl.sources import http_protocol

BODY = b'{"userId":"u1","event":"Viewed","properties":{"plan":"pro"},"messageId":"m-1"}'
REQUEST = (
    b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic Zm9vOg==\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Never runs: the loop is not running while requests are handed over."""


class Transport:
    """What uvicorn's protocol asks of a transport, doing nothing."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_http_protocol", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def microseconds_per_request(
    module: ModuleType, loop: asyncio.AbstractEventLoop, requests: int
) -> float:
    cls = module.guarded_protocol(module.ConnectionLimits())
    config = uvicorn.Config(app=app, http=cls, lifespan="off", log_level="error")
    config.load()
    state = ServerState()
    protocols = []
    for _ in range(requests):
        protocol = cls(config=config, server_state=state, app_state={}, _loop=loop)
        protocol.connection_made(Transport())
        protocols.append(protocol)
    gc.collect()
    gc.disable()
    started = time.process_time()
    for protocol in protocols:
        protocol.data_received(REQUEST)
    elapsed = time.process_time() - started
    gc.enable()
    for protocol in protocols:
        protocol.connection_lost(None)
    for task in asyncio.all_tasks(loop):  # the app calls that were set up, never run
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0.01))
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", help="another http_protocol.py to compare with")
    args = parser.parse_args()
    versions = {"this": http_protocol}
    if args.baseline:
        versions["baseline"] = load(args.baseline)
    loop = asyncio.new_event_loop()
    figures: dict[str, list[float]] = {name: [] for name in versions}
    ratios = []
    for round_ in range(args.rounds):
        order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
        got = {
            name: microseconds_per_request(versions[name], loop, args.requests) for name in order
        }
        for name, value in got.items():
            figures[name].append(value)
        line = ", ".join(f"{name} {value:.1f} us" for name, value in got.items())
        print(f"round {round_ + 1}: {line} CPU per request")
        if args.baseline:
            ratios.append(got["this"] / got["baseline"])
    for name, values in figures.items():
        print(f"{name}: median {statistics.median(values):.1f} us CPU per request")
    if ratios:
        print(
            f"this / baseline: median {statistics.median(ratios):.3f}"
            f" ({min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
