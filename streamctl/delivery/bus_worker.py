"""`streamctl worker --bus`: one member of the workers' consumer group on the Kafka bus.

    await consume(project, store, BusLocation.parse(url), stopping)

Polls the project's source topics (streamctl.bus.kafka: `PREFIX.SOURCE`) as the group
`PREFIX.workers`, runs each poll through `Runtime.submit` (dedupe on messageId,
pipeline, one store transaction), and commits the offsets only after that: a worker
killed in between leaves them uncommitted, the partition's next owner reads the
messages again, and dedupe records them as duplicates (at least once). While the
store is away (PostgreSQL down or restarting) a worker waits and records the same poll
again, committing nothing meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import orjson

from streamctl.bus.kafka import BusLocation
from streamctl.core.errors import StoreError, StoreUnavailable
from streamctl.core.events import Event
from streamctl.core.model import Project
from streamctl.delivery.runtime import STORE_RETRY_MAX, STORE_RETRY_MIN, Runtime
from streamctl.store import Store

log = logging.getLogger(__name__)

POLL_RECORDS = 5_000  # messages a worker takes per poll
POLL_TIMEOUT_MS = 200
BUS_SOURCE_TYPES = ("http", "webhook", "kafka")  # the sources an ingest node produces to the bus


async def consume(
    project: Project, store: Store, bus: BusLocation, stopping: asyncio.Event
) -> None:
    """A worker: poll the project's source topics as one consumer group, process and record
    each poll, then commit its offsets; until `stopping` is set."""
    from aiokafka import AIOKafkaConsumer

    topics = [
        bus.topic(name) for name, s in project.sources.items() if s.type in BUS_SOURCE_TYPES
    ]
    consumer = AIOKafkaConsumer(
        *topics,
        **bus.client_options(),
        group_id=bus.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=POLL_RECORDS,
    )
    await consumer.start()
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
                await consumer.commit()  # only now: what was recorded is not read again
    finally:
        await consumer.stop()


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
