"""Kafka between ingest nodes and workers: `streamctl run --bus kafka://B1,B2/PREFIX`
and `streamctl worker --bus ...` (docs/scale-out.md).

    bus = BusLocation.parse("kafka://10.0.0.5:9092,10.0.0.6:9092/streamctl")
    producer = KafkaIngest(bus)                  # the listener's side
    await producer.start()
    await producer.publish("web", events)        # returns once every broker replica has them
    ...
    # a worker: streamctl.delivery.bus_worker.consume (pipeline, record, then commit)

An ingest node produces each accepted (normalised) event to the topic
`PREFIX.SOURCE`, keyed by userId, else anonymousId, so one user's events stay in one
partition, in order. `publish` returns only when the broker acknowledged every
message with acks=all: the listener's 200 means "on the brokers". A broker that does
not answer within `timeout` makes `publish` raise BusUnavailable (the listener
answers 503); past `max_in_flight` events waiting for acknowledgement it raises
Overloaded (429). A producer retry can write a message twice; the idempotent
producer (`idempotent: true`) prevents that where the broker supports it, and
the store's messageId dedupe makes the duplicate harmless where it does not.

Workers join one consumer group (`PREFIX.workers`), so Kafka shares the partitions
among them and moves a leaving or dead worker's partitions to the others. A worker
runs the pipeline on what it polled, records the outcomes in the shared store
(`Runtime.submit`: dedupe on messageId, one transaction), and only then commits the
offsets: a worker killed between the two leaves them uncommitted, the partition's
next owner reads the messages again, and dedupe records them as duplicates
(at least once, never delivered twice from the record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from streamctl.core.errors import StoreError, UsageError
from streamctl.core.events import Event
from streamctl.core.kafka import SECURITY_KEYS, client_security, message_key
from streamctl.core.model import DEFAULT_SESSION_TIMEOUT
from streamctl.store.queue import Overloaded

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds the listener waits for the brokers' acknowledgement
DEFAULT_MAX_POLL_INTERVAL = 300.0  # seconds: aiokafka's (and Kafka's) max.poll.interval.ms
DEFAULT_MAX_IN_FLIGHT = 200_000  # events produced and not yet acknowledged, at most
TOPIC_PART = re.compile(r"^[A-Za-z0-9._-]+$")


class BusUnavailable(StoreError):
    """The brokers did not acknowledge in time (down, unreachable, slow): the listener
    answers 503 and the client retries; nothing was answered 200."""


@dataclass(frozen=True)
class BusLocation:
    """Where the bus is: brokers, topic prefix, and client security options."""

    brokers: tuple[str, ...]
    prefix: str
    security: Mapping[str, Any] = field(default_factory=dict)  # aiokafka's keyword arguments
    idempotent: bool = False
    timeout: float = DEFAULT_TIMEOUT
    session_timeout: float = DEFAULT_SESSION_TIMEOUT  # the workers' consumer group
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL  # seconds a worker may take per poll

    @classmethod
    def parse(cls, url: str, options: Mapping[str, Any] | None = None) -> BusLocation:
        """`kafka://HOST:PORT[,HOST:PORT...]/PREFIX[?OPTION=VALUE&...]`; `options`: the
        same as a mapping (security_protocol, sasl_mechanism, sasl_plain_username,
        sasl_plain_password, ssl_cafile, idempotent, timeout, session_timeout,
        max_poll_interval)."""
        found = re.fullmatch(r"kafka://([^/]+)/([^/?#]+)(?:\?(.*))?", url.strip())
        if found is None:
            msg = f"bus {url!r}: expected kafka://HOST:PORT[,HOST:PORT...]/PREFIX"
            raise UsageError(msg)
        brokers = tuple(b.strip() for b in found.group(1).split(",") if b.strip())
        prefix = found.group(2)
        if not TOPIC_PART.match(prefix):
            msg = f"bus {url!r}: the topic prefix may hold letters, digits, '.', '_' and '-'"
            raise UsageError(msg)
        settings: dict[str, Any] = dict(parse_qsl(found.group(3) or ""))
        settings.update(options or {})
        idempotent = str(settings.pop("idempotent", False)).lower() in ("true", "1", "yes")
        timeout = float(settings.pop("timeout", DEFAULT_TIMEOUT))
        session_timeout = float(settings.pop("session_timeout", DEFAULT_SESSION_TIMEOUT))
        max_poll = float(settings.pop("max_poll_interval", DEFAULT_MAX_POLL_INTERVAL))
        security = _security(settings)
        return cls(brokers, prefix, security, idempotent, timeout, session_timeout, max_poll)

    @classmethod
    def chosen(cls, url: str | None, config: Mapping[str, Any] | None) -> BusLocation | None:
        """`--bus URL` if given, else `bus:` of streamctl.yaml, else None."""
        if url is not None:
            return cls.parse(url)
        if config is None:
            return None
        settings = dict(config)
        return cls.parse(str(settings.pop("url")), settings)

    def topic(self, source: str) -> str:
        return f"{self.prefix}.{source}"

    def source_of(self, topic: str) -> str:
        return topic.removeprefix(f"{self.prefix}.")

    @property
    def group(self) -> str:
        return f"{self.prefix}.workers"

    def client_options(self) -> dict[str, Any]:
        return {"bootstrap_servers": list(self.brokers), **self.security}


def _security(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(SECURITY_KEYS))
    if unknown:
        msg = f"bus: unknown option {unknown[0]!r}; known: idempotent, timeout, session_timeout, max_poll_interval, {', '.join(sorted(SECURITY_KEYS))}"
        raise UsageError(msg)
    return client_security(settings)


class KafkaIngest:
    """The listener's side of the bus: `publish` returns once the brokers have the events."""

    def __init__(self, bus: BusLocation, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.bus = bus
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._producer: Any = None

    async def start(self) -> None:
        """Connect; fails (BusUnavailable) when no broker answers within the timeout."""
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(
            **self.bus.client_options(),
            acks="all",
            enable_idempotence=self.bus.idempotent,
            linger_ms=2,
            max_batch_size=1 << 20,
            request_timeout_ms=int(self.bus.timeout * 1000),
        )
        try:
            await asyncio.wait_for(self._producer.start(), self.bus.timeout)
        except Exception as exc:
            await self.close()
            msg = f"no broker of {','.join(self.bus.brokers)} answered: {type(exc).__name__}: {exc}"
            raise BusUnavailable(msg) from exc

    def check_room(self, events: int = 1) -> None:
        if self._in_flight + events > self.max_in_flight:
            raise Overloaded(1.0)

    async def publish(self, source: str, events: Sequence[Event]) -> None:
        """Produce `events` to the source's topic and wait for acks=all of every one."""
        self.check_room(len(events))
        if self._producer is None:
            raise BusUnavailable("the bus is not connected")
        topic = self.bus.topic(source)
        dumps = orjson.dumps
        self._in_flight += len(events)
        try:
            async with asyncio.timeout(self.bus.timeout):
                sent = [
                    await self._producer.send(topic, dumps(event), key=message_key(event))
                    for event in events
                ]
                await asyncio.gather(*sent)
        except Exception as exc:
            msg = f"the brokers did not acknowledge: {type(exc).__name__}: {exc}"
            raise BusUnavailable(msg) from exc
        finally:
            self._in_flight -= len(events)

    async def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
