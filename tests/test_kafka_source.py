"""Kafka topics as a source (`type: kafka`): `streamctl run` reads them into the file
destination.

Real parts only: the suite's Tansu broker (tests/services.py), `python -m streamctl run`
as a child process, aiokafka producing the messages, the file destination's NDJSON and
the project's SQLite store read afterwards, and the CLI (`errors`, `status --json`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from streamctl.bus.kafka import BusLocation
from streamctl.cli.main import app
from streamctl.config.loader import check_project
from streamctl.core.kafka import client_security, message_key
from streamctl.core.model import KafkaSourceConfig, SourceConfig
from streamctl.core.rows import PartitionLag, RejectedInput
from streamctl.destinations.kafka import KafkaDestination
from streamctl.sources.kafka import KafkaSource, message_id
from streamctl.store.db import SqliteStore
from streamctl.store.postgres.store import PostgresStore
from streamctl.store.queries import ErrorFilter
from streamctl.store.queue import Overloaded
from tests.listener_harness import ListenerProcess
from tests.services import start_tansu, stop
from tests.store_rows import store_rows

SYNC = """\
name: {source}-to-file
source: {source}
destination: out
event_types:
  - type: custom
    mappings:
      required:
        message_id: {{ field: messageId }}
        event: {{ field: event }}
        body: {{ field: properties.body }}
"""


def write_project(root: Path, sources: dict[str, dict[str, Any]]) -> Path:
    root.mkdir(parents=True)
    config = {
        "version": 1,
        "store": ".streamctl/state.db",
        "listen": {"host": "127.0.0.1", "port": 0},
        "sources": sources,
        "destinations": {"out": {"type": "file", "config": {"path": "out.ndjson"}}},
    }
    (root / "streamctl.yaml").write_text(json.dumps(config))  # JSON is YAML
    (root / "syncs").mkdir()
    for name in sources:
        (root / "syncs" / f"{name}.yaml").write_text(SYNC.format(source=name))
    return root


def kafka(broker: str, topic: str, **settings: Any) -> dict[str, Any]:
    """A kafka source; its group's session timeout 3 s, not 10: Tansu completes a join
    after about half of it and a rejoin after about twice it (docs/sources/kafka.md)."""
    return {"type": "kafka", "brokers": [broker], "topics": [topic], "format": "segment",
            "session_timeout": 3, **settings}  # fmt: skip


def produce(broker: str, topic: str, values: Sequence[bytes], *, batched: bool = False) -> None:
    """Produce to partition 0, in order. One message per request unless `batched`: Tansu
    answers ListOffsets (the high watermark, `latest`) with the last record batch's base
    offset + 1, wrong for a batch of several messages (docs/sources/kafka.md)."""

    async def send() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        try:
            if not batched:
                for value in values:
                    await producer.send_and_wait(topic, value, partition=0)
                return
            sent = [await producer.send(topic, value, partition=0) for value in values]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(send())


def track(n: int, **extra: Any) -> bytes:
    return orjson.dumps({"type": "track", "event": "Ordered", "userId": f"u{n}",
                         "messageId": f"m-{n}", **extra})  # fmt: skip


def delivered(root: Path) -> list[dict[str, Any]]:
    path = root / "out.ndjson"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lags(root: Path) -> list[tuple[Any, ...]]:
    """(source, topic, partition, high watermark, committed) of partition 0 (the one the
    tests produce to; Tansu creates topics with several)."""
    path = root / ".streamctl" / "state.db"
    if not path.exists():
        return []
    try:
        return store_rows(
            path,
            "SELECT source, topic, partition_id, end_offset, committed FROM source_lag"
            " WHERE partition_id = 0",
        )
    except sqlite3.OperationalError:  # not migrated yet
        return []


def cli(root: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--project", str(root)])
    assert result.exit_code == 0, result.output
    return result


def topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_segment_and_json_messages_are_delivered_and_bad_ones_recorded_and_skipped(
    tmp_path, kafka_broker
):
    orders, raw = topic(), topic()
    bad = [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"type": "track", "event": "No Identity"}),
        track(90, properties={"blob": "x" * 40_000}),
        track(91, timestamp="yesterday"),
    ]
    produce(kafka_broker, orders, [track(1), *bad, track(2), orjson.dumps(
        {"type": "identify", "userId": "u3", "traits": {"plan": "pro"}})])  # fmt: skip
    produce(kafka_broker, raw, [b'{"kind": "push", "n": 1}', b'"just text"', b"\xff"])
    root = write_project(tmp_path / f"p{uuid.uuid4().hex[:8]}", {
        "orders": kafka(kafka_broker, orders),
        "raw": {"type": "kafka", "brokers": [kafka_broker], "topic_pattern": f"^{raw}$",
                "format": "json", "event_name": {"field": "kind"}},
    })  # fmt: skip
    with ListenerProcess(root) as run:
        wait_for(lambda: len(delivered(root)) == 5, "5 events in the file")
        wait_for(lambda: sorted(r[4] for r in lags(root)) == [3, 8], "the offsets of both sources")
        metrics = httpx.get(f"{run.url}/metrics").text
    by_event = Counter(line.get("event") for line in delivered(root))
    assert by_event == {"Ordered": 2, None: 1, "push": 1, "raw": 1}
    ids = {line["message_id"] for line in delivered(root)}
    assert {"m-1", "m-2", message_id(orders, 0, 7), message_id(raw, 0, 0)} <= ids
    push = next(line for line in delivered(root) if line.get("event") == "push")
    assert push["body"] == {"kind": "push", "n": 1}

    rows = [json.loads(line) for line in cli(root, "errors", "--json").stdout.splitlines()]
    rejected = {row["origin"]: row["error"] for row in rows if row["status"] == "rejected"}
    assert set(rejected) == {f"{orders}/0@{n}" for n in range(1, 6)} | {f"{raw}/0@2"}
    assert "not valid JSON" in rejected[f"{orders}/0@1"]
    assert "expected a JSON object" in rejected[f"{orders}/0@2"]
    assert "needs a userId or an anonymousId" in rejected[f"{orders}/0@3"]
    assert "32" in rejected[f"{orders}/0@4"]
    assert "timestamp" in rejected[f"{orders}/0@5"]
    one = next(row for row in rows if row["origin"] == f"{orders}/0@1")
    shown = cli(root, "errors", "show", one["id"]).stdout
    assert f"{orders}/0@1" in shown and "{not json" in shown

    status = json.loads(cli(root, "status", "--json").stdout)
    first = [(g["source"], g["topic"], g["lag"], g["committed"])
             for g in status["kafka_lag"] if g["partition"] == 0]  # fmt: skip
    assert sorted(first) == sorted([("orders", orders, 0, 8), ("raw", raw, 0, 3)])
    assert {g["lag"] for g in status["kafka_lag"]} == {0}
    assert status["rejected_input"] == {"orders": 5, "raw": 1}
    assert (
        f'streamctl_kafka_source_lag{{partition="0",source="orders",topic="{orders}"}} 0.0'
        in metrics
    )
    assert "kafka source lag" in cli(root, "status").stdout


def test_every_message_is_delivered_once_across_restarts_and_a_reread_is_deduped(
    tmp_path, kafka_broker
):
    orders = topic()
    without_ids = [orjson.dumps({"type": "track", "event": "E", "anonymousId": f"a{n}"})
                   for n in range(10)]  # fmt: skip
    produce(kafka_broker, orders, without_ids)
    root = write_project(
        tmp_path / f"p{uuid.uuid4().hex[:8]}", {"orders": kafka(kafka_broker, orders)}
    )
    with ListenerProcess(root) as run:
        wait_for(lambda: len(delivered(root)) == 10, "the first 10")
        assert run.terminate(signal.SIGTERM) == 0
    produce(kafka_broker, orders, [track(n) for n in range(10, 30)])  # while it is down
    with ListenerProcess(root):
        wait_for(lambda: len(delivered(root)) == 30, "all 30")
        wait_for(lambda: [r[4] for r in lags(root)] == [30], "offsets committed")
    # Another group reads the topic from the start again: every message is the same
    # event (messageIds of those without one come from topic/partition/offset), and
    # the store's dedupe delivers none of them twice.
    config = (root / "streamctl.yaml").read_text()
    (root / "streamctl.yaml").write_text(config.replace('"format"', '"group": "again", "format"'))
    with ListenerProcess(root):
        wait_for(lambda: duplicates(root) == 30, "the 30 read again recorded as duplicates")
    counts = Counter(line["message_id"] for line in delivered(root))
    assert len(counts) == 30 and set(counts.values()) == {1}


def test_a_run_killed_mid_way_loses_nothing_and_records_each_event_once(tmp_path, kafka_broker):
    orders = topic()
    produce(kafka_broker, orders, [track(n) for n in range(3000)], batched=True)
    root = write_project(
        tmp_path / f"p{uuid.uuid4().hex[:8]}", {"orders": kafka(kafka_broker, orders)}
    )
    with ListenerProcess(root) as run:
        wait_for(lambda: len(delivered(root)) > 0, "the first deliveries")
        run.kill()  # kill -9: what was stored and not committed is read again
    with ListenerProcess(root):
        wait_for(lambda: len({line["message_id"] for line in delivered(root)}) == 3000, "all 3000")
    recorded = store_rows(
        root / ".streamctl" / "state.db",
        "SELECT count(*), count(DISTINCT message_id) FROM events WHERE duplicate = 0",
    )
    assert recorded == [(3000, 3000)]


def duplicates(root: Path) -> int:
    [(count,)] = store_rows(
        root / ".streamctl" / "state.db", "SELECT count(*) FROM events WHERE duplicate = 1"
    )
    return int(count)


def test_start_offset_latest_skips_what_was_there_before_the_group_began(tmp_path, kafka_broker):
    orders = topic()
    produce(kafka_broker, orders, [track(n) for n in range(5)])
    root = write_project(
        tmp_path / f"p{uuid.uuid4().hex[:8]}",
        {"orders": kafka(kafka_broker, orders, start_offset="latest")},
    )
    with ListenerProcess(root):
        wait_for(lambda: lags(root) == [("orders", orders, 0, 5, 5)], "the partition assigned")
        produce(kafka_broker, orders, [track(n) for n in range(5, 8)])
        wait_for(lambda: len(delivered(root)) == 3, "the 3 produced after the start")
        wait_for(lambda: [r[4] for r in lags(root)] == [8], "everything read")
    assert sorted(line["message_id"] for line in delivered(root)) == ["m-5", "m-6", "m-7"]


def test_config_errors_name_the_file_line_and_key_and_hide_the_password(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "streamctl.yaml").write_text(
        "sources:\n"
        "  orders:\n"
        "    type: kafka\n"
        "    brokers: [localhost]\n"
        "    format: segment\n"
        "  events:\n"
        "    type: kafka\n"
        "    brokers: ['k1:9092']\n"
        "    topic_pattern: '(['\n"
        "    format: json\n"
        "    security_protocol: SASL_SSL\n"
        "    sasl_plain_password: ${KAFKA_PASSWORD}\n"
        "  web:\n"
        "    type: http\n"
        "    write_keys: [web-key-123456]\n"
        "    topics: [orders]\n"
    )
    _, problems = check_project(root, env={"KAFKA_PASSWORD": "kafka-pw-secret"})
    errors = [str(p) for p in problems if p.severity == "error"]
    assert any("streamctl.yaml:3:" in e and "`topics: [...]` or" in e for e in errors), errors
    assert any("streamctl.yaml:4:" in e and "expected HOST:PORT" in e for e in errors), errors
    assert any("streamctl.yaml:9:" in e and "not a regular expression" in e for e in errors)
    assert any("streamctl.yaml:11:" in e and "needs sasl_plain_username" in e for e in errors)
    assert any("streamctl.yaml:16:" in e and "applies to kafka sources only" in e for e in errors)
    assert not any("kafka-pw-secret" in e for e in errors)


def test_a_sasl_source_refused_by_the_broker_keeps_trying_and_never_prints_the_password(
    tmp_path,
):
    """Tansu with --authentication refuses every login (it has no users): a SASL source
    cannot be tested end to end on it; what can: `run` starts, warns once without the
    password, and stops cleanly on SIGTERM."""
    process, broker = start_tansu("--authentication")
    try:
        root = write_project(tmp_path / "p", {"orders": kafka(
            broker, topic(), security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username="streamctl", sasl_plain_password="${KAFKA_PASSWORD}")})  # fmt: skip
        env = {"KAFKA_PASSWORD": "kafka-pw-secret"}
        with ListenerProcess(root, env=env) as run:
            wait_for(lambda: "kafka source 'orders'" in run.stderr, "the warning")
            assert run.terminate(signal.SIGTERM) == 0
        assert "kafka-pw-secret" not in run.stderr
    finally:
        stop(process)


@pytest.mark.parametrize("length", [20, 300])
def test_a_message_id_from_topic_partition_offset_fits_the_limit(length):
    found = message_id("t" * length, 3, 12)
    assert len(found) <= 100 and found == message_id("t" * length, 3, 12)
    assert found != message_id("t" * length, 3, 13)


class RefusingIngest:
    """The ingest path refusing the first `refusals` offers as a full queue does (429)."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.batches: list[list[dict[str, Any]]] = []
        self.lags: list[PartitionLag] = []

    async def submit(self, source: str, events: list[dict[str, Any]]) -> None:
        if self.refusals:
            self.refusals -= 1
            raise Overloaded(0.1)
        self.batches.append(events)

    async def record_rejected(self, rejected: Sequence[RejectedInput]) -> None:
        raise AssertionError(f"nothing is rejected here: {rejected}")

    async def record_lag(self, source: str, lags: Sequence[PartitionLag]) -> None:
        self.lags = [g for g in lags if g.partition == 0]


def test_a_refusing_ingest_pauses_the_source_which_drops_nothing_and_polls_a_bounded_batch(
    kafka_broker,
):
    orders = topic()
    produce(kafka_broker, orders, [track(n) for n in range(20)])
    config = KafkaSourceConfig(
        brokers=(kafka_broker,),
        group=f"g-{orders}",
        topics=(orders,),
        max_poll_records=5,
        session_timeout=3,
    )
    ingest = RefusingIngest(refusals=3)
    source = KafkaSource(SourceConfig("orders", "kafka", kafka=config), ingest)

    async def consume_all() -> None:
        task = asyncio.create_task(source.run())
        deadline = time.monotonic() + 60
        while sum(map(len, ingest.batches)) < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        source.stopping.set()  # as SIGTERM does: commit what is stored, leave
        await task

    asyncio.run(consume_all())
    taken = [event["messageId"] for batch in ingest.batches for event in batch]
    assert taken == [f"m-{n}" for n in range(20)]  # each once, in order, none dropped
    assert ingest.refusals == 0 and max(map(len, ingest.batches)) <= 5
    assert [(g.committed, g.end_offset) for g in ingest.lags] == [(20, 20)]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        opened: Any = SqliteStore.open(tmp_path / "state.db")
    else:
        opened = PostgresStore.open(request.getfixturevalue("postgres_url"))
    try:
        yield opened
    finally:
        opened.close()


def test_both_stores_keep_rejected_input_for_errors_and_the_lag_for_status(store):
    now = time.time()
    store.record_rejected([
        RejectedInput("orders", "orders/0@3", "not valid JSON", "{x", now - 100),
        RejectedInput("orders", "orders/1@9", "an empty message", "", now),
    ])  # fmt: skip
    listed = store.list_errors(ErrorFilter())
    assert [(r["id"], r["origin"], r["status"], r["stage"]) for r in listed] == [
        ("r2", "orders/1@9", "rejected", "source"), ("r1", "orders/0@3", "rejected", "source"),
    ]  # fmt: skip
    assert store.list_errors(ErrorFilter(syncs=("orders-to-file",))) == []
    assert store.list_errors(ErrorFilter(stages=("delivery",))) == []
    assert len(store.list_errors(ErrorFilter(statuses=("rejected",), since=now - 10))) == 1
    assert store.error_detail("r1")["excerpt"] == "{x"
    assert store.error_detail("r99") is None
    assert store.rejected_counts(now - 10) == {"orders": 1}

    store.record_lag("orders", [PartitionLag("orders", "o", 0, 10, 4, now),
                                PartitionLag("orders", "o", 1, 7, 7, now)])  # fmt: skip
    store.record_lag("orders", [PartitionLag("orders", "o", 1, 9, 8, now)])  # a rebalance
    store.record_lag("clicks", [PartitionLag("clicks", "c", 0, 5, 0, now)])
    assert [(g.source, g.partition, g.lag) for g in store.partition_lags()] == [
        ("clicks", 0, 5), ("orders", 1, 1),
    ]  # fmt: skip
    assert store.prune(50, now=now)["rejected_input"] == 1


def test_one_helper_turns_the_sasl_and_tls_keys_into_client_options_for_all_three_clients():
    assert client_security({}) == {"security_protocol": "PLAINTEXT"}
    sasl = client_security({"security_protocol": "SASL_PLAINTEXT", "sasl_plain_username": "u",
                            "sasl_plain_password": "p", "topics": ["ignored"]})  # fmt: skip
    assert sasl == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                    "sasl_plain_username": "u", "sasl_plain_password": "p"}  # fmt: skip
    tls = client_security({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"})
    assert isinstance(tls["ssl_context"], ssl.SSLContext)
    assert tls["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    # The bus, the source and the destination all build their options with it.
    bus = BusLocation.parse("kafka://k:9092/p?security_protocol=SSL")
    assert isinstance(bus.security["ssl_context"], ssl.SSLContext)
    options = KafkaDestination("d", {"bootstrap_servers": "k:9092", "topic": "t",
        "security_protocol": "SASL_PLAINTEXT", "sasl_plain_username": "u",
        "sasl_plain_password": "p"})._producer_options(5.0)  # fmt: skip
    assert options["sasl_plain_password"] == "p" and options["sasl_mechanism"] == "PLAIN"
    assert message_key({"userId": "u1", "anonymousId": "a"}) == b"u1"
    assert message_key({"anonymousId": "a"}) == b"a" and message_key({}) is None


def test_on_an_ingest_node_a_kafka_source_feeds_the_bus_and_a_worker_delivers(
    tmp_path, kafka_broker, postgres_url
):
    from tests.test_kafka_bus import worker

    orders, bus = topic(), f"kafka://{kafka_broker}/b{uuid.uuid4().hex[:8]}?session_timeout=3"
    produce(kafka_broker, orders, [track(n) for n in range(5)])
    root = write_project(
        tmp_path / f"p{uuid.uuid4().hex[:8]}", {"orders": kafka(kafka_broker, orders)}
    )
    config = json.loads((root / "streamctl.yaml").read_text())
    (root / "streamctl.yaml").write_text(json.dumps({**config, "store": postgres_url}))
    with ListenerProcess(root, "--bus", bus), worker(root, bus):
        wait_for(lambda: len(delivered(root)) == 5, "the 5 events through the bus")
    assert sorted(line["message_id"] for line in delivered(root)) == [f"m-{n}" for n in range(5)]
