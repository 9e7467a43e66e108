"""`kafka`: produce each event as one JSON message to a Kafka topic, keyed by user.

    destinations:
      events-topic:
        type: kafka
        config: { bootstrap_servers: "broker-1:9092,broker-2:9092", topic: events }

A message's value is the event's payload as the generic destinations shape it (the
`required` section's fields at the top level, `user` and `properties` nested), its key
the user: `userId`, else `anonymousId` (`key: user`, the default), so one user's events
land on one partition in order; `key: message_id` spreads them, `key: none` leaves the
choice to the partitioner. Every message carries a `message_id` header.

Built on aiokafka's `AIOKafkaProducer` (https://aiokafka.readthedocs.io/en/stable/api.html):
`acks="all"` (a message counts as delivered once every in-sync replica has it, the
Kafka producer config `acks`, https://kafka.apache.org/documentation/#producerconfigs_acks);
the idempotent producer (`enable.idempotence`, which needs the InitProducerId request)
is an option, off by default, because brokers that speak only the core protocol (Tansu,
which the tests run) refuse InitProducerId.

A batch is produced at once: every `send` is queued on the producer (which packs
them into one produce request per partition) and the batch waits for all the acks.
The default batch is 500: against a local Tansu broker (benchmarks/kafka_produce.py,
5 alternating rounds) it produced 40,000 events/s, a median 1.9x batches of 100 and
8x batches of 10; batch 1 managed 834 events/s.
Outcomes, per message:

- delivered: the broker acknowledged it (acks=all);
- retry: the broker is unreachable, a produce request fails or times out (the
  producer is closed and a fresh one bootstraps on the next attempt); Kafka's own
  retriable errors (leader elections, not enough replicas) land here too;
- failed (permanent): the message is larger than `max_message_bytes` (checked before
  sending, a `mapping_error`) or than what the broker takes (`MessageSizeTooLargeError`,
  `RecordListTooLargeError`), or the credentials or topic ACLs refuse it.

A message whose send timed out may still reach the broker later: delivery is at least
once, as with every destination; consumers dedupe on the `message_id` header.

aiokafka is imported on the first send: importing it takes about 110 ms (measured),
which every CLI command and replay worker would pay through the registry otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from streamctl.core.events import Event, user_key
from streamctl.core.kafka import (
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    client_security,
    quiet_client_logs,
)
from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    ConfigField,
    Destination,
    HttpRequest,
    ItemResult,
    ItemStatus,
    MappedEvent,
    Payload,
)
from streamctl.destinations.webhook import GENERIC_CUSTOM

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

# Kafka's default broker `message.max.bytes` (1 MiB + 12 bytes of record overhead).
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
# What a record adds to its key and value inside a produce request (headers, lengths,
# batch header): aiokafka counts it against `max_request_size`.
RECORD_OVERHEAD = 512
KEYS = ("user", "message_id", "none")


class KafkaDestination(Destination):
    catalog = CatalogEntry(
        type="kafka",
        description="Produce each event as a JSON message to a Kafka topic, keyed by user.",
        docs="https://aiokafka.readthedocs.io/en/stable/api.html#producer-class",
        config=(
            ConfigField(
                "bootstrap_servers",
                required=True,
                description="comma-separated host:port of one or more brokers",
            ),
            ConfigField("topic", required=True, description="the topic messages go to"),
            ConfigField(
                "key",
                default="user",
                choices=KEYS,
                description="message key: user (userId, else anonymousId) | message_id | none",
            ),
            ConfigField("client_id", default="streamctl", description="producer client id"),
            ConfigField(
                "idempotent",
                "boolean",
                default=False,
                description="the idempotent producer (needs a broker that grants InitProducerId)",
            ),
            ConfigField(
                "compression",
                default="none",
                choices=("none", "gzip"),
                description="compression of produce requests",
            ),
            ConfigField(
                "max_message_bytes",
                "integer",
                default=DEFAULT_MAX_MESSAGE_BYTES,
                description="largest key + value sent; larger messages are mapping errors",
            ),
            ConfigField(
                "security_protocol",
                default="PLAINTEXT",
                choices=SECURITY_PROTOCOLS,
                description="how to reach the brokers (SSL uses the system's CA certificates)",
            ),
            ConfigField(
                "sasl_mechanism",
                default="PLAIN",
                choices=SASL_MECHANISMS,
                description="SASL mechanism (SASL_* protocols)",
            ),
            ConfigField("sasl_plain_username", description="SASL user name"),
            ConfigField("sasl_plain_password", secret=True, description="SASL password"),
            ConfigField("ssl_cafile", description="CA certificates to verify the brokers with"),
            ConfigField("ssl_certfile", description="client certificate (mutual TLS)"),
            ConfigField("ssl_keyfile", description="the client certificate's private key"),
        ),
        event_types=(GENERIC_CUSTOM,),
        # benchmarks/kafka_produce.py, 5 alternating rounds against Tansu: batches of 500
        # produce at a median 1.9x the rate of batches of 100 (0.5-2.3x), 10: 0.2x.
        batch_size=500,
        max_batch_size=10_000,
        identity="none required; the key is userId, else anonymousId",
    )

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.topic = str(self.config["topic"])
        self.max_message_bytes = int(self.config["max_message_bytes"])
        self._producer: AIOKafkaProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Lock | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        key_rule = self.config.get("key") or "user"
        key = user_key(event) if key_rule == "user" else event.get("messageId")
        message_id = event.get("messageId")
        return {
            "key": str(key) if key and key_rule != "none" else None,
            "message_id": str(message_id) if message_id is not None else None,
            "value": super().build_payload(event_type, mapped, event),
        }

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        size = len(_key_bytes(payload)) + len(orjson.dumps(payload["value"]))
        if size > self.max_message_bytes:
            return (
                f"kafka: the message is {size} bytes (key and value); "
                f"max_message_bytes is {self.max_message_bytes}"
            )
        return None

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        """What `preview` shows: the messages, produced to kafka://SERVERS/TOPIC."""
        servers = str(self.config["bootstrap_servers"]).split(",")[0].strip()
        body: Any = payloads[0] if len(payloads) == 1 else list(payloads)
        return HttpRequest("PRODUCE", f"kafka://{servers}/{self.topic}", json=body)

    # -- sending -----------------------------------------------------------------

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        n = len(payloads)
        try:
            async with asyncio.timeout(timeout):
                producer = await self._started_producer(timeout)
        except Exception as exc:
            # aiokafka's start may raise anything (a KeyError on a refused SCRAM login);
            # none may stop delivery. Refused credentials are permanent, the rest is not.
            refused = isinstance(exc, _permanent_errors())
            status = ItemStatus.FAILED if refused else ItemStatus.RETRY
            return BatchResult.same(n, ItemResult(status, error=self._start_error(exc)))
        try:
            async with asyncio.timeout(timeout):
                queued = [await self._queue(producer, payload) for payload in payloads]
                outcomes = await asyncio.gather(*queued, return_exceptions=True)
        except TimeoutError:
            self._discard_producer()
            item = ItemResult(ItemStatus.RETRY, error=f"kafka: no acks within {timeout:g} s")
            return BatchResult.same(n, item)
        except Exception as exc:  # a send refused before it was queued, or a client fault
            if not isinstance(exc, _permanent_errors()):
                self._discard_producer()
            return BatchResult.same(n, _outcome(exc))
        return BatchResult(tuple(_outcome(outcome) for outcome in outcomes))

    def _start_error(self, exc: BaseException) -> str:
        servers = self.config["bootstrap_servers"]
        reason = "no answer in time" if isinstance(exc, TimeoutError) else _describe(exc)
        hint = ""
        if str(self.config["security_protocol"]).startswith("SASL"):
            hint = " (check sasl_plain_username, sasl_plain_password and sasl_mechanism)"
        elif self.config["idempotent"]:
            hint = " (the idempotent producer needs a broker that grants InitProducerId)"
        return f"kafka: cannot start a producer for {servers}: {reason}{hint}"

    async def _queue(self, producer: AIOKafkaProducer, payload: Payload) -> asyncio.Future[Any]:
        """The message handed to the producer; the future resolves on the broker's ack.

        A message over the producer's size limit raises here, before anything is queued:
        kept as that message's outcome, so the rest of the batch still goes."""
        message_id = payload.get("message_id")
        try:
            future: asyncio.Future[Any] = await producer.send(
                self.topic,
                value=orjson.dumps(payload["value"]),
                key=_key_bytes(payload) or None,
                headers=[("message_id", message_id.encode())] if message_id else None,
            )
        except _permanent_errors() as exc:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        return future

    async def _started_producer(self, timeout: float) -> AIOKafkaProducer:
        loop = asyncio.get_running_loop()
        if self._starting is None or self._loop is not loop:
            # First use, or the loop of a previous asyncio.run is gone with its producer.
            self._producer, self._loop, self._starting = None, loop, asyncio.Lock()
            self._stopping = set()
        async with self._starting:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                quiet_client_logs()
                producer = AIOKafkaProducer(**self._producer_options(timeout))
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # nothing is queued yet: returns at once
                    raise
                self._producer = producer
            return self._producer

    def _producer_options(self, timeout: float) -> dict[str, Any]:
        return {
            "bootstrap_servers": [
                s.strip() for s in str(self.config["bootstrap_servers"]).split(",")
            ],
            "client_id": str(self.config["client_id"]),
            "acks": "all",
            "enable_idempotence": bool(self.config["idempotent"]),
            "compression_type": None if self.config["compression"] == "none" else "gzip",
            "max_request_size": self.max_message_bytes + RECORD_OVERHEAD,
            # Queued messages expire after one delivery timeout, so a producer whose
            # broker is gone drains (and stops) within that time.
            "request_timeout_ms": max(1000, int(timeout * 1000)),
            **client_security(self.config),
        }

    def _discard_producer(self) -> None:
        """Drop the producer after a failure: the next batch bootstraps afresh.

        It stops in the background: stopping waits for its queued messages to be acked
        or to expire (one delivery timeout), which the batch that failed must not wait
        for. aclose waits for these stops."""
        producer, self._producer = self._producer, None
        if producer is not None:
            task = asyncio.get_running_loop().create_task(_stop_quietly(producer))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def aclose(self) -> None:
        if self._loop is not asyncio.get_running_loop():
            self._producer = None  # its loop is gone; nothing left to stop on this one
            return
        self._discard_producer()
        await asyncio.gather(*self._stopping)


def _key_bytes(payload: Payload) -> bytes:
    key = payload.get("key")
    return key.encode() if isinstance(key, str) else b""


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await producer.stop()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _outcome(outcome: object) -> ItemResult:
    if not isinstance(outcome, BaseException):
        return ItemResult(ItemStatus.DELIVERED)
    error = f"kafka: {_describe(outcome)}"
    if isinstance(outcome, _permanent_errors()):
        return ItemResult(ItemStatus.FAILED, error=error)
    return ItemResult(ItemStatus.RETRY, error=error)


def _errors() -> Any:
    import aiokafka.errors

    return aiokafka.errors


@functools.cache
def _permanent_errors() -> tuple[type[BaseException], ...]:
    """What no retry can fix: a message too large for the broker, refused credentials or ACLs."""
    errors = _errors()
    return (
        errors.MessageSizeTooLargeError,
        errors.RecordListTooLargeError,
        errors.RecordTooLargeError,
        errors.TopicAuthorizationFailedError,
        errors.ClusterAuthorizationFailedError,
        errors.SaslAuthenticationFailed,
    )
