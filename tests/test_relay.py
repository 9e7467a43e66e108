"""Workers' reports to the listener (streamctl.monitoring.relay) over a real socket pair:
nothing counted is lost while the listener does not read, the worker never waits,
feed records beyond the backlog are dropped and counted, acks reach the queue depth."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from streamctl.monitoring import metrics
from streamctl.monitoring.feed import FEED, TailFilter
from streamctl.monitoring.relay import (
    FEED_BACKLOG,
    ReportReceiver,
    WorkerRelay,
    report_channel,
)
from streamctl.store.db import SqliteStore


class Flag:
    def __init__(self, value: int) -> None:
        self.value = value


def counted(sync: str, status: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value(
            "streamctl_sync_events_total", {"sync": sync, "status": status}
        )
        or 0.0
    )


def test_a_listener_that_does_not_read_loses_no_count_and_never_holds_the_worker_up():
    async def scenario() -> None:
        listener_end, worker_end = report_channel()
        feed_on = Flag(1)
        relay = WorkerRelay(worker_end, feed_on)
        subscription = FEED.subscribe(TailFilter(), buffer=100_000)
        sent_everything = True
        started = time.monotonic()
        reports = 3 * FEED_BACKLOG  # far more than the socket holds
        for n in range(reports):
            relay.pending.record_outcomes("relay-sync", "delivered", 2)
            relay.pending.record_end_to_end("relay-sync", [0.01, 0.02])
            relay.pending.publish_outcome(sync="relay-sync", message_id=f"m{n}", status="delivered")
            sent_everything = relay.send() and sent_everything
        assert not sent_everything  # the socket filled up: the relay kept the rest
        assert time.monotonic() - started < 30  # and went on without waiting for a reader
        receiver = ReportReceiver(feed_on)
        receiver.attach(listener_end)
        deadline = time.monotonic() + 30
        while not relay.send() or counted("relay-sync", "delivered") < 2 * reports:
            assert time.monotonic() < deadline, counted("relay-sync", "delivered")
            await asyncio.sleep(0.01)
        relay.close()
        await asyncio.sleep(0.05)
        await receiver.close()
        assert counted("relay-sync", "delivered") == 2 * reports  # every count, once
        latency = metrics.REGISTRY.get_sample_value(
            "streamctl_delivery_latency_seconds_count", {"sync": "relay-sync"}
        )
        assert latency == 2 * reports
        records, dropped = 0, 0
        while not subscription._queue.empty() or subscription._dropped:
            record = await subscription.next()
            assert record is not None
            if record["kind"] == "dropped":
                dropped += record["count"]
            else:
                records += 1
        subscription.close()
        assert records + dropped == reports
        assert dropped > 0  # beyond the worker's backlog: dropped, and said so
        assert records >= FEED_BACKLOG

    asyncio.run(scenario())


def test_the_listeners_queue_depth_follows_what_the_workers_acknowledged(tmp_path: Path):
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        queue = store.queue
        queue.acked_elsewhere = True
        queue.append_many([("web", [{"messageId": f"m{n}"} for n in range(100)])])
        assert queue.depth() == 100

        async def scenario() -> None:
            listener_end, worker_end = report_channel()
            receiver = ReportReceiver(Flag(0), on_acked=queue.dropped)
            receiver.attach(listener_end)
            relay = WorkerRelay(worker_end, Flag(0))
            relay.acked(60)
            assert relay.send()
            deadline = time.monotonic() + 10
            while queue.depth() != 40:
                assert time.monotonic() < deadline, queue.depth()
                await asyncio.sleep(0.01)
            relay.close()
            await receiver.close()

        asyncio.run(scenario())
    finally:
        store.close()
