"""`kafka` against a real Kafka-protocol broker (Tansu, started by tests/services.py).

Messages are read back with an aiokafka consumer: key, JSON value and headers as the
destination documents them, and every outcome (delivered, retry when the broker is
unreachable, failed for an oversize message) as the delivery engine records it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from streamctl.destinations.base import ItemStatus, MappedEvent
from streamctl.destinations.kafka import KafkaDestination
from tests.replay_helpers import outcomes, replay, track, write_project
from tests.services import free_port, start_tansu, stop
from tests.test_dest_examples_a import copy_example, example_events

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def new_topic() -> str:
    return f"events-{uuid.uuid4().hex[:8]}"


def destination(bootstrap: str, topic: str, **config) -> KafkaDestination:
    return KafkaDestination("topic", {"bootstrap_servers": bootstrap, "topic": topic, **config})


def payload(dest: KafkaDestination, event: dict, **required):
    mapped = MappedEvent({"event": event.get("event"), **required}, properties={"n": 1})
    return dest.build_payload("custom", mapped, event)


async def consume(bootstrap: str, topic: str, count: int, deadline: float = 15.0) -> list:
    """The first `count` messages of `topic` (all partitions), polling until a deadline."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    messages: list = []
    try:
        end = time.monotonic() + deadline
        while len(messages) < count and time.monotonic() < end:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                messages.extend(batch)
    finally:
        await consumer.stop()
    return messages


async def send(dest: KafkaDestination, payloads: list, timeout: float = 10.0):
    async with httpx.AsyncClient() as client:
        try:
            return await dest.send(client, "custom", payloads, timeout=timeout)
        finally:
            await dest.aclose()


def test_catalog_and_payload_keys():
    entry = KafkaDestination.catalog
    assert entry.secret_fields == frozenset({"sasl_plain_password"})
    dest = destination("127.0.0.1:9", "t")
    known = payload(dest, {"messageId": "m1", "userId": "u1", "anonymousId": "a1", "event": "E"})
    assert known == {
        "key": "u1",
        "message_id": "m1",
        "value": {"event": "E", "properties": {"n": 1}},
    }
    assert payload(dest, {"messageId": "m2", "anonymousId": "a2"})["key"] == "a2"
    assert payload(dest, {"messageId": "m3"})["key"] is None
    by_message = destination("127.0.0.1:9", "t", key="message_id")
    assert payload(by_message, {"messageId": "m4", "userId": "u"})["key"] == "m4"
    unkeyed = destination("127.0.0.1:9", "t", key="none")
    assert payload(unkeyed, {"messageId": "m5", "userId": "u"})["key"] is None
    request = dest.build_request("custom", [known])
    assert (request.method, request.url) == ("PRODUCE", "kafka://127.0.0.1:9/t")


def test_an_oversize_message_is_a_mapping_problem():
    dest = destination("127.0.0.1:9", "t", max_message_bytes=100)
    small = payload(dest, {"messageId": "m", "userId": "u"})
    large = payload(dest, {"messageId": "m", "userId": "u"}, blob="x" * 200)
    assert dest.check_payload("custom", small) is None
    problem = dest.check_payload("custom", large) or ""
    assert "max_message_bytes is 100" in problem


def test_messages_are_keyed_by_user_with_json_values_and_acked(kafka_broker):
    topic = new_topic()
    dest = destination(kafka_broker, topic)
    events = [
        {"messageId": f"m{n}", "userId": f"u{n % 2}", "event": "Order Completed"} for n in range(6)
    ]
    result = asyncio.run(send(dest, [payload(dest, e) for e in events]))
    assert [item.status for item in result.items] == [ItemStatus.DELIVERED] * 6
    messages = asyncio.run(consume(kafka_broker, topic, 6))
    by_id = {dict(m.headers)["message_id"].decode(): m for m in messages}
    assert sorted(by_id) == [f"m{n}" for n in range(6)]
    assert by_id["m3"].key == b"u1"
    assert orjson.loads(by_id["m3"].value) == {"event": "Order Completed", "properties": {"n": 1}}
    # One user's messages share a partition, in the order they were sent.
    for user in ("u0", "u1"):
        mine = [m for m in messages if m.key == user.encode()]
        assert len({m.partition for m in mine}) == 1
        ids = [dict(m.headers)["message_id"].decode() for m in sorted(mine, key=lambda m: m.offset)]
        assert ids == [f"m{n}" for n in range(6) if f"u{n % 2}" == user]


def test_a_message_over_the_producer_limit_fails_alone(kafka_broker):
    topic = new_topic()
    dest = destination(kafka_broker, topic, max_message_bytes=1000)
    good = payload(dest, {"messageId": "ok", "userId": "u"})
    huge = payload(dest, {"messageId": "big", "userId": "u"}, blob="x" * 5000)
    result = asyncio.run(send(dest, [good, huge]))
    assert result.items[0].status is ItemStatus.DELIVERED
    assert result.items[1].status is ItemStatus.FAILED
    assert "MessageSizeTooLarge" in (result.items[1].error or "")
    (message,) = asyncio.run(consume(kafka_broker, topic, 1))
    assert dict(message.headers)["message_id"] == b"ok"


def test_an_unreachable_broker_is_retried():
    dest = destination(f"127.0.0.1:{free_port()}", new_topic())
    result = asyncio.run(send(dest, [payload(dest, {"messageId": "m", "userId": "u"})]))
    (item,) = result.items
    assert item.status is ItemStatus.RETRY
    assert "kafka:" in (item.error or "")


def test_a_broker_lost_mid_session_is_retried_within_the_timeout():
    """A broker of its own, stopped after the first batch: the next batch waits at most
    its timeout, comes back RETRY, and closing does not hang on the lost messages."""
    process, bootstrap = start_tansu()
    dest = destination(bootstrap, new_topic())

    async def scenario():
        async with httpx.AsyncClient() as client:
            first = await dest.send(client, "custom", [payload(dest, {"messageId": "a"})], 2.0)
            stop(process)
            began = time.monotonic()
            second = await dest.send(client, "custom", [payload(dest, {"messageId": "b"})], 2.0)
            waited = time.monotonic() - began
            await dest.aclose()
            return first, second, waited

    try:
        first, second, waited = asyncio.run(scenario())
    finally:
        stop(process)
    assert first.items[0].status is ItemStatus.DELIVERED
    assert second.items[0].status is ItemStatus.RETRY
    assert "no acks within 2 s" in (second.items[0].error or "")
    assert waited < 10  # bounded by the timeout, not by aiokafka's own 40 s


def test_the_idempotent_producer_names_what_the_broker_must_grant(kafka_broker):
    dest = destination(kafka_broker, new_topic(), idempotent=True)
    (item,) = asyncio.run(send(dest, [payload(dest, {"messageId": "m"})])).items
    assert item.status is ItemStatus.RETRY
    assert "InitProducerId" in (item.error or "")


def test_a_refused_sasl_login_is_an_outcome_not_a_crash():
    """Tansu with --authentication and no users refuses every SCRAM login (aiokafka then
    raises a KeyError from its SCRAM code): the batch gets an outcome naming what to check."""
    process, bootstrap = start_tansu("--authentication")
    try:
        dest = destination(bootstrap, new_topic(), security_protocol="SASL_PLAINTEXT",
                           sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
                           sasl_plain_password="pw-secret")  # fmt: skip
        (item,) = asyncio.run(send(dest, [payload(dest, {"messageId": "m"})], timeout=5.0)).items
    finally:
        stop(process)
    assert item.status is ItemStatus.RETRY
    assert "check sasl_plain_username, sasl_plain_password and sasl_mechanism" in (item.error or "")
    assert "pw-secret" not in (item.error or "")


def test_the_producer_is_rebuilt_for_a_new_event_loop(kafka_broker):
    """`streamctl errors retry` and tests run asyncio.run more than once per destination."""
    topic = new_topic()
    dest = destination(kafka_broker, topic)

    async def send_open(message_id: str):
        async with httpx.AsyncClient() as client:
            return await dest.send(client, "custom", [payload(dest, {"messageId": message_id})])

    first = asyncio.run(send_open("one"))
    second = asyncio.run(send_open("two"))
    asyncio.run(dest.aclose())
    assert [first.items[0].status, second.items[0].status] == [ItemStatus.DELIVERED] * 2
    assert len(asyncio.run(consume(kafka_broker, topic, 2))) == 2


def test_replay_produces_every_event_and_records_the_outcomes(tmp_path, kafka_broker):
    topic = new_topic()
    events_file = write_project(
        tmp_path,
        f"""\
        events-topic:
          type: kafka
          config: {{ bootstrap_servers: "{kafka_broker}", topic: {topic}, max_message_bytes: 400 }}
        """,
        """\
        source: web
        destination: events-topic
        event_types:
          - type: custom
            mappings:
              required:
                event: { field: event }
                user_id: { field: userId }
                note: { field: properties.note }
              properties:
                total: { field: properties.total }
        delivery: { batch_size: 10, max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
        """,
        [
            *(track(n) for n in range(1, 5)),
            track(5, properties={"note": "x" * 500, "total": 1}),  # over max_message_bytes
            track(6, userId=None, anonymousId="anon-six"),
        ],
    )
    code, summary, stderr = replay(tmp_path, events_file)
    assert code == 1, stderr  # one mapping error
    assert summary["syncs"] == [{"sync": "sync", "delivered": 5, "mapping_error": 1}]
    messages = asyncio.run(consume(kafka_broker, topic, 5))
    keys = sorted(m.key.decode() for m in messages)
    assert keys == ["anon-six", "user-0001", "user-0002", "user-0003", "user-0004"]
    first = next(m for m in messages if m.key == b"user-0001")
    assert json.loads(first.value) == {
        "event": "Order Completed",
        "user_id": "user-0001",
        "properties": {"total": 11.5},
    }
    recorded = outcomes(tmp_path)
    assert recorded["msg-5"][0] == "mapping_error"
    assert "max_message_bytes" in (recorded["msg-5"][1] or "")
    assert {recorded[f"msg-{n}"][0] for n in (1, 2, 3, 4, 6)} == {"delivered"}


def test_example_project_replays_into_the_broker(tmp_path, kafka_broker, monkeypatch):
    topic = new_topic()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker)
    monkeypatch.setenv("KAFKA_TOPIC", topic)
    project = copy_example("kafka", tmp_path)
    events_file = example_events(tmp_path, 30)
    code, summary, stderr = replay(project, events_file)
    assert code == 0, stderr
    (counts,) = summary["syncs"]
    assert set(counts) <= {"sync", "delivered", "filtered"}
    messages = asyncio.run(consume(kafka_broker, topic, counts["delivered"]))
    assert len(messages) == counts["delivered"] > 0
    assert all(m.key for m in messages)
