"""What each console page shows, as plain data for its template (and `streamctl report`).

Every function reads through the store's protocols (`ConsoleStore`: its rollups,
errors and stories, on SQLite or PostgreSQL alike; the alert state) and returns JSON-ready dicts with the project's secrets redacted: the
templates only lay them out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from streamctl.channels import format_value
from streamctl.config.secrets import redact_data
from streamctl.core.errors import StreamctlError
from streamctl.core.model import Project, SyncConfig
from streamctl.core.timestamps import iso
from streamctl.monitoring.alerts import rule_json, rule_statuses
from streamctl.pipeline.preview import preview_event
from streamctl.store.alert_state import AlertStateStore
from streamctl.store.base import ConsoleStore
from streamctl.store.queries import ErrorFilter
from streamctl.store.rollups import LATENCY_BINS, OVERALL, percentile


@dataclass(frozen=True)
class Window:
    name: str
    seconds: int
    width: int  # seconds per chart bucket (a width streamctl.store.rollups keeps)


T = TypeVar("T")

WINDOWS = {
    "hour": Window("hour", 3600, 60),
    "day": Window("day", 86400, 600),
    "week": Window("week", 7 * 86400, 3600),
}
VOLUME = ("received", "delivered", "filtered", "failed", "archived")
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
ERRORS_SHOWN = 200


def _redacted(data: T, secrets: frozenset[str]) -> T:
    """`data` with the project's secrets masked in every string (as the CLI prints it)."""
    return cast(T, redact_data(data, secrets))


def window_for(seconds: float) -> Window:
    """The narrowest window holding `seconds` (`report --since`), stretched to them."""
    for window in WINDOWS.values():
        if seconds <= window.seconds:
            return Window(window.name, int(seconds), window.width)
    return Window("week", int(seconds), WINDOWS["week"].width)


# -- overview ---------------------------------------------------------------------------------


def overview(
    store: ConsoleStore, project: Project, window: Window, sync: str | None
) -> dict[str, Any]:
    now = time.time()
    since = now - window.seconds
    series = store.read_series(since, window.width, sync, now=now)
    received = series.values("events" if sync is None else "received")
    attempts, failed = series.values("attempts"), series.values("failed")
    # Each chart: [name, values] pairs in drawing order (a JSON object's keys get sorted).
    charts = {
        "x": series.starts,
        "volume": [["received", received], *([name, series.values(name)] for name in VOLUME[1:])],
        "latency": [[name, series.percentile_series(f)] for name, f in PERCENTILES],
        "error_rate": [
            [
                "error rate",
                [
                    round(100 * f / a, 2) if a else None
                    for f, a in zip(failed, attempts, strict=True)
                ],
            ]
        ],
        "backlog": [["queue", series.values("queue")], ["open", series.values("open")]],
    }
    totals = store.totals_by_sync(since, window.width, now=now)
    rows = [_summary(name, totals.get(name, {})) for name in _sync_names(project, totals)]
    overall = _summary("all syncs", _sum_syncs(totals))
    overall["received"] = totals.get(OVERALL, {}).get("events", 0)
    overall["queue"] = totals.get(OVERALL, {}).get("queue", 0)
    return _redacted(
        {
            "window": window.name,
            "since": iso(since),
            "sync": sync,
            "syncs": [s.name for s in project.syncs],
            "charts": charts,
            "rows": rows,
            "overall": overall,
        },
        project.secrets,
    )


def _sync_names(project: Project, totals: dict[str, dict[str, int]]) -> list[str]:
    names = [s.name for s in project.syncs]
    return names + sorted(set(totals) - set(names) - {OVERALL})


def _sum_syncs(totals: dict[str, dict[str, int]]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for sync, metrics in totals.items():
        if sync == OVERALL:
            continue
        for metric, n in metrics.items():
            summed[metric] = summed.get(metric, 0) + n
    return summed


def _summary(name: str, metrics: dict[str, int]) -> dict[str, Any]:
    attempts = metrics.get("attempts", 0)
    bins = [metrics.get(f"lat:{k}", 0) for k in range(len(LATENCY_BINS) + 1)]
    row: dict[str, Any] = {"sync": name}
    for metric in (*VOLUME, "dropped", "blocked", "mapping_error", "function_error", "open"):
        row[metric] = metrics.get(metric, 0)
    row["attempts"] = attempts
    row["error_rate"] = f"{100 * metrics.get('failed', 0) / attempts:.1f}%" if attempts else "-"
    for label, fraction in PERCENTILES:
        value = percentile(bins, fraction)
        row[label] = "-" if value is None else format_value("latency_p95", value)
    return row


# -- syncs ---------------------------------------------------------------------------------------


def syncs(store: ConsoleStore, project: Project) -> list[dict[str, Any]]:
    """Each sync as its flow, its delivery policy and its funnel over the last 24 hours."""
    day = WINDOWS["day"]
    totals = store.totals_by_sync(time.time() - day.seconds, day.width)
    flows = [_flow(project, sync, totals.get(sync.name, {})) for sync in project.syncs]
    return _redacted(flows, project.secrets)


def _flow(project: Project, sync: SyncConfig, totals: dict[str, int]) -> dict[str, Any]:
    source = project.sources.get(sync.source)
    destination = project.destinations.get(sync.destination)
    written = _event_type_entries(project.root, sync)
    event_types = []
    for index, rule in enumerate(sync.event_types):
        entry = written[index] if index < len(written) else {}
        event_types.append(
            {
                "type": rule.type,
                "filter": _yaml(entry.get("filter")) if entry.get("filter") else "every event",
                "mappings": _yaml(entry.get("mappings")) if entry.get("mappings") else "",
            }
        )
    policy = sync.delivery
    return {
        "name": sync.name,
        "file": str(sync.location),
        "source": sync.source,
        "source_type": source.type if source else "?",
        "contract": source.contract if source and source.contract else None,
        "function": _relative(project.root, sync.function.path) if sync.function else None,
        "match": sync.match,
        "event_types": event_types,
        "destination": sync.destination,
        "destination_type": destination.type if destination else "?",
        "policy": {
            "batch size": policy.batch_size or "destination default",
            "concurrency": policy.concurrency,
            "rate limit": f"{policy.rate_limit:g}/s" if policy.rate_limit else "none",
            "max attempts": policy.max_attempts,
            "max age": f"{policy.max_age:g} s",
            "backoff": f"{policy.backoff.initial:g} s to {policy.backoff.max:g} s",
            "ordering": policy.ordering,
            "timeout": f"{policy.timeout:g} s",
        },
        "funnel": [
            (label, totals.get(metric, 0))
            for label, metric in (
                ("received", "received"),
                ("blocked", "blocked"),
                ("dropped", "dropped"),
                ("filtered", "filtered"),
                ("mapping errors", "mapping_error"),
                ("function errors", "function_error"),
                ("delivered", "delivered"),
                ("failed attempts", "failed"),
                ("archived", "archived"),
            )
        ],
    }


def _event_type_entries(root: Path, sync: SyncConfig) -> list[dict[str, Any]]:
    """The sync file's `event_types` as written (filters and mappings before compiling;
    `${VAR}` references stay unexpanded, so no secret value is read)."""
    try:
        data = yaml.safe_load((root / sync.location.path).read_text())
    except (OSError, yaml.YAMLError):
        return []
    entries = data.get("event_types") if isinstance(data, dict) else None
    return [e if isinstance(e, dict) else {} for e in entries] if isinstance(entries, list) else []


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).strip()


def _relative(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# -- errors ---------------------------------------------------------------------------------------


def errors(store: ConsoleStore, project: Project, filters: ErrorFilter) -> list[dict[str, Any]]:
    limited = ErrorFilter(
        filters.syncs, filters.statuses, filters.stages, filters.since,
        min(filters.limit or ERRORS_SHOWN, ERRORS_SHOWN), filters.status_codes, filters.until,
    )  # fmt: skip
    return _redacted(store.list_errors(limited), project.secrets)


def delivery(store: ConsoleStore, project: Project, error_id: str) -> dict[str, Any] | None:
    """One error (delivery or violation) with the whole story of its event, as `explain`."""
    detail = store.error_detail(error_id)
    if detail is None:
        return None
    detail["story"] = store.explain(detail["message_id"]) if detail.get("message_id") else []
    return _redacted(detail, project.secrets)


def event_story(store: ConsoleStore, project: Project, message_id: str) -> list[dict[str, Any]]:
    return _redacted(store.explain(message_id), project.secrets)


def would_send(project: Project, source: str, event: dict[str, Any]) -> list[dict[str, Any]]:
    """What each sync of `source` would send for `event` under the running configuration:
    `streamctl preview`'s answer (the exact request per delivery), secrets redacted."""
    from streamctl.destinations.registry import create

    syncs = [s.name for s in project.syncs_for_source(source)]
    if not syncs:
        return []
    names = {project.sync(name).destination for name in syncs}
    destinations = {name: create(project.destinations[name]) for name in names}
    try:
        report = preview_event(project, destinations, event, syncs=syncs)
    except StreamctlError as exc:
        return [{"sync": ", ".join(syncs), "outcome": "not previewed", "error": str(exc)}]
    return _redacted(report.as_json()["syncs"], project.secrets)


# -- alerts ------------------------------------------------------------------------------------------


def alerts(project: Project, state: AlertStateStore, limit: int = 200) -> dict[str, Any]:
    """Each rule per matching sync with its state, and the newest notifications."""
    statuses = rule_statuses(project, state)
    notifications = state.notifications()
    rules = []
    for status in statuses:
        rule = rule_json(status.rule)
        remembered = status.state
        rules.append(
            {
                **rule,
                "threshold": f"{rule['comparison']} {format_value(status.rule.when, float(rule['threshold']))}",  # type: ignore[arg-type]
                "sync": status.sync,
                "state": status.label,
                "value": "no data"
                if remembered is None or remembered.value is None
                else format_value(status.rule.when, remembered.value),
                "since": iso(remembered.since) if remembered and remembered.firing else None,
                "evaluated_at": iso(remembered.evaluated_at) if remembered else None,
                "failed_channels": list(status.failed_channels),
            }
        )
    history = [
        {
            "at": iso(n.at), "rule": n.rule, "sync": n.sync, "channel": n.channel,
            "state": n.state, "ok": n.ok, "attempts": n.attempts, "error": n.error,
        }
        for n in reversed(notifications[-limit:])
    ]  # fmt: skip
    return _redacted(
        {"rules": rules, "notifications": history, "channels": sorted(project.alerts.channels)},
        project.secrets,
    )
