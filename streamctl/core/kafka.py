"""What every Kafka client of streamctl shares: the security settings and the message key.

    options = {"bootstrap_servers": brokers, **client_security(settings)}
    AIOKafkaConsumer(*topics, **options)          # the kafka source
    AIOKafkaProducer(**options, acks="all")       # the bus's ingest node, the kafka destination
    await producer.send(topic, value, key=message_key(event))
    lags = await partition_lags("orders", consumer, consumer.assignment())  # consumer lag

Three clients read Kafka settings from a user's YAML: the bus (`bus:`), the kafka
source (`type: kafka`) and the kafka destination. They take one naming of the
SASL/TLS keys, aiokafka's own keyword names (`SECURITY_KEYS`), turned into client
options here only, so a key means the same thing wherever it is written.

Without `security_protocol` a client speaks PLAINTEXT; `SSL` and `SASL_SSL` verify the
brokers against the system's CA certificates unless `ssl_cafile` names others, and
`ssl_certfile` / `ssl_keyfile` present a client certificate (mutual TLS).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from streamctl.core.events import Event, user_key
from streamctl.core.rows import PartitionLag

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SECURITY_KEYS = (
    "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
    "ssl_cafile", "ssl_certfile", "ssl_keyfile",
)  # fmt: skip
SECRET_SECURITY_KEYS = ("sasl_plain_password",)


def client_security(settings: Mapping[str, Any]) -> dict[str, Any]:
    """aiokafka's keyword arguments for the `SECURITY_KEYS` among `settings` (other keys
    are the caller's); empty or None values count as absent."""
    given = {k: settings[k] for k in SECURITY_KEYS if settings.get(k) not in (None, "")}
    protocol = str(given.get("security_protocol", "PLAINTEXT"))
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        options["sasl_mechanism"] = str(given.get("sasl_mechanism", "PLAIN"))
        options["sasl_plain_username"] = given.get("sasl_plain_username")
        options["sasl_plain_password"] = given.get("sasl_plain_password")
    if protocol.endswith("SSL") or any(k.startswith("ssl_") for k in given):
        context = ssl.create_default_context(cafile=given.get("ssl_cafile"))
        if "ssl_certfile" in given:
            context.load_cert_chain(given["ssl_certfile"], given.get("ssl_keyfile"))
        options["ssl_context"] = context
    return options


def group_timing(session_timeout: float) -> dict[str, int]:
    """A consumer's session timeout (seconds) as aiokafka's options, with the heartbeat
    a third of it at most (aiokafka's default 3 s, which must stay below it). The
    broker bounds it (Apache Kafka: group.min.session.timeout.ms, 6 s by default)."""
    session_ms = int(session_timeout * 1000)
    return {"session_timeout_ms": session_ms, "heartbeat_interval_ms": min(3000, session_ms // 3)}


def message_key(event: Event) -> bytes | None:
    """The partitioning key: the user (userId, else anonymousId), so one user's events
    land on one partition, in order; None for an event without either."""
    user = user_key(event)
    return user.encode() if user else None


def quiet_client_logs() -> None:
    """aiokafka logs every failed reconnect as an error (hundreds a minute while a broker
    is down); with no logging configured Python prints them all on stderr. A NullHandler
    keeps them off stderr; an application that configures logging still receives them.
    Callers report the failures themselves (an outcome's error, a source's warning)."""
    logging.getLogger("aiokafka").addHandler(_NULL_HANDLER)


_NULL_HANDLER = logging.NullHandler()
log = logging.getLogger(__name__)


async def partition_lags(
    name: str,
    consumer: AIOKafkaConsumer,
    partitions: Iterable[Any],
    committed: Mapping[Any, int] | None = None,
    start_offset: str = "earliest",
) -> list[PartitionLag]:
    """The consumer group's lag on each of `partitions` (TopicPartitions: those the
    consumer holds, or any of its topics'): high watermark minus committed offset
    (`committed`, this process's last commits, else the group's; a partition the
    group never committed counts from where it starts, `start_offset`: the oldest
    message or the end); rows named `name`. Empty while no broker answers."""
    ordered = sorted(partitions, key=lambda p: (p.topic, p.partition))
    if not ordered:
        return []
    try:
        ends = await consumer.end_offsets(ordered)
        done = {p: (committed or {}).get(p) or await consumer.committed(p) for p in ordered}
        never = [p for p, offset in done.items() if offset is None]
        if never and start_offset == "earliest":
            done.update(await consumer.beginning_offsets(never))
    except Exception as exc:  # a broker away: no figure this time, not a stop
        log.debug("%s: no lag measured: %s", name, exc)
        return []
    now = time.time()
    return [
        PartitionLag(name, p.topic, p.partition, ends.get(p, 0), _or(done[p], ends.get(p, 0)), now)
        for p in ordered
    ]


def _or(offset: int | None, default: int) -> int:
    return default if offset is None else offset
