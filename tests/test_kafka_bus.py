"""Ingest nodes and workers over Kafka: `streamctl run --bus` and `streamctl worker --bus`.

Real processes on 127.0.0.1: the suite's Tansu broker, the suite's PostgreSQL (the
workers' shared store), `python -m streamctl run --bus` as the ingest node, two
`python -m streamctl worker --bus` processes, and a fake webhook counting every
messageId it is sent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from typer.testing import CliRunner

from streamctl.bus.kafka import BusLocation
from streamctl.cli.main import app
from tests.fakes.sink import write_sink_project
from tests.listener_harness import ListenerProcess
from tests.services import start_tansu, stop
from tests.test_postgres_nodes import WRITE_KEY, post_batch, store_rows, wait_for
from tests.test_run_workers import post_concurrently

# Tansu completes a group's (re)balance after about its session timeout, whoever joins
# or leaves (docs/scale-out.md): 3 s instead of 10 keeps the tests' waits short.
QUICK_GROUP = "session_timeout=3"


def write_project(
    root: Path, store: str, sink_url: str, bus: dict[str, object] | None = None
) -> Path:
    return write_sink_project(root, store, sink_url, WRITE_KEY, bus)


@contextmanager
def worker(root: Path, bus: str | None, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`streamctl worker` on `bus` (None: the project's `bus:`)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streamctl", "worker", "--project", str(root), *extra]
        + (["--bus", bus] if bus else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def metrics_url(process: subprocess.Popen[str]) -> str:
    """The /metrics address a worker started with `--metrics-port 0` announces."""
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"worker metrics at (http://\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"the worker exited ({process.poll()}) without serving metrics")


def bus_lags(url: str, topic: str) -> dict[int, int]:
    """Partition -> the workers' lag on `topic`, from a worker's /metrics."""
    found = re.findall(
        rf'^streamctl_bus_lag{{partition="(\d+)",topic="{re.escape(topic)}"}} (\S+)$',
        httpx.get(url).text, re.M,
    )  # fmt: skip
    return {int(partition): int(float(lag)) for partition, lag in found}


def status_json(root: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["status", "--json", "--project", str(root)])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def recorded(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT message_id, count(*) FROM events WHERE duplicate = 0 GROUP BY message_id"
        ).fetchall()


def owners(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT DISTINCT owner FROM deliveries").fetchall()


def test_bus_urls_name_brokers_prefix_and_options() -> None:
    bus = BusLocation.parse("kafka://k1:9092,k2:9092/shop?timeout=2.5&idempotent=true")
    assert bus.brokers == ("k1:9092", "k2:9092")
    assert (bus.topic("web"), bus.group, bus.timeout, bus.idempotent) == (
        "shop.web", "shop.workers", 2.5, True,
    )  # fmt: skip
    assert bus.source_of("shop.web") == "web"


def test_an_ingest_node_and_two_workers_deliver_every_event_answered_200(
    tmp_path, kafka_broker, postgres_url, sink
):
    bus = f"kafka://{kafka_broker}/t{uuid.uuid4().hex[:8]}?{QUICK_GROUP}"
    root = write_project(tmp_path / "project", postgres_url, sink.url)
    with ListenerProcess(root, "--bus", bus) as ingest, worker(root, bus), worker(root, bus):
        batches = [[f"b{b}-e{e}" for e in range(25)] for b in range(40)]
        accepted = post_concurrently(ingest.url, batches)
        assert len(accepted) == 1000
        wait_for(lambda: set(accepted) <= set(sink.received), what="every event at the sink")

        # The workers measure their group's lag and write it to the store for `status`:
        # every partition of the topic, and what the group committed is every event.
        location = BusLocation.parse(bus)
        committed = "SELECT sum(committed) FROM source_lag WHERE source = 'bus:%s'"
        wait_for(lambda: store_rows(postgres_url, committed % location.group) == [(1000,)],
                 what="the bus lag recorded")  # fmt: skip
        lags = status_json(root)["bus_lag"]
        assert {(g["group"], g["topic"]) for g in lags} == {(location.group, location.topic("web"))}
        assert {g["lag"] for g in lags} == {0} and len(lags) == 4  # Tansu's four partitions
    rows = recorded(postgres_url)
    assert len(rows) == 1000 and {count for _, count in rows} == {1}  # recorded once each


@dataclass
class Answer:
    """One request of a load: when it was sent and answered, and the status."""

    ids: list[str]
    sent: float
    answered: float
    status: int


class Load:
    """Batches of `size` events posted one after another from a thread until `stop()`
    (or `most` batches); every answer is kept with its times."""

    def __init__(self, url: str, prefix: str, size: int = 10, most: int = 20_000) -> None:
        self.answers: list[Answer] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._post, args=(url, prefix, size, most))
        self._thread.start()

    def _post(self, url: str, prefix: str, size: int, most: int) -> None:
        for b in range(most):
            if self._stopping.is_set():
                return
            ids = [f"{prefix}{b}-e{e}" for e in range(size)]
            sent = time.monotonic()
            status = post_batch(url, ids)
            self.answers.append(Answer(ids, sent, time.monotonic(), status))

    def accepted(self) -> list[str]:
        return [m for answer in list(self.answers) if answer.status == 200 for m in answer.ids]

    def refused_since(self, moment: float) -> int:
        return sum(1 for a in list(self.answers) if a.sent >= moment and a.status != 200)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(60)


def test_the_broker_restarted_under_load_loses_nothing_answered_200(
    tmp_path, postgres_url, sink, object_store
):
    """Ingest refuses while the broker is away and accepts again when it is back; a worker
    started after the restart (the first one was killed meanwhile) delivers every event
    answered 200. Tansu stores on S3 here: with memory storage a restarted Tansu has
    forgotten its topics and acknowledges, then drops, what is produced to them
    (docs/scale-out.md)."""
    broker, address = start_tansu(object_store=object_store)
    port = int(address.rpartition(":")[2])
    bus = {"url": f"kafka://{address}/restart", "timeout": 1, "session_timeout": 3}  # bus:
    root = write_project(tmp_path / "project", postgres_url, sink.url, bus)
    try:
        with ListenerProcess(root) as ingest, worker(root, None) as first:
            load = Load(ingest.url, "r", size=20)
            try:
                wait_for(lambda: len(load.accepted()) >= 100, what="load accepted")
                stop(broker)  # SIGKILL
                away = time.monotonic()
                wait_for(lambda: load.refused_since(away) >= 2, what="ingest to refuse")
                first.kill()  # its polled, uncommitted messages are read again
                first.wait(10)
                back = time.monotonic()
                broker, _ = start_tansu(port=port, object_store=object_store)
                with worker(root, None):
                    accepted_before = len(load.accepted())
                    wait_for(
                        lambda: len(load.accepted()) >= accepted_before + 100,
                        what="ingest to accept again",
                    )
                    load.stop()
                    accepted = set(load.accepted())
                    wait_for(
                        lambda: accepted <= set(sink.received),
                        what="every event answered 200 delivered",
                    )
            finally:
                load.stop()
    finally:
        stop(broker)
    assert {a.status for a in load.answers} <= {200, 503, 429}
    while_away = [a for a in load.answers if away <= a.sent and a.answered <= back]
    assert while_away and {a.status for a in while_away} <= {503, 429}  # never 200
    rows = recorded(postgres_url)
    assert {m for m, _ in rows} >= accepted and {count for _, count in rows} == {1}


def test_a_worker_killed_under_load_loses_nothing_answered_200(
    tmp_path, kafka_broker, postgres_url, sink
):
    bus = f"kafka://{kafka_broker}/k{uuid.uuid4().hex[:8]}?{QUICK_GROUP}"
    root = write_project(tmp_path / "project", postgres_url + "?lease=2s", sink.url)
    sink.hold()  # the doomed worker's sends are under way when it dies
    with ListenerProcess(root, "--bus", bus) as ingest, worker(root, bus) as survivor:
        with worker(root, bus) as doomed:
            first = post_concurrently(
                ingest.url, [[f"a{b}-e{e}" for e in range(20)] for b in range(20)]
            )
            wait_for(lambda: len(sink.arrived) > 0, what="deliveries under way")
            # Users spread over the topic's partitions: both workers hold some.
            wait_for(lambda: len(owners(postgres_url)) == 2, what="both workers recording")
            load = Load(ingest.url, "w", size=20)  # goes on across the kill
            try:
                wait_for(lambda: len(load.accepted()) >= 100, what="load before the kill")
                doomed.kill()
                doomed.wait(10)
                at_kill = len(load.accepted())
                wait_for(lambda: len(load.accepted()) >= at_kill + 100, what="load after the kill")
            finally:
                load.stop()
        sink.release()
        accepted = set(first) | set(load.accepted())
        assert len(first) == 400
        wait_for(lambda: accepted <= set(sink.received), what="every event answered 200 delivered")
        assert survivor.poll() is None
    assert {a.status for a in load.answers} == {200}  # ingest does not need the workers
    rows = recorded(postgres_url)
    assert {m for m, _ in rows} == accepted and {count for _, count in rows} == {1}


def test_an_ingest_node_killed_under_load_loses_nothing_answered_200(
    tmp_path, kafka_broker, postgres_url, sink
):
    bus = f"kafka://{kafka_broker}/i{uuid.uuid4().hex[:8]}?{QUICK_GROUP}"
    root = write_project(tmp_path / "project", postgres_url, sink.url)
    accepted: list[str] = []
    with worker(root, bus):
        with ListenerProcess(root, "--bus", bus) as ingest:

            def load() -> None:
                for b in range(10_000):
                    ids = [f"n{b}-e{e}" for e in range(20)]
                    try:
                        if post_batch(ingest.url, ids) == 200:
                            accepted.extend(ids)
                    except httpx.TransportError:
                        return  # the node is gone

            loader = threading.Thread(target=load)
            loader.start()
            wait_for(lambda: len(accepted) >= 400, what="some batches accepted")
            ingest.kill()
            loader.join(30)
        assert not loader.is_alive()
        wait_for(lambda: set(accepted) <= set(sink.received), what="every event answered 200")


def test_a_worker_waits_while_the_database_is_away_and_loses_nothing(
    tmp_path, kafka_broker, postgres, postgres_url, sink
):
    """The outage outlasts the worker's max poll interval (2 s here, 5 minutes by
    default): the group drops it meanwhile, and it rejoins and loses nothing."""
    bus = f"kafka://{kafka_broker}/d{uuid.uuid4().hex[:8]}?{QUICK_GROUP}&max_poll_interval=2"
    root = write_project(tmp_path / "project", postgres_url, sink.url)
    topic = BusLocation.parse(bus).topic("web")
    with (
        ListenerProcess(root, "--bus", bus) as ingest,
        worker(root, bus, "--metrics-port", "0") as consumer,
    ):
        metrics = metrics_url(consumer)
        assert post_batch(ingest.url, ["before-1"]) == 200
        wait_for(lambda: "before-1" in sink.received, what="the first event delivered")
        postgres.stop()
        try:
            # One event a request: Tansu's high watermark is right after each (see
            # docs/scale-out.md), so the lag the worker measures is exact.
            during = [f"during-{i}" for i in range(20)]
            for message_id in during:  # an ingest node needs no database
                assert post_batch(ingest.url, [message_id]) == 200
            # The worker polled them and waits for the store; its lag shows them.
            wait_for(lambda: sum(bus_lags(metrics, topic).values()) == 20, what="lag of 20")
            away_until = time.monotonic() + 5  # past the max poll interval, twice over
            while time.monotonic() < away_until:  # ingest goes on meanwhile
                during.append(f"during-{len(during)}")
                assert post_batch(ingest.url, [during[-1]]) == 200
        finally:
            postgres.start()
        wait_for(lambda: set(during) <= set(sink.received), what="every event delivered")
        wait_for(lambda: set(bus_lags(metrics, topic).values()) == {0}, what="no lag")
        assert consumer.poll() is None  # it waited; it did not exit
    rows = recorded(postgres_url)
    assert len(rows) == 1 + len(during) and {count for _, count in rows} == {1}
