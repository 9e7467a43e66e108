"""Alert rules: evaluate, remember the state in SQLite, notify on transitions (SPEC §7).

    evaluator = AlertEvaluator(project, metrics, client)
    await evaluator.evaluate_once()       # `streamctl alerts check`
    await evaluator.run_forever()         # inside `streamctl run`, every alerts.interval

A rule is evaluated once per matching sync (`sync: "*"` matches every sync), and
each (rule, sync) pair has one row in `alert_state`. A channel hears about a pair
twice: when it starts firing and when it recovers, never once per evaluation; the
state survives restarts, so a restarted `run` does not page again.

| when | value over the window |
| --- | --- |
| `error_rate` | failed attempts / attempts (no attempts: no data, never fires) |
| `failures` | failed delivery attempts |
| `archived` | deliveries archived |
| `latency_p95` | 95th percentile attempt latency, ms (no attempts: no data) |
| `no_events` | events accepted by the sync's source |

A rule fires while the value is `above` its threshold (strictly greater) or `below`
it (strictly less). Without either: `no_events` fires below 1, the others above 0.

Notifying never holds evaluation or delivery back: every channel is notified in
its own task, each try bounded by a timeout and retried with exponential backoff;
the outcome of every notification is recorded in `alert_notifications`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from streamctl.channels import (
    AlertNotice,
    Channel,
    ChannelError,
    build_channel,
)
from streamctl.config.secrets import redact
from streamctl.core.model import AlertRule, Project, SyncConfig
from streamctl.core.units import format_duration
from streamctl.store.alert_state import AlertStateStore, NotificationRecord, RuleState
from streamctl.store.backend import open_alert_state
from streamctl.store.metrics import MetricsSource, StoreMetrics

log = logging.getLogger(__name__)

Comparison = Literal["above", "below"]


@dataclass(frozen=True)
class Evaluation:
    """One rule for one sync at one instant; `transition` is set when a channel must hear of it."""

    rule: AlertRule
    sync: str
    value: float | None
    firing: bool
    since: float | None
    transition: Literal["firing", "resolved"] | None = None
    notifications: tuple[NotificationRecord, ...] = ()  # of the transition, one per channel

    @property
    def critical_firing(self) -> bool:
        return self.firing and self.rule.severity == "critical"


@dataclass(frozen=True)
class NotifyPolicy:
    """How hard a channel is tried: `attempts` tries, each within `timeout` seconds."""

    attempts: int = 3
    timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 10.0


def _advance(
    readings: Sequence[tuple[AlertRule, str, float | None]],
    now: float,
    previous: dict[tuple[str, str], RuleState],
) -> tuple[list[RuleState], list[Evaluation]]:
    """Each (rule, sync, value) reading applied to the remembered states."""
    states, evaluations = [], []
    for rule, sync, value in readings:
        state, evaluation = next_state(rule, sync, value, previous.get((rule.name, sync)), now)
        states.append(state)
        evaluations.append(evaluation)
    return states, evaluations


def bounds(rule: AlertRule) -> tuple[Comparison, float]:
    """The comparison a rule fires on, with the defaults of the module docstring."""
    if rule.above is not None:
        return "above", rule.above
    if rule.below is not None:
        return "below", rule.below
    return ("below", 1.0) if rule.when == "no_events" else ("above", 0.0)


def is_firing(rule: AlertRule, value: float | None) -> bool:
    """No data never fires (an idle sync has no error rate); both bounds fire outside them."""
    if value is None:
        return False
    above = rule.above is not None and value > rule.above
    below = rule.below is not None and value < rule.below
    if rule.above is None and rule.below is None:
        comparison, threshold = bounds(rule)
        return value > threshold if comparison == "above" else value < threshold
    return above or below


def measure(rule: AlertRule, sync: SyncConfig, metrics: MetricsSource, now: float) -> float | None:
    """The rule's value for one sync over the window ending now."""
    since = now - rule.window
    if rule.when == "error_rate":
        return metrics.attempt_counts(sync.name, since, now).error_rate
    if rule.when == "failures":
        return float(metrics.attempt_counts(sync.name, since, now).failed)
    if rule.when == "archived":
        return float(metrics.archived_count(sync.name, since, now))
    if rule.when == "latency_p95":
        return metrics.latency_p95(sync.name, since, now)
    return float(metrics.received_count(sync.source, since, now))


def matching_syncs(rule: AlertRule, project: Project) -> tuple[SyncConfig, ...]:
    return tuple(s for s in project.syncs if rule.sync in ("*", s.name))


def next_state(
    rule: AlertRule, sync: str, value: float | None, previous: RuleState | None, now: float
) -> tuple[RuleState, Evaluation]:
    """Pure: the new remembered state, and whether this is a transition to announce."""
    firing = is_firing(rule, value)
    was_firing = previous is not None and previous.firing
    transition: Literal["firing", "resolved"] | None = None
    if firing and not was_firing:
        transition = "firing"
    elif was_firing and not firing:
        transition = "resolved"
    if previous is None:
        since = now if firing else None
        state = RuleState(rule.name, sync, firing, since, value, now, now)
    elif transition is None:
        state = replace(previous, value=value, evaluated_at=now)
    else:
        since = now if firing else previous.since
        state = replace(
            previous, firing=firing, since=since, value=value, evaluated_at=now, changed_at=now
        )
    evaluation = Evaluation(rule, sync, value, firing, state.since, transition)
    if transition == "resolved":
        state = replace(state, since=None)
    return state, evaluation


def notice_for(evaluation: Evaluation, now: float) -> AlertNotice:
    assert evaluation.transition is not None
    rule = evaluation.rule
    comparison, threshold = bounds(rule)
    return AlertNotice(
        rule=rule.name,
        sync=evaluation.sync,
        state=evaluation.transition,
        when=rule.when,
        value=evaluation.value,
        comparison=comparison,
        threshold=threshold,
        window=rule.window,
        severity=rule.severity,
        since=evaluation.since if evaluation.since is not None else now,
        at=now,
    )


@dataclass(frozen=True)
class RuleStatus:
    """What `streamctl alerts list` shows for one rule and one matching sync."""

    rule: AlertRule
    sync: str
    state: RuleState | None  # None: not evaluated yet
    failed_channels: tuple[str, ...] = ()  # channels whose last notification failed

    @property
    def label(self) -> Literal["firing", "ok", "pending"]:
        if self.state is None:
            return "pending"
        return "firing" if self.state.firing else "ok"


def rule_statuses(project: Project, store: AlertStateStore | None) -> list[RuleStatus]:
    """Every (rule, matching sync) pair in config order, with its remembered state
    (none without a store: nothing was evaluated yet)."""
    states = store.states() if store is not None else {}
    records = store.notifications() if store is not None else []
    last_by_channel: dict[tuple[str, str, str], NotificationRecord] = {}
    for record in records:  # oldest first, so the last one wins
        last_by_channel[(record.rule, record.sync, record.channel)] = record
    statuses = []
    for rule in project.alerts.rules:
        for sync in matching_syncs(rule, project):
            failed = tuple(
                channel
                for channel in rule.notify
                if (r := last_by_channel.get((rule.name, sync.name, channel))) and not r.ok
            )
            statuses.append(RuleStatus(rule, sync.name, states.get((rule.name, sync.name)), failed))
    return statuses


def rule_json(rule: AlertRule) -> dict[str, object]:
    comparison, threshold = bounds(rule)
    return {
        "name": rule.name,
        "sync": rule.sync,
        "when": rule.when,
        "comparison": comparison,
        "threshold": threshold,
        "window": format_duration(rule.window),
        "window_seconds": rule.window,
        "severity": rule.severity,
        "notify": list(rule.notify),
    }


RELOAD_CHECK = 1.0  # seconds between looks for a reloaded configuration while waiting


class AlertEvaluator:
    """Evaluates every rule of a project, keeps their state, notifies on transitions.

    For `streamctl run`: start `run_forever()` as its own asyncio task next to the
    listener and delivery workers, and cancel it on shutdown. Its store reads run in
    worker threads and each channel in its own task with timeouts, so neither a slow
    query nor a dead channel stalls the event loop that delivers events.

        task = asyncio.create_task(AlertEvaluator(project, metrics, client).run_forever())

    `metrics` is any MetricsSource (the store's: `StoreMetrics`); `state` defaults to
    the alert tables in the project's store file.
    """

    def __init__(
        self,
        project: Project,
        metrics: MetricsSource,
        client: httpx.AsyncClient,
        *,
        state: AlertStateStore | None = None,
        policy: NotifyPolicy = NotifyPolicy(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.client = client
        self.state = state or open_alert_state(project)
        self.policy = policy
        self.clock = clock
        self.use(project)

    def use(self, project: Project) -> None:
        """Evaluate the rules, and notify the channels, of `project` from now on (a
        reloaded configuration). The state of a rule kept under the same name carries
        on: a rule still firing is not announced again."""
        self.project = project
        self.channels: dict[str, Channel] = {
            name: build_channel(config, self.client, timeout=self.policy.timeout)
            for name, config in project.alerts.channels.items()
        }

    async def run_forever(
        self,
        interval: float | None = None,
        configuration: Callable[[], Project] | None = None,
    ) -> None:
        """Evaluate every `interval` seconds (default `alerts.interval`) until cancelled.
        `configuration`: the project currently running, asked before each evaluation
        (`streamctl run --watch` swaps in a changed one)."""
        while True:
            if configuration is not None and (current := configuration()) is not self.project:
                self.use(current)
            try:
                await self.evaluate_once()
            except Exception:  # one bad evaluation must not end alerting for the run
                log.exception("alert evaluation failed")
            period = interval if interval is not None else self.project.alerts.interval
            await self._pause(period, configuration)

    async def _pause(self, period: float, configuration: Callable[[], Project] | None) -> None:
        """`period` seconds, or less if the configuration changes meanwhile (its rules
        are evaluated at once, not after the old interval)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + period
        while (left := end - loop.time()) > 0:
            if configuration is not None and configuration() is not self.project:
                return
            await asyncio.sleep(min(left, RELOAD_CHECK))

    async def evaluate_once(self) -> list[Evaluation]:
        """Evaluate every rule for every matching sync; notify transitions; return them all."""
        now = self.clock()
        evaluations = await asyncio.to_thread(self._evaluate, now)
        return list(await asyncio.gather(*(self._announce(e, now) for e in evaluations)))

    def _evaluate(self, now: float) -> list[Evaluation]:
        self.state.forget_notifications(now - self.project.retention_days * 86400)
        readings = [
            (rule, sync.name, measure(rule, sync, self.metrics, now))
            for rule in self.project.alerts.rules
            for sync in matching_syncs(rule, self.project)
        ]
        return self.state.advance(functools.partial(_advance, readings, now))

    async def _announce(self, evaluation: Evaluation, now: float) -> Evaluation:
        """Tell the rule's channels about a transition, concurrently; no-op without one."""
        if evaluation.transition is None:
            return evaluation
        notice = notice_for(evaluation, now)
        records = await asyncio.gather(
            *(self._notify(name, notice) for name in evaluation.rule.notify)
        )
        if records and all(record.ok for record in records):
            await asyncio.to_thread(self.state.mark_notified, notice.rule, notice.sync, now)
        return replace(evaluation, notifications=tuple(records))

    async def _notify(self, channel_name: str, notice: AlertNotice) -> NotificationRecord:
        """Try one channel with retries; record the outcome; never raise."""
        attempts, error = 0, None
        channel = self.channels.get(channel_name)
        if channel is None:
            error = f"unknown channel {channel_name!r}"
        else:
            try:
                async for attempt in self._retrying():
                    with attempt:
                        attempts += 1
                        async with asyncio.timeout(self.policy.timeout):
                            await channel.send(notice)
            except TimeoutError:
                error = f"{channel.type} channel {channel_name!r}: timed out"
            except Exception as exc:
                error = str(exc)
        if error is not None:
            error = redact(error, self.project.secrets)
            log.warning("alert %r for %s: %s", notice.rule, notice.sync, error)
        record = NotificationRecord(
            notice.rule,
            notice.sync,
            channel_name,
            notice.state,
            notice.at,
            error is None,
            attempts,
            error,
        )
        await asyncio.to_thread(self.state.record_notification, record)
        return record

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=wait_exponential(
                multiplier=self.policy.backoff_initial, max=self.policy.backoff_max
            ),
            retry=retry_if_exception(_worth_retrying),
            reraise=True,
        )


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, ChannelError):
        return exc.retryable
    return isinstance(exc, TimeoutError | OSError)


async def check_once(project: Project) -> list[Evaluation]:
    """One evaluation of every rule against the project's store (`streamctl alerts check`)."""
    metrics = StoreMetrics.for_project(project)
    try:
        async with httpx.AsyncClient() as client:
            evaluator = AlertEvaluator(project, metrics, client)
            try:
                return await evaluator.evaluate_once()
            finally:
                evaluator.state.close()
    finally:
        metrics.close()
