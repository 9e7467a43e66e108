"""Alert rules: values, transitions, state in SQLite, and the scenario "a destination fails
for a while, then recovers" against real receivers on 127.0.0.1 for every channel type."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamctl.core.model import (
    AlertChannel,
    AlertRule,
    AlertsConfig,
    Project,
    SyncConfig,
)
from streamctl.monitoring.alerts import (
    AlertEvaluator,
    NotifyPolicy,
    is_firing,
    measure,
    next_state,
)
from streamctl.store.alert_state import AlertStateStore
from streamctl.store.postgres.store import migrate_url
from tests.fakes.http import FakeServer, Reply
from tests.fakes.metrics import RecordedMetrics
from tests.fakes.smtp import FakeSMTP

FAST = NotifyPolicy(attempts=3, timeout=2.0, backoff_initial=0.01, backoff_max=0.05)
SYNC = SyncConfig("purchases-to-braze", "web", "braze-prod", event_types=())
OTHER = SyncConfig("signups-to-hook", "app", "hook", event_types=())


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rule(**overrides: Any) -> AlertRule:
    spec: dict[str, Any] = {
        "name": "braze delivery",
        "sync": SYNC.name,
        "when": "error_rate",
        "above": 0.05,
        "window": 300.0,
        "severity": "critical",
        "notify": ("oncall",),
    }
    return AlertRule(**{**spec, **overrides})


def project(
    tmp_path: Path, rules: tuple[AlertRule, ...], channels: dict[str, AlertChannel]
) -> Project:
    return Project(
        root=tmp_path,
        store_path=tmp_path / ".streamctl" / "state.db",
        syncs=(SYNC, OTHER),
        alerts=AlertsConfig(channels=channels, rules=rules),
        secrets=frozenset({"R0UT1NG-KEY-123", "hunter2-password"}),
    )


def run_evaluator(
    proj: Project,
    metrics: RecordedMetrics,
    clock: Clock,
    steps: Callable[[AlertEvaluator], Awaitable[None]],
) -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as client:
            evaluator = AlertEvaluator(proj, metrics, client, policy=FAST, clock=clock)
            try:
                await steps(evaluator)
            finally:
                evaluator.state.close()

    asyncio.run(go())


# -- values and transitions ------------------------------------------------------------


def test_each_metric_is_measured_over_its_window() -> None:
    metrics = RecordedMetrics()
    now = 10_000.0
    metrics.attempt(SYNC.name, at=now - 400, ok=False, latency_ms=900)  # outside 5 minutes
    for i, ok in enumerate([True, True, True, False]):
        metrics.attempt(SYNC.name, at=now - 100 + i, ok=ok, latency_ms=100 * (i + 1))
    metrics.archive(SYNC.name, at=now - 10)
    metrics.receive("web", at=now - 5, count=7)
    metrics.receive("app", at=now - 5, count=3)

    assert measure(rule(when="error_rate"), SYNC, metrics, now) == 0.25
    assert measure(rule(when="failures"), SYNC, metrics, now) == 1.0
    assert measure(rule(when="archived"), SYNC, metrics, now) == 1.0
    assert measure(rule(when="latency_p95"), SYNC, metrics, now) == 400.0
    assert measure(rule(when="no_events"), SYNC, metrics, now) == 7.0  # its source: web
    assert measure(rule(when="error_rate", window=60.0), SYNC, metrics, now) is None  # no attempts


def test_thresholds_are_strict_and_no_data_never_fires() -> None:
    assert is_firing(rule(above=0.05), 0.06)
    assert not is_firing(rule(above=0.05), 0.05)
    assert not is_firing(rule(above=0.05), None)
    assert is_firing(rule(when="no_events", above=None, below=None), 0.0)  # default below 1
    assert not is_firing(rule(when="no_events", above=None, below=None), 1.0)
    assert is_firing(rule(when="failures", above=None, below=None), 1.0)  # default above 0
    assert is_firing(rule(above=10.0, below=2.0), 1.0) and is_firing(
        rule(above=10.0, below=2.0), 11.0
    )
    assert not is_firing(rule(above=10.0, below=2.0), 5.0)


def test_only_transitions_are_announced_and_since_is_kept() -> None:
    r = rule()
    state, first = next_state(r, SYNC.name, 0.01, None, 100.0)
    assert (first.firing, first.transition) == (False, None)
    state, fires = next_state(r, SYNC.name, 0.5, state, 200.0)
    assert (fires.transition, state.since) == ("firing", 200.0)
    state, again = next_state(r, SYNC.name, 0.9, state, 300.0)
    assert (again.transition, state.since, state.value) == (None, 200.0, 0.9)
    state, recovers = next_state(r, SYNC.name, 0.0, state, 400.0)
    assert (recovers.transition, recovers.since, state.since, state.firing) == (
        "resolved",
        200.0,
        None,
        False,
    )


# -- the scenario on every channel -------------------------------------------------------


def test_a_failing_destination_fires_once_and_recovers_once_on_every_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        FakeServer(lambda _r: Reply(200, "ok")) as slack,
        FakeServer() as hook,
        FakeServer(lambda _r: Reply(202, {"status": "success"})) as pager,
        FakeSMTP(tmp_path, username="alerts", password="hunter2-password") as smtp,
    ):
        monkeypatch.setenv("SSL_CERT_FILE", str(smtp.ca_file))
        channels = {
            "slack": AlertChannel("slack", "slack", {"webhook_url": f"{slack.url}/services/x"}),
            "hook": AlertChannel(
                "hook", "webhook", {"url": f"{hook.url}/alerts", "headers": {"X-Key": "k"}}
            ),
            "pager": AlertChannel(
                "pager", "pagerduty", {"routing_key": "R0UT1NG-KEY-123", "base_url": pager.url}
            ),
            "mail": AlertChannel(
                "mail",
                "email",
                {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "username": "alerts",
                    "password": "hunter2-password",
                    "from": "streamctl@example.com",
                    "to": ["oncall@example.com"],
                    "starttls": True,
                },
            ),
        }
        proj = project(tmp_path, (rule(notify=tuple(channels)),), channels)
        metrics, clock = RecordedMetrics(), Clock()

        def traffic(ok: bool) -> None:  # one minute of attempts
            for second in range(0, 60, 5):
                metrics.attempt(SYNC.name, at=clock.now - 60 + second, ok=ok)

        async def steps(evaluator: AlertEvaluator) -> None:
            for minute in range(20):  # healthy 0-4, failing 5-11, healthy after
                clock.now += 60
                traffic(ok=not 5 <= minute < 12)
                await evaluator.evaluate_once()

        run_evaluator(proj, metrics, clock, steps)

        slack_states = [b["text"].split("]")[0] for b in slack.bodies()]
        hook_states = [b["state"] for b in hook.bodies()]
        pager_actions = [b["event_action"] for b in pager.bodies()]
        mail_subjects = [m["Subject"].split("]")[0] for m in smtp.messages]

    assert slack_states == ["[FIRING", "[RESOLVED"]
    assert hook_states == ["firing", "resolved"]
    assert {r.headers["x-key"] for r in hook.requests} == {"k"}
    assert pager_actions == ["trigger", "resolve"]
    assert len({b["dedup_key"] for b in pager.bodies()}) == 1
    assert mail_subjects == ["[FIRING", "[RESOLVED"]
    firing, resolved = hook.bodies()
    assert firing["since"] == resolved["since"]  # resolved tells when the trouble started
    assert firing["value"] > 0.05 and resolved["value"] <= 0.05

    store = AlertStateStore(proj.store_path)
    records = store.notifications()
    store.close()
    assert len(records) == 8 and all(r.ok and r.attempts == 1 for r in records)


def test_a_failing_channel_is_retried_recorded_and_does_not_hold_the_others(tmp_path: Path) -> None:
    release = threading.Event()

    def hanging(_req: Any) -> Reply:  # slower than the channel timeout
        release.wait(5)
        return Reply(200, "ok")

    with (
        FakeServer(lambda _r: Reply(503, "down")) as broken,
        FakeServer(hanging) as slow,
        FakeServer() as good,
    ):
        channels = {
            "broken": AlertChannel(
                "broken", "pagerduty", {"routing_key": "R0UT1NG-KEY-123", "base_url": broken.url}
            ),
            "slow": AlertChannel("slow", "webhook", {"url": slow.url}),
            "good": AlertChannel("good", "webhook", {"url": good.url}),
        }
        rules = (
            rule(notify=("broken", "slow", "good")),
            rule(name="failures", when="failures", above=0, notify=("good",)),
        )
        proj = project(tmp_path, rules, channels)
        metrics, clock = RecordedMetrics(), Clock()
        metrics.attempt(SYNC.name, at=clock.now - 1, ok=False)
        policy = NotifyPolicy(attempts=3, timeout=0.3, backoff_initial=0.01, backoff_max=0.02)

        async def go() -> list[Any]:
            async with httpx.AsyncClient() as client:
                evaluator = AlertEvaluator(proj, metrics, client, policy=policy, clock=clock)
                evaluations = await evaluator.evaluate_once()
                second = await evaluator.evaluate_once()  # still firing: nobody is told again
                evaluator.state.close()
                return [evaluations, second]

        first, second = asyncio.run(go())
        release.set()
        assert len(broken.requests) == 3  # retried, then given up
        assert sorted(b["rule"] for b in good.bodies()) == ["braze delivery", "failures"]

    assert [e.transition for e in first] == ["firing", "firing"]
    assert [e.transition for e in second] == [None, None]
    store = AlertStateStore(proj.store_path)
    by_channel = {(r.rule, r.channel): r for r in store.notifications()}
    states = store.states()
    store.close()
    assert by_channel[("braze delivery", "broken")].ok is False
    assert by_channel[("braze delivery", "broken")].attempts == 3
    assert by_channel[("braze delivery", "broken")].error == "pagerduty channel 'broken': HTTP 503"
    assert by_channel[("braze delivery", "slow")].error == "webhook channel 'slow': timed out"
    assert by_channel[("braze delivery", "good")].ok is True
    # the pair is firing; it was not fully notified, the fully notified rule was
    assert states[("braze delivery", SYNC.name)].notified_at is None
    assert states[("failures", SYNC.name)].notified_at == clock.now


def test_no_events_fires_when_a_source_goes_quiet_for_every_sync_of_a_wildcard(
    tmp_path: Path,
) -> None:
    with FakeServer() as hook:
        channels = {"hook": AlertChannel("hook", "webhook", {"url": hook.url})}
        quiet = rule(
            name="quiet",
            sync="*",
            when="no_events",
            above=None,
            below=None,
            window=120.0,
            notify=("hook",),
        )
        proj = project(tmp_path, (quiet,), channels)
        metrics, clock = RecordedMetrics(), Clock()

        async def steps(evaluator: AlertEvaluator) -> None:
            for minute in range(6):
                clock.now += 60
                if minute < 2:  # web sends for two minutes then stops; app keeps going
                    metrics.receive("web", at=clock.now - 1)
                metrics.receive("app", at=clock.now - 1)
                await evaluator.evaluate_once()

        run_evaluator(proj, metrics, clock, steps)

    assert [(b["sync"], b["state"], b["value"]) for b in hook.bodies()] == [
        (SYNC.name, "firing", 0.0)
    ]


def test_state_survives_a_restart_so_nobody_is_paged_twice(tmp_path: Path) -> None:
    with FakeServer() as hook:
        channels = {"hook": AlertChannel("hook", "webhook", {"url": hook.url})}
        proj = project(tmp_path, (rule(notify=("hook",)),), channels)
        metrics, clock = RecordedMetrics(), Clock()
        metrics.attempt(SYNC.name, at=clock.now - 1, ok=False)

        async def once(evaluator: AlertEvaluator) -> None:
            await evaluator.evaluate_once()

        run_evaluator(proj, metrics, clock, once)
        run_evaluator(proj, metrics, clock, once)  # a new process, the same store file

    assert [b["state"] for b in hook.bodies()] == ["firing"]


def test_run_forever_keeps_evaluating_until_cancelled(tmp_path: Path) -> None:
    with FakeServer() as hook:
        channels = {"hook": AlertChannel("hook", "webhook", {"url": hook.url})}
        proj = project(tmp_path, (rule(notify=("hook",)),), channels)
        metrics, clock = RecordedMetrics(), Clock()

        async def steps(evaluator: AlertEvaluator) -> None:
            task = asyncio.create_task(evaluator.run_forever(interval=0.01))
            metrics.attempt(SYNC.name, at=clock.now - 1, ok=False)
            for _ in range(500):
                if hook.requests:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run_evaluator(proj, metrics, clock, steps)

    assert [b["state"] for b in hook.bodies()] == ["firing"]


def test_run_forever_takes_up_a_reloaded_configuration(tmp_path: Path) -> None:
    # `streamctl run --watch`: rules and channels of the project running now. A rule
    # kept under its name keeps its state: still firing, it is not announced again.
    with FakeServer() as first_hook, FakeServer() as second_hook:
        first = project(
            tmp_path,
            (rule(notify=("hook",)),),
            {"hook": AlertChannel("hook", "webhook", {"url": first_hook.url})},
        )
        second = project(
            tmp_path,
            (
                rule(notify=("hook",)),
                rule(name="any failure", when="failures", above=0.0, notify=("hook",)),
            ),
            {"hook": AlertChannel("hook", "webhook", {"url": second_hook.url})},
        )
        running = [first]
        metrics, clock = RecordedMetrics(), Clock()
        metrics.attempt(SYNC.name, at=clock.now - 1, ok=False)

        async def steps(evaluator: AlertEvaluator) -> None:
            task = asyncio.create_task(
                evaluator.run_forever(interval=0.01, configuration=lambda: running[0])
            )
            await until(lambda: first_hook.requests)
            running[0] = second
            await until(lambda: second_hook.requests)
            await asyncio.sleep(0.1)  # more evaluations: nothing more to announce
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run_evaluator(first, metrics, clock, steps)

    assert [(b["rule"], b["state"]) for b in first_hook.bodies()] == [("braze delivery", "firing")]
    assert [(b["rule"], b["state"]) for b in second_hook.bodies()] == [("any failure", "firing")]


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_evaluators_on_one_store_announce_a_transition_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    # SQLite: `streamctl run` and a cron `alerts check` at the same moment; PostgreSQL:
    # also nodes of a shared store, evaluating at once.
    with FakeServer() as hook:
        channels = {"hook": AlertChannel("hook", "webhook", {"url": hook.url})}
        proj = project(tmp_path, (rule(notify=("hook",)),), channels)
        if backend == "postgres":
            url = request.getfixturevalue("postgres_url")
            migrate_url(url)
            proj = dataclasses.replace(proj, store_url=url)
        metrics, clock = RecordedMetrics(), Clock()
        metrics.attempt(SYNC.name, at=clock.now - 1, ok=False)

        async def go() -> None:
            async with httpx.AsyncClient() as client:
                evaluators = [
                    AlertEvaluator(proj, metrics, client, policy=FAST, clock=clock)
                    for _ in range(4)
                ]
                await asyncio.gather(*(e.evaluate_once() for e in evaluators))
                for e in evaluators:
                    e.state.close()

        asyncio.run(go())

    assert [b["state"] for b in hook.bodies()] == ["firing"]
