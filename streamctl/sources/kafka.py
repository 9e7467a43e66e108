"""Kafka topics as a source (`type: kafka`, docs/sources/kafka.md), run by `streamctl run`.

    sources = KafkaSources.start(project, ingest)   # one consumer task per kafka source
    ...
    await sources.stop()                           # SIGTERM: commit what is stored, leave

Each source is one member of its consumer group (`group`, default
`streamctl.PROJECT.SOURCE`): several `streamctl run` nodes with the same project share
the partitions, and Kafka moves a stopped node's partitions to the others. A poll
(at most `max_poll_records` messages) goes through the ingest path of the HTTP API:

1. each message becomes an event: `format: segment` parses and normalises it as
   `/v1/batch` does (`normalise`: call type, identity, timestamps, the 32 KB limit);
   `format: json` takes any JSON as the body of a `track` event, as webhook sources do
   (`webhook.body_event`, the same `event_name` setting). A message without a
   messageId gets `kafka:TOPIC/PARTITION@OFFSET`, so a message read twice is the same
   event, and the store's messageId dedupe records the second as a duplicate;
2. a message that is no event (not JSON, not an object, an invalid or oversized
   event, a tombstone) is recorded as rejected input with `TOPIC/PARTITION@OFFSET`
   and the reason (`streamctl errors` lists it), and skipped: it never blocks its
   partition;
3. the events are handed to the listener's ingest (`Ingest.submit`: the group
   committer's durable queue append, or the bus with `run --bus`), which returns
   once they are stored;
4. only then are the offsets committed (at least once: a process killed between
   3 and 4 reads the messages again, and dedupe makes that harmless).

Steps 3 and 4 of one poll run as a task while the next poll is read and parsed
(1 and 2): two polls in hand at most, and a poll is handed over only once the one
before it is stored and committed, so each partition's order and the commit order
hold. Measured (benchmarks/kafka_source.py against main, alternating rounds on the
loaded 2-core machine): no gain that stands out of the noise, `run` delivering at
1.03x of the one-poll-at-a-time code with its default worker processes (0.79-1.16)
and 0.70x and 1.21x in two runs with `--workers 0`: py-spy shows the listener,
where the source runs, using about a fifth of the CPU and the worker processes
(queue claim, pipeline, record in SQLite) the rest. The overlap stays: it takes
the broker's commit round trip and the parsing off the store's path for when the
workers keep up (more cores, PostgreSQL), at no cost measured here.

Backpressure: while the ingest refuses (the queue is full: `Overloaded`, the store
or the bus is unavailable) the source offers the same poll again until it is
taken; the poll read meanwhile waits, nothing more is read, and after a second the
partitions are paused and the consumer polled each second so the group keeps it as
a member; nothing is dropped. Memory per source is two polls of messages plus
aiokafka's fetch buffer (`fetch_max_bytes`).

Lag: every `LAG_EVERY` seconds each source asks the brokers for its partitions'
high watermarks (`end_offsets`); the lag of a partition is that minus the committed
offset (`streamctl.core.kafka.partition_lags`, which the bus workers use too). It
is exported in /metrics (`streamctl_kafka_source_lag`) and written to the store
(`Store.record_lag`), where `streamctl status` and `top`, other processes, read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from streamctl.core.errors import EventError, StoreError
from streamctl.core.events import Event
from streamctl.core.kafka import (
    client_security,
    group_timing,
    partition_lags,
    quiet_client_logs,
)
from streamctl.core.model import KafkaSourceConfig, Project, SourceConfig
from streamctl.core.rows import REJECTED_EXCERPT, PartitionLag, RejectedInput
from streamctl.core.timestamps import format_timestamp
from streamctl.monitoring import metrics
from streamctl.sources.normalise import MAX_MESSAGE_ID, MAX_REQUEST_BYTES, normalise
from streamctl.sources.webhook import body_event
from streamctl.store.queue import Overloaded

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
LAG_EVERY = 2.0  # seconds between lag measurements
RETRY_EVERY = 1.0  # seconds between offers of a refused poll, and between connection attempts
PAUSED_POLL_EVERY = 1.0  # seconds between polls of a paused consumer (a poll waits)
FETCH_MAX_BYTES = 16 * 1024 * 1024  # aiokafka's fetch buffer per consumer (its default: 50 MiB)


class Ingest(Protocol):
    """Where a kafka source hands what it read (`streamctl.server.Instance`)."""

    async def submit(self, source: str, events: list[Event]) -> None:
        """Store the events durably; raises Overloaded or StoreError when it cannot now."""

    async def record_rejected(self, rejected: Sequence[RejectedInput]) -> None:
        """Record input that is no event."""

    async def record_lag(self, source: str, lags: Sequence[PartitionLag]) -> None:
        """Record the source's consumer lag, for `status` and `top`."""


# -- messages into events ----------------------------------------------------------------


@dataclass
class Poll:
    """One poll's messages as events, rejected input, and the offsets to commit."""

    events: list[Event] = field(default_factory=list)
    rejected: list[RejectedInput] = field(default_factory=list)
    next_offsets: dict[Any, int] = field(default_factory=dict)  # TopicPartition -> offset


def read_poll(source: SourceConfig, polled: dict[Any, list[ConsumerRecord]]) -> Poll:
    """The events of a poll (`AIOKafkaConsumer.getmany`), and what was not an event."""
    poll = Poll()
    received_at = datetime.now(UTC)
    now = time.time()
    for partition, records in polled.items():
        for record in records:
            try:
                poll.events.append(message_event(source, record, received_at))
            except EventError as exc:
                poll.rejected.append(_rejected(source.name, record, str(exc), now))
        if records:
            poll.next_offsets[partition] = records[-1].offset + 1
    return poll


def message_event(source: SourceConfig, record: ConsumerRecord, received_at: datetime) -> Event:
    """One message as a normalised event; EventError naming what is wrong with it."""
    assert source.kafka is not None
    value = record.value
    if value is None:
        raise EventError("an empty message (a tombstone), not an event")
    if len(value) > MAX_REQUEST_BYTES:  # not even parsed: the 32 KB event limit is far off
        msg = f"the message is {len(value)} bytes; an event may be 32 KB at most"
        raise EventError(msg)
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise EventError(msg) from None
    if source.kafka.format == "json":
        event = body_event(source, body, kafka=_record_fields(record))
        if record.timestamp is not None and record.timestamp >= 0:  # the producer's time
            event["timestamp"] = format_timestamp(
                datetime.fromtimestamp(record.timestamp / 1000, UTC)
            )
    elif isinstance(body, dict):
        event = body
    else:
        msg = f"expected a JSON object (a Segment event), got {type(body).__name__}"
        raise EventError(msg)
    if event.get("messageId") in (None, ""):
        event["messageId"] = message_id(record.topic, record.partition, record.offset)
    return normalise(event, received_at=received_at, text_length=len(value))


def message_id(topic: str, partition: int, offset: int) -> str:
    """The messageId of a message that has none: the same each time it is read."""
    found = f"kafka:{topic}/{partition}@{offset}"
    if len(found) <= MAX_MESSAGE_ID:
        return found
    return "kafka:" + hashlib.sha256(found.encode()).hexdigest()


def _record_fields(record: ConsumerRecord) -> dict[str, Any]:
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": key,
    }


def _rejected(source: str, record: ConsumerRecord, reason: str, now: float) -> RejectedInput:
    excerpt = (record.value or b"")[: REJECTED_EXCERPT * 4].decode("utf-8", "replace")
    origin = f"{record.topic}/{record.partition}@{record.offset}"
    return RejectedInput(source, origin, reason, excerpt[:REJECTED_EXCERPT], now)


# -- consuming ---------------------------------------------------------------------------


class KafkaSource:
    """One kafka source's consumer: poll, hand to the ingest, commit; until stopped."""

    def __init__(self, source: SourceConfig, ingest: Ingest) -> None:
        assert source.kafka is not None
        self.source = source
        self.config: KafkaSourceConfig = source.kafka
        self.ingest = ingest
        self.stopping = asyncio.Event()
        self._committed: dict[Any, int] = {}  # TopicPartition -> the next offset to read
        self._lag_at = 0.0
        self._reported: set[tuple[str, int]] = set()  # partitions with a lag gauge

    def consumer(self) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer

        quiet_client_logs()
        config = self.config
        return AIOKafkaConsumer(
            *config.topics,
            bootstrap_servers=list(config.brokers),
            group_id=config.group,
            client_id=f"streamctl-{self.source.name}",
            enable_auto_commit=False,
            auto_offset_reset=config.start_offset,
            max_poll_records=config.max_poll_records,
            fetch_max_bytes=FETCH_MAX_BYTES,
            **group_timing(config.session_timeout),
            **client_security(config.security),
        )

    async def run(self) -> None:
        """Consume until `stopping` is set; a consumer that fails unexpectedly is logged
        and started afresh (its uncommitted messages are read again: dedupe)."""
        while not self.stopping.is_set():
            try:
                await self._consume()
            except Exception as exc:
                log.error("kafka source %r failed, starting again: %s: %s",
                          self.source.name, type(exc).__name__, exc)  # fmt: skip
                await self._wait(RETRY_EVERY)

    async def _consume(self) -> None:
        """Consume until `stopping` is set; then commit what is stored and leave the group.

        Two polls at most are in hand: one being stored and committed (`storing`, a
        task), and the next, read meanwhile (`waiting`). A poll is handed over only
        once the one before it is stored and committed, so the partitions' order and
        the commit order hold; while a poll waits, nothing more is read."""
        consumer = await self._started()
        if consumer is None:
            return
        storing: asyncio.Task[None] | None = None
        waiting: Poll | None = None
        try:
            while not self.stopping.is_set():
                if waiting is None:
                    polled = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                    if polled:
                        waiting = read_poll(self.source, polled)
                elif storing is not None:
                    await self._until_stored(consumer, storing)
                if storing is not None and storing.done():
                    storing.result()  # a failure of the ingest path: `run` starts afresh
                    storing = None
                if storing is None and waiting is not None:
                    storing = asyncio.create_task(self._take(consumer, waiting))
                    waiting = None
                if time.monotonic() - self._lag_at >= LAG_EVERY:
                    await self._report_lag(consumer)
        finally:
            if storing is not None:  # stopping: it finishes (stored, committed) or gives up
                await asyncio.wait({storing})
            with contextlib.suppress(Exception):
                await self._report_lag(consumer)
            await consumer.stop()  # leaves the group: its partitions move on at once

    async def _until_stored(self, consumer: AIOKafkaConsumer, storing: asyncio.Task[None]) -> None:
        """Wait while the poll before the waiting one is stored. Past a second of it (the
        ingest refuses) the partitions are paused and the consumer polled each second, so
        the group keeps this member and nothing more is fetched."""
        paused = False
        try:
            while not storing.done():
                done, _ = await asyncio.wait({storing}, timeout=PAUSED_POLL_EVERY)
                if not done:
                    paused = True
                    await self._poll_paused(consumer)
        finally:
            if paused:
                consumer.resume(*consumer.assignment())

    async def _started(self) -> AIOKafkaConsumer | None:
        """A started consumer, trying again while no broker answers (warned once)."""
        warned = False
        while not self.stopping.is_set():
            consumer = self.consumer()
            if self.config.topic_pattern is not None:
                consumer.subscribe(pattern=self.config.topic_pattern)
            try:
                await consumer.start()
                return consumer
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                if not warned:
                    log.warning("kafka source %r: cannot reach %s (%s: %s); trying again",
                                self.source.name, ",".join(self.config.brokers),
                                type(exc).__name__, exc)  # fmt: skip
                    warned = True
                await self._wait(RETRY_EVERY)
        return None

    async def _take(self, consumer: AIOKafkaConsumer, poll: Poll) -> None:
        """Record the poll's rejected input, store its events, then commit its offsets."""
        name = self.source.name
        metrics.record_received(name, len(poll.events) + len(poll.rejected))
        if poll.rejected:
            metrics.record_rejected(name, "invalid", len(poll.rejected))
            if not await self._until_taken(self.ingest.record_rejected, poll.rejected):
                return  # stopped first: nothing of the poll committed, read again on start
        if poll.events:
            started = time.monotonic()
            if not await self._until_taken(self.ingest.submit, name, poll.events):
                return  # stopped while refused: nothing stored, nothing committed
            metrics.record_accepted(name, len(poll.events), time.monotonic() - started)
        await self._commit(consumer, poll.next_offsets)

    async def _until_taken(self, hand: Any, *args: Any) -> bool:
        """`await hand(*args)`, offered again while the ingest refuses; False if stopped first.
        Meanwhile the consume loop reads nothing more (a poll waits) and keeps the
        partitions paused (`_until_stored`)."""
        refused = False
        while True:
            try:
                await hand(*args)
                if refused:
                    log.warning("kafka source %r resumed", self.source.name)
                return True
            except (Overloaded, StoreError) as exc:
                wait = exc.retry_after if isinstance(exc, Overloaded) else RETRY_EVERY
                if not refused:
                    log.warning("kafka source %r paused: %s", self.source.name, exc)
                refused = True
            await self._wait(wait)
            if self.stopping.is_set():
                return False

    @staticmethod
    async def _poll_paused(consumer: AIOKafkaConsumer) -> None:
        """Poll with every partition paused (those a rebalance just assigned too): the
        group keeps this member, and nothing more is read. Whatever the poll returns
        anyway is read again after the pause (seek), never dropped."""
        consumer.pause(*consumer.assignment())
        polled = await consumer.getmany(timeout_ms=0)
        for partition, records in polled.items():
            if records:
                consumer.seek(partition, records[0].offset)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[Any, int]) -> None:
        from aiokafka.errors import CommitFailedError, IllegalStateError

        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another member meanwhile (a rebalance): it reads
            # these messages again, and the store records them as duplicates.
            log.warning("kafka source %r: offsets not committed: %s", self.source.name, exc)
            return
        self._committed.update(offsets)

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        self._lag_at = time.monotonic()
        partitions = consumer.assignment()
        lags = await partition_lags(
            self.source.name, consumer, partitions, self._committed, self.config.start_offset
        )
        now_reported = {(g.topic, g.partition) for g in lags}
        metrics.set_partition_lags(
            self.source.name,
            [(g.topic, g.partition, g.lag) for g in lags],
            gone=self._reported - now_reported,
        )
        self._reported = now_reported
        with contextlib.suppress(StoreError):  # the next report writes it
            await self.ingest.record_lag(self.source.name, lags)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


@dataclass
class KafkaSources:
    """The consumers of a project's kafka sources, as `streamctl run` runs them."""

    sources: list[KafkaSource]
    tasks: list[asyncio.Task[None]]

    @classmethod
    def start(cls, project: Project, ingest: Ingest) -> KafkaSources:
        sources = [KafkaSource(s, ingest) for s in kafka_sources(project)]
        return cls(sources, [asyncio.create_task(s.run()) for s in sources])

    async def stop(self) -> None:
        """Finish each source's poll in hand (stored, committed) and leave the groups."""
        for source in self.sources:
            source.stopping.set()
        for task, source in zip(self.tasks, self.sources, strict=True):
            try:
                await task
            except Exception as exc:  # logged, not raised: the rest of run stops as well
                log.error("kafka source %r stopped: %s: %s", source.source.name,
                          type(exc).__name__, exc)  # fmt: skip


def kafka_sources(project: Project) -> Iterable[SourceConfig]:
    return (s for s in project.sources.values() if s.kafka is not None)
