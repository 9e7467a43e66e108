"""`streamctl worker --bus`: one member of the workers' consumer group on the Kafka bus.

    await consume(project, store, BusLocation.parse(url), stopping)

Polls the project's source topics (streamctl.bus.kafka: `PREFIX.SOURCE`) as the group
`PREFIX.workers`, runs each poll through `Runtime.submit` (dedupe on messageId,
pipeline, one store transaction), and commits the offsets only after that: a worker
killed in between leaves them uncommitted, the partition's next owner reads the
messages again, and dedupe records them as duplicates (at least once). While the
store is away (PostgreSQL down or restarting) a worker waits and records the same poll
again, committing nothing meanwhile.

Lag: every `LAG_EVERY` seconds a worker measures the group's lag on every partition
of the bus topics (high watermark minus the group's committed offset), not only on
the partitions it holds, so a dead worker's partitions show their lag growing while
any worker runs. A worker has no HTTP listener (no /metrics): it writes the figures
to the store (`Store.record_lag`, rows named `bus:GROUP`), where `streamctl status`
and `top` read them as they read a kafka source's, and sets the gauge
`streamctl_bus_lag{topic, partition}`, served with the rest of the worker's
metrics at `streamctl worker --metrics-port PORT`. Workers write the same figures
(one upsert per partition), so the last to measure wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from streamctl.bus.kafka import BusLocation
from streamctl.core.errors import StoreError, StoreUnavailable
from streamctl.core.events import Event
from streamctl.core.kafka import group_timing, partition_lags
from streamctl.core.model import Project
from streamctl.core.rows import bus_lag_name
from streamctl.delivery.runtime import STORE_RETRY_MAX, STORE_RETRY_MIN, Runtime
from streamctl.monitoring import metrics
from streamctl.store import Store

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)

POLL_RECORDS = 5_000  # messages a worker takes per poll
POLL_TIMEOUT_MS = 200
LAG_EVERY = 2.0  # seconds between measurements of the group's lag
BUS_SOURCE_TYPES = ("http", "webhook", "kafka")  # the sources an ingest node produces to the bus


async def consume(
    project: Project, store: Store, bus: BusLocation, stopping: asyncio.Event
) -> None:
    """A worker: poll the project's source topics as one consumer group, process and record
    each poll, then commit its offsets; until `stopping` is set."""
    from aiokafka import AIOKafkaConsumer

    topics = [bus.topic(name) for name, s in project.sources.items() if s.type in BUS_SOURCE_TYPES]
    consumer = AIOKafkaConsumer(
        *topics,
        **bus.client_options(),
        group_id=bus.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=POLL_RECORDS,
        **group_timing(bus.session_timeout),
        max_poll_interval_ms=int(bus.max_poll_interval * 1000),
    )
    await consumer.start()
    lag = GroupLag(bus, store, topics)
    measuring = asyncio.create_task(lag.run(consumer, stopping))
    try:
        async with Runtime(project, store, retention=True) as runtime:
            while not stopping.is_set():
                polled = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                if not polled:
                    continue
                for partition, messages in polled.items():
                    source = bus.source_of(partition.topic)
                    events = [orjson.loads(m.value) for m in messages]
                    await record(runtime, source, events, stopping)
                await commit(consumer)  # only now: what was recorded is not read again
    finally:
        measuring.cancel()
        with contextlib.suppress(Exception):
            await lag.measure(consumer)  # the figures after the last commit
        await consumer.stop()


class GroupLag:
    """The workers' group lag on every partition of the bus topics: to the store and
    the `streamctl_bus_lag` gauge."""

    def __init__(self, bus: BusLocation, store: Store, topics: Sequence[str]) -> None:
        self.name = bus_lag_name(bus.group)
        self.store = store
        self.topics = topics
        self.reported: set[tuple[str, int]] = set()

    async def run(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        """Measure every LAG_EVERY seconds, beside the polls: while a poll waits for the
        store too, when the lag matters most."""
        while not stopping.is_set():
            try:
                await self.measure(consumer)
            except Exception as exc:  # a figure missed, not a worker stopped
                log.warning("the bus lag was not measured: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), LAG_EVERY)

    async def measure(self, consumer: AIOKafkaConsumer) -> None:
        lags = await partition_lags(self.name, consumer, self.partitions(consumer))
        if not lags:
            return  # no broker answered: the last figures stay, with their age
        now_reported = {(g.topic, g.partition) for g in lags}
        metrics.set_bus_lags([(g.topic, g.partition, g.lag) for g in lags],
                             gone=self.reported - now_reported)  # fmt: skip
        self.reported = now_reported
        with contextlib.suppress(StoreError):  # away: the next measurement writes it
            await asyncio.to_thread(self.store.record_lag, self.name, lags)

    def partitions(self, consumer: AIOKafkaConsumer) -> list[Any]:
        from aiokafka import TopicPartition

        return [
            TopicPartition(topic, number)
            for topic in self.topics
            for number in consumer.partitions_for_topic(topic) or ()
        ]


async def commit(consumer: AIOKafkaConsumer) -> None:
    """Commit what was polled. A worker that waited past `max_poll_interval` (the store
    away) has been dropped from the group meanwhile: its commit fails, the partitions'
    next owner (this worker, once it rejoins at its next poll, or another) reads the
    messages again, and dedupe records them as duplicates. Not a reason to stop."""
    from aiokafka.errors import CommitFailedError, IllegalStateError

    try:
        await consumer.commit()
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("the worker's offsets were not committed (its partitions moved): %s", exc)


async def record(
    runtime: Runtime, source: str, events: Sequence[Event], stopping: asyncio.Event
) -> None:
    """`runtime.submit` until the store has recorded the events: while it is unreachable
    or refuses writes, wait (doubling the pause) and try again. A submit that failed
    recorded nothing, and one that recorded and lost its answer is recorded again as
    duplicates (messageId dedupe). Stopping meanwhile raises: nothing is committed."""
    pause = STORE_RETRY_MIN
    while True:
        try:
            await runtime.submit(source, events)
            return
        except StoreError as exc:
            if stopping.is_set():
                raise
            if isinstance(exc, StoreUnavailable) and pause == STORE_RETRY_MIN:
                log.warning("the worker waits for the store: %s", exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, STORE_RETRY_MAX)
