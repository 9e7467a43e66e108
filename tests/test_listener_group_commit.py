"""The group committer: concurrent requests share transactions; nobody hears back before commit."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streamctl.core.errors import StoreError
from streamctl.sources.group_commit import CommitLimits, GroupCommitter
from streamctl.store import SqliteStore
from streamctl.store.queue import Overloaded


class RecordingQueue:
    """Wraps the real SQLite queue and remembers each transaction (append_many call)."""

    def __init__(self, store: SqliteStore, fail: Exception | None = None) -> None:
        self.inner = store.queue
        self.fail = fail
        self.transactions: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def append_many(self, groups):
        self.release.wait(5)
        if self.fail is not None:
            raise self.fail
        self.inner.append_many(groups)
        self.transactions.append(sum(len(events) for _, events in groups))

    def append(self, source, events):  # pragma: no cover - append_many is preferred
        self.append_many([(source, events)])

    def depth(self) -> int:
        return self.inner.depth()

    @property
    def max_depth(self) -> int:
        return self.inner.max_depth


def events(n: int, prefix: str) -> list[dict]:
    return [{"type": "track", "userId": "u", "messageId": f"{prefix}-{i}"} for i in range(n)]


@pytest.fixture
def store(tmp_path):
    with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


def test_concurrent_requests_share_transactions_and_return_after_commit(store):
    queue = RecordingQueue(store)

    async def scenario():
        committer = GroupCommitter(queue)
        await committer.start()
        queue.release.clear()  # hold the first round so the others pile up behind it
        first = asyncio.create_task(committer.submit("web", events(1, "first")))
        await asyncio.sleep(0.05)
        rest = [
            asyncio.create_task(committer.submit("web", events(5, f"r{i}"))) for i in range(100)
        ]
        await asyncio.sleep(0.05)
        assert not first.done() and not any(task.done() for task in rest)  # not committed yet
        queue.release.set()
        await asyncio.gather(first, *rest)
        await committer.close()

    asyncio.run(scenario())
    assert sum(queue.transactions) == 501
    assert len(queue.transactions) <= 3  # 101 requests, a handful of transactions
    assert store.queue.depth() == 501


def test_a_failed_commit_fails_every_request_of_its_round(store):
    queue = RecordingQueue(store, fail=StoreError("disk full"))

    async def scenario():
        committer = GroupCommitter(queue)
        await committer.start()
        results = await asyncio.gather(
            *(committer.submit("web", events(2, f"f{i}")) for i in range(10)),
            return_exceptions=True,
        )
        await committer.close()
        return results, committer.last_error

    results, last_error = asyncio.run(scenario())
    assert all(isinstance(r, StoreError) for r in results)
    assert "disk full" in last_error


def test_past_the_pending_bound_submit_is_refused_not_queued(store):
    queue = RecordingQueue(store)

    async def scenario():
        committer = GroupCommitter(queue, CommitLimits(max_pending_events=10))
        await committer.start()
        queue.release.clear()
        held = asyncio.create_task(committer.submit("web", events(1, "held")))
        await asyncio.sleep(0.05)  # the writer is now blocked in its first round
        waiting = asyncio.create_task(committer.submit("web", events(8, "waiting")))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await committer.submit("web", events(5, "over"))
        queue.release.set()
        await asyncio.gather(held, waiting)
        await committer.close()

    asyncio.run(scenario())
    assert store.queue.depth() == 9


def test_a_round_too_big_for_the_queue_commits_the_requests_that_fit(store):
    store.queue.max_depth = 10
    queue = RecordingQueue(store)
    outcomes: dict[str, str] = {}

    async def submit(committer: GroupCommitter, name: str, count: int) -> None:
        try:
            await committer.submit("web", events(count, name))
            outcomes[name] = "committed"
        except Overloaded:
            outcomes[name] = "429"

    async def scenario():
        committer = GroupCommitter(queue)
        await committer.start()
        queue.release.clear()  # hold a first round so the next three share one
        held = asyncio.create_task(submit(committer, "held", 1))
        await asyncio.sleep(0.05)
        three = [
            asyncio.create_task(submit(committer, name, count))
            for name, count in (("six", 6), ("five", 5), ("three", 3))
        ]
        await asyncio.sleep(0.05)
        queue.release.set()
        await asyncio.gather(held, *three)
        await committer.close()

    asyncio.run(scenario())
    # 14 events do not fit in the 9 left: six and three (9) do, in order; five does not.
    assert outcomes == {
        "held": "committed",
        "six": "committed",
        "five": "429",
        "three": "committed",
    }
    assert queue.transactions == [1, 9]
    assert store.queue.depth() == 10


def test_close_commits_what_is_pending_then_refuses(store):
    queue = RecordingQueue(store)

    async def scenario():
        committer = GroupCommitter(queue)
        await committer.start()
        pending = [
            asyncio.create_task(committer.submit("web", events(3, f"c{i}"))) for i in range(5)
        ]
        await asyncio.sleep(0)
        await committer.close()
        await asyncio.gather(*pending)
        with pytest.raises(Overloaded):
            await committer.submit("web", events(1, "late"))

    asyncio.run(scenario())
    assert store.queue.depth() == 15
