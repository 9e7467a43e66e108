"""Alert state in the store: each (rule, sync) pair's state and the notification log.

    state = AlertStateStore(project.store_file)
    evaluations = state.advance(lambda previous: new_states)   # read, decide, write: atomic
    state.record_notification(NotificationRecord(...))

The tables (`alert_state`, `alert_notifications`) are created by the store's
migrations (migration 7). The alert evaluator (`streamctl.monitoring.alerts`)
decides; this module only reads and writes. Its own connection to the store's file,
safe to call from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from streamctl.store.connection import SqliteConnection, SqlReader

T = TypeVar("T")


@dataclass(frozen=True)
class RuleState:
    """The remembered state of one rule for one sync."""

    rule: str
    sync: str
    firing: bool
    since: float | None
    value: float | None
    evaluated_at: float
    changed_at: float
    notified_at: float | None = None


@dataclass(frozen=True)
class NotificationRecord:
    rule: str
    sync: str
    channel: str
    state: str
    at: float
    ok: bool
    attempts: int
    error: str | None


StateKey = tuple[str, str]  # (rule, sync)


class AlertStateStore:
    """`alert_state` and `alert_notifications` of the project's store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: SqlReader = SqliteConnection.open(path)

    @classmethod
    def on(cls, db: SqlReader, where: str) -> AlertStateStore:
        """Over another connection: the PostgreSQL store's, whose transactions here begin
        with an advisory lock (`streamctl.store.postgres.store.PostgresAlertDatabase`),
        so evaluators on several nodes take turns and announce a transition once."""
        state = cls.__new__(cls)
        state.path = Path(where)
        state._db = db
        return state

    def close(self) -> None:
        self._db.close()

    def states(self) -> dict[StateKey, RuleState]:
        return _states(self._db)

    def advance(
        self, step: Callable[[dict[StateKey, RuleState]], tuple[Sequence[RuleState], T]]
    ) -> T:
        """Read every state, let `step` decide the new ones, write them: one write
        transaction, so two evaluators (`run` and `alerts check`) never both announce
        the same transition. Returns what `step` returned beside the states."""
        with self._db.transaction() as db:
            states, outcome = step(_states(self._db))
            db.executemany(
                "INSERT INTO alert_state"
                " (rule, sync, firing, since, value, evaluated_at, changed_at, notified_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule, sync) DO UPDATE SET"
                " firing = excluded.firing, since = excluded.since, value = excluded.value,"
                " evaluated_at = excluded.evaluated_at, changed_at = excluded.changed_at,"
                " notified_at = excluded.notified_at",
                [
                    (s.rule, s.sync, int(s.firing), s.since, s.value, s.evaluated_at,
                     s.changed_at, s.notified_at)
                    for s in states
                ],
            )  # fmt: skip
        return outcome

    def mark_notified(self, rule: str, sync: str, at: float) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE alert_state SET notified_at = ? WHERE rule = ? AND sync = ?",
                (at, rule, sync),
            )

    def record_notification(self, record: NotificationRecord) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO alert_notifications"
                " (rule, sync, channel, state, at, ok, attempts, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.rule, record.sync, record.channel, record.state, record.at,
                 int(record.ok), record.attempts, record.error),
            )  # fmt: skip

    def forget_notifications(self, before: float) -> None:
        """The notification log keeps what the store keeps (`retention_days`)."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM alert_notifications WHERE at < ?", (before,))

    def notifications(self, rule: str | None = None) -> list[NotificationRecord]:
        query = (
            "SELECT rule, sync, channel, state, at, ok, attempts, error FROM alert_notifications"
        )
        args: tuple[str, ...] = ()
        if rule is not None:
            query, args = query + " WHERE rule = ?", (rule,)
        rows = self._db.rows(query + " ORDER BY id", args)
        return [
            NotificationRecord(rule, sync, channel, state, at, bool(ok), attempts, error)
            for rule, sync, channel, state, at, ok, attempts, error in rows
        ]


def _states(db: SqlReader) -> dict[StateKey, RuleState]:
    rows = db.rows(
        "SELECT rule, sync, firing, since, value, evaluated_at, changed_at, notified_at"
        " FROM alert_state"
    )
    return {
        (rule, sync): RuleState(
            rule, sync, bool(firing), since, value, evaluated, changed, notified
        )
        for rule, sync, firing, since, value, evaluated, changed, notified in rows
    }
