"""Delivery behaviour (SPEC §5) against real HTTP servers on 127.0.0.1 and a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

import pytest

from streamctl.config.loader import load_project
from streamctl.core.rows import PendingDelivery
from streamctl.delivery.policy import AdaptiveRate, RetryPolicy
from streamctl.delivery.runtime import Runtime
from streamctl.store import SqliteStore
from tests.delivery_helpers import deliver, make_events, received_ns, rows, statuses, write_project
from tests.fakes.http import FakeServer, Received, Reply


def test_5xx_then_success_is_delivered_with_every_attempt_recorded(tmp_path):
    answers = iter([Reply(503, "busy"), Reply(502, "bad gateway")])
    with FakeServer(lambda req: next(answers, Reply(200, {"ok": True}))) as server:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        deliver(root, make_events(1))
        assert len(server.requests) == 3
    assert statuses(root, "orders") == {"delivered": 1}
    attempts = rows(root, "SELECT status, status_code, response FROM attempts ORDER BY id")
    assert [(a[0], a[1]) for a in attempts] == [("retry", 503), ("retry", 502), ("delivered", 200)]
    assert attempts[0][2] == "busy"
    assert rows(root, "SELECT attempts, status_code FROM deliveries") == [(3, 200)]


def test_429_with_retry_after_is_not_retried_early(tmp_path):
    arrivals: list[float] = []

    def answer(req: Received) -> Reply:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return Reply(429, {"error": "slow down"}, {"Retry-After": "1"})
        return Reply(200, {"ok": True})

    with FakeServer(answer) as server:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        deliver(root, make_events(1))
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 1.0  # the backoff alone would be ~0.05 s
    assert rows(root, "SELECT status, retry_after FROM attempts ORDER BY id") == [
        ("retry", 1.0),
        ("delivered", None),
    ]


def test_400_is_archived_at_once_with_the_response(tmp_path):
    with FakeServer(lambda req: Reply(400, {"error": "field n is invalid"})) as server:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        deliver(root, make_events(1))
        assert len(server.requests) == 1
    (status, attempts, code, response, error) = rows(
        root, "SELECT status, attempts, status_code, response, error FROM deliveries"
    )[0]
    assert (status, attempts, code) == ("archived", 1, 400)
    assert "field n is invalid" in response
    assert error == "HTTP 400"


def test_max_attempts_archives_with_the_last_response(tmp_path):
    with FakeServer(lambda req: Reply(500, "still broken")) as server:
        root = write_project(
            tmp_path,
            {"orders": {"destination": "api", "delivery": {"max_attempts": 3}}},
            {"api": server.url},
        )
        deliver(root, make_events(1))
        assert len(server.requests) == 3
    status, error, response = rows(root, "SELECT status, error, response FROM deliveries")[0]
    assert status == "archived"
    assert "max_attempts 3" in error
    assert response == "still broken"


def test_a_destination_down_for_a_while_then_back_gets_everything(tmp_path):
    up = threading.Event()
    threading.Timer(0.6, up.set).start()

    def answer(req: Received) -> Reply:
        return Reply(200, {"ok": True}) if up.is_set() else Reply(503, "down for maintenance")

    with FakeServer(answer) as server:
        root = write_project(
            tmp_path,
            {"orders": {"destination": "api", "delivery": {"batch_size": 5, "max_attempts": 50}}},
            {"api": server.url},
        )
        deliver(root, make_events(40))
        delivered = [n for req in server.requests if up.is_set() for n in received_ns([req.json()])]
    assert statuses(root, "orders") == {"delivered": 40}
    assert sorted(set(delivered)) == list(range(40))
    assert rows(root, "SELECT count(*) FROM attempts WHERE status = 'retry'")[0][0] > 0


def test_a_hanging_destination_does_not_delay_a_healthy_one(tmp_path):
    release = threading.Event()

    def hang(req: Received) -> Reply:
        release.wait(20)
        return Reply(200, {"ok": True})

    with FakeServer(hang) as slow, FakeServer() as fast:
        root = write_project(
            tmp_path,
            {
                "to-slow": {"destination": "slow", "delivery": {"concurrency": 2}},
                "to-fast": {"destination": "fast", "delivery": {"batch_size": 10}},
            },
            {"slow": slow.url, "fast": fast.url},
        )
        project = load_project(root)

        async def main() -> tuple[int, int]:
            store = SqliteStore.for_project(project)
            async with Runtime(project, store) as runtime:
                await runtime.submit("web", make_events(60))
                deadline = time.monotonic() + 30
                while runtime.waiting()["to-fast"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                # The healthy destination got everything while the other still hangs.
                fast_done = runtime.delivery_counts()["to-fast"]["delivered"]
                slow_done = runtime.delivery_counts()["to-slow"]["delivered"]
                release.set()
                await runtime.drain(30)
            store.close()
            return fast_done, slow_done

        fast_done, slow_done = asyncio.run(main())
    assert fast_done == 60
    assert slow_done == 0
    assert sorted(received_ns(fast.bodies())) == list(range(60))
    assert statuses(root, "to-slow") == {"delivered": 60}


def test_a_batch_with_one_bad_event_delivers_the_others(tmp_path):
    def answer(req: Received) -> Reply:
        body = req.json()
        if any(p.get("bad") for p in (body if isinstance(body, list) else [body])):
            return Reply(400, {"error": "bad event in batch"})
        return Reply(200, {"ok": True})

    events = make_events(10)
    events[6]["properties"]["bad"] = True
    with FakeServer(answer) as server:
        root = write_project(
            tmp_path,
            {"orders": {"destination": "api", "delivery": {"batch_size": 10}}},
            {"api": server.url},
        )
        deliver(root, events)
        good = [n for body in server.bodies() if not _has_bad(body) for n in received_ns([body])]
    assert sorted(good) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert statuses(root, "orders") == {"delivered": 9, "archived": 1}
    archived = rows(root, "SELECT message_id, response FROM deliveries WHERE status = 'archived'")
    assert archived[0][0] == "m-6"
    assert "bad event in batch" in archived[0][1]
    # The split itself is on record for `explain`.
    assert rows(root, "SELECT count(*) FROM attempts WHERE status = 'split'")[0][0] > 0


def _has_bad(body: object) -> bool:
    return any(p.get("bad") for p in (body if isinstance(body, list) else [body]))


def test_per_user_ordering_holds_later_events_while_an_earlier_one_retries(tmp_path):
    failures = Counter[int]()

    def answer(req: Received) -> Reply:
        n = req.json()["n"]
        if n == 0 and failures[n] < 2:
            failures[n] += 1
            return Reply(503, "try later")
        return Reply(200, {"ok": True})

    with FakeServer(answer) as server:
        root = write_project(
            tmp_path,
            {
                "orders": {
                    "destination": "api",
                    "delivery": {"ordering": "per_user", "concurrency": 4},
                }
            },
            {"api": server.url},
        )
        deliver(root, make_events(5, user="same-user"))
        order = [req.json()["n"] for req in server.requests]
    assert order == [0, 0, 0, 1, 2, 3, 4]
    assert statuses(root, "orders") == {"delivered": 5}


def test_without_per_user_ordering_other_events_go_ahead(tmp_path):
    calls = Counter[int]()

    def answer(req: Received) -> Reply:
        n = req.json()["n"]
        calls[n] += 1
        return Reply(503, "try later") if n == 0 and calls[n] == 1 else Reply(200, {"ok": True})

    with FakeServer(answer) as server:
        root = write_project(
            tmp_path,
            {"orders": {"destination": "api", "delivery": {"concurrency": 1}}},
            {"api": server.url},
        )
        deliver(root, make_events(3, user="same-user"))
        order = [req.json()["n"] for req in server.requests]
    assert order.index(1) < order.index(0, 1)  # 1 went before the retry of 0


def test_duplicate_message_ids_are_not_delivered_twice(tmp_path):
    with FakeServer() as server:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        events = make_events(3)
        deliver(root, [*events, dict(events[0])])  # a duplicate inside the batch
        deliver(root, make_events(4))  # m-0..m-2 again, and a new m-3
        assert sorted(received_ns(server.bodies())) == [0, 1, 2, 3]
    assert rows(root, "SELECT count(*) FROM events WHERE duplicate = 1")[0][0] == 4
    assert statuses(root, "orders") == {"delivered": 4}


def test_pending_deliveries_resume_after_a_restart(tmp_path):
    with FakeServer(lambda req: Reply(503, "down")) as server:
        root = write_project(
            tmp_path,
            {"orders": {"destination": "api", "delivery": {"max_attempts": 100}}},
            {"api": server.url},
        )
        project = load_project(root)

        async def first_run() -> None:
            store = SqliteStore.for_project(project)
            async with Runtime(project, store) as runtime:
                await runtime.submit("web", make_events(20))
                while len(server.requests) < 3:
                    await asyncio.sleep(0.01)
            store.close()

        asyncio.run(first_run())
        assert statuses(root, "orders").get("delivered", 0) == 0
        server.answer = lambda req: Reply(200, {"ok": True})
        deliver(root, [])  # a new start with nothing new: it resumes the 20
        assert sorted(set(received_ns(server.bodies()[-20:]))) == list(range(20))
    assert statuses(root, "orders") == {"delivered": 20}


def test_connection_errors_are_retried(tmp_path):
    with FakeServer() as server:
        url = server.url
    # The server is gone: connection refused on every attempt.
    root = write_project(
        tmp_path, {"orders": {"destination": "api", "delivery": {"max_attempts": 2}}}, {"api": url}
    )
    deliver(root, make_events(1))
    attempts = rows(root, "SELECT status, status_code, error FROM attempts ORDER BY id")
    assert [a[0] for a in attempts] == ["retry", "retry"]
    assert attempts[0][1] is None
    assert "connection error" in attempts[0][2]
    assert statuses(root, "orders") == {"archived": 1}


def test_retry_policy_never_waits_less_than_retry_after_nor_initial():
    policy = RetryPolicy(initial=0.5, max=4.0, max_attempts=5, max_age=60.0)
    for attempts in range(1, 8):
        wait = policy.next_attempt_at(attempts, now=100.0) - 100.0
        assert 0.5 <= wait <= 4.0
        assert policy.next_attempt_at(attempts, now=100.0, retry_after=30.0) >= 130.0
    assert policy.gives_up(5, created_at=0.0, next_at=1.0) is not None
    assert policy.gives_up(1, created_at=0.0, next_at=61.0) is not None
    assert policy.gives_up(1, created_at=0.0, next_at=10.0) is None


def test_backoff_is_full_jitter_under_a_doubling_ceiling():
    policy = RetryPolicy(initial=0.5, max=4.0, max_attempts=5, max_age=60.0)
    for attempts, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0), (5000, 4.0)):
        waits = [policy.backoff(attempts) for _ in range(400)]
        assert all(0.5 <= w <= ceiling for w in waits)
    third = [policy.backoff(3) for _ in range(400)]
    assert max(third) > 1.5 and len(set(third)) > 200  # spread over the range, not fixed


def test_adaptive_rate_halves_on_429_and_recovers_to_the_ceiling():
    rate = AdaptiveRate(100.0, burst=100)
    rate.throttled()
    assert rate.rate == 50.0
    for _ in range(20):
        rate.succeeded()
    assert rate.rate == 100.0


@pytest.mark.parametrize("code", [408, 423, 429, 500, 503])
def test_retryable_statuses(tmp_path, code):
    answers = iter([Reply(code, "again")])
    with FakeServer(lambda req: next(answers, Reply(200, {"ok": True}))) as server:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        deliver(root, make_events(1))
    assert statuses(root, "orders") == {"delivered": 1}


def test_max_age_archives_a_delivery_that_keeps_failing(tmp_path):
    with FakeServer(lambda req: Reply(503, "still down")) as server:
        root = write_project(
            tmp_path,
            {
                "orders": {
                    "destination": "api",
                    "delivery": {"max_age": "300ms", "max_attempts": 1000},
                }
            },
            {"api": server.url},
        )
        deliver(root, make_events(1))
    status, error, response = rows(root, "SELECT status, error, response FROM deliveries")[0]
    assert status == "archived"
    assert "max_age" in error
    assert response == "still down"


def test_the_processor_claims_from_the_ingest_queue_records_and_acks(tmp_path):
    with FakeServer() as server:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        project = load_project(root)

        async def main() -> int:
            store = SqliteStore.for_project(project)
            store.queue.append("web", make_events(25))
            async with Runtime(project, store) as runtime:
                runtime.process_queue(store.queue)
                assert await runtime.drain(30)
                depth = store.queue.depth()
            store.close()
            return depth

        assert asyncio.run(main()) == 0
        assert sorted(received_ns(server.bodies())) == list(range(25))
    assert rows(root, "SELECT count(*) FROM queue")[0][0] == 0
    assert statuses(root, "orders") == {"delivered": 25}


def test_an_offer_fills_a_lane_only_up_to_its_window_and_leaves_the_rest_to_the_store(tmp_path):
    async def main(url: str) -> None:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": url})
        project = load_project(root)
        store = SqliteStore.for_project(project)
        async with Runtime(project, store, lane_capacity=8) as runtime:
            assert await runtime.drain(5)  # the empty store read back: the lane is not spilled
            lane = runtime.engine.lanes["orders"]
            assert not lane.spilled
            now = time.time()
            offered = [
                PendingDelivery(i, "orders", "custom", f"m{i}", "u", "{}", now, 0, now)
                for i in range(1, 21)
            ]
            lane.offer(offered)
            assert (lane.size, lane.cursor, lane.spilled) == (8, 8, True)
        store.close()

    with FakeServer() as server:
        asyncio.run(main(server.url))


def test_a_lane_over_its_memory_window_reads_the_rest_back_from_the_store(tmp_path):
    with FakeServer() as server:
        root = write_project(
            tmp_path,
            {"orders": {"destination": "api", "delivery": {"batch_size": 3}}},
            {"api": server.url},
        )
        project = load_project(root)

        async def main() -> None:
            store = SqliteStore.for_project(project)
            async with Runtime(project, store, lane_capacity=8) as runtime:
                for start in range(0, 200, 40):
                    await runtime.submit("web", make_events(40, start=start), pace=False)
                assert await runtime.drain(30)
            store.close()

        asyncio.run(main())
        received = received_ns(server.bodies())
    assert sorted(received) == list(range(200))  # each exactly once
    assert statuses(root, "orders") == {"delivered": 200}


# -- the default retry policy: bounded by time, not by a small count -------------------------


def test_the_default_policy_keeps_retrying_through_an_hour_long_outage():
    from streamctl.core.model import DeliveryPolicy

    policy = RetryPolicy.of(DeliveryPolicy())
    assert policy.max_attempts is None
    assert policy.max_age == 4 * 3600.0
    clock, attempts = 0.0, 0
    while clock < 3600.0:  # a fake clock: every attempt in the outage fails
        attempts += 1
        next_at = policy.next_attempt_at(attempts, now=clock)
        assert next_at - clock <= 300.0  # the wait is capped at 5 minutes
        assert policy.gives_up(attempts, created_at=0.0, next_at=next_at) is None
        clock = next_at
    assert attempts > 10  # the old budget (max_attempts 10) archived it long before
    assert clock < 3600.0 + 300.0  # delivered within 5 minutes of the destination's return
    late = policy.next_attempt_at(attempts, now=4 * 3600.0)
    assert "max_age (4h)" in str(policy.gives_up(attempts, created_at=0.0, next_at=late))


def test_an_outage_longer_than_the_old_attempt_budget_ends_in_delivery(tmp_path):
    failures = 25  # two and a half times the old default of 10 attempts
    answered = Counter[str]()

    def answer(req: Received) -> Reply:
        answered["requests"] += 1
        if answered["requests"] <= failures:
            return Reply(503, "down for maintenance")
        return Reply(200, {"ok": True})

    with FakeServer(answer) as server:
        # The default policy, its durations scaled down: no max_attempts, max_age 4h.
        fast = {"backoff": {"initial": "5ms", "max": "20ms"}, "timeout": "10s"}
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        sync_file = root / "syncs" / "orders.yaml"
        sync = json.loads(sync_file.read_text())
        sync["delivery"] = fast  # not the helpers' max_attempts: the default policy's shape
        sync_file.write_text(json.dumps(sync))
        deliver(root, make_events(1))
    assert statuses(root, "orders") == {"delivered": 1}
    assert rows(root, "SELECT attempts, status_code FROM deliveries") == [(failures + 1, 200)]


def test_a_processing_failure_is_logged_and_retried_not_a_silent_stop(tmp_path, caplog):
    from streamctl.pipeline.process import Pipeline

    class FailsOnce(Pipeline):
        failed = False

        def process(self, *args, **kwargs):
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("a bug in one batch")
            return super().process(*args, **kwargs)

    with FakeServer() as server:
        root = write_project(tmp_path, {"orders": {"destination": "api"}}, {"api": server.url})
        project = load_project(root)

        async def main() -> None:
            with SqliteStore.for_project(project) as store:
                store.queue.append("web", make_events(5))
                runtime = Runtime(project, store)
                runtime.pipeline = FailsOnce(project, runtime.destinations)
                async with runtime:
                    runtime.process_queue(store.queue)
                    assert await runtime.drain(30)

        asyncio.run(main())
        assert sorted(received_ns(server.bodies())) == list(range(5))
    assert FailsOnce.failed
    assert "event processing failed" in caplog.text and "a bug in one batch" in caplog.text
    assert statuses(root, "orders") == {"delivered": 5}
