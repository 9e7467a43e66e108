"""`streamctl worker --bus`: one member of the workers' consumer group on the Kafka bus.

    await consume(project, store, BusLocation.parse(url), stopping)

Polls the project's source topics (streamctl.bus.kafka: `PREFIX.SOURCE`) as the group
`PREFIX.workers`, runs each poll through `Runtime.submit` (dedupe on messageId,
pipeline, one store transaction), and commits the offsets only after that: a worker
killed in between leaves them uncommitted, the partition's next owner reads the
messages again, and dedupe records them as duplicates (at least once).
"""

from __future__ import annotations

import asyncio

import orjson

from streamctl.bus.kafka import BusLocation
from streamctl.core.model import Project
from streamctl.delivery.runtime import Runtime
from streamctl.store import Store

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
                    await runtime.submit(source, events)
                await consumer.commit()  # only now: what was recorded is not read again
    finally:
        await consumer.stop()
