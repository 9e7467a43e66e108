"""Per-minute sparklines of volume and errors, for `streamctl status`.

    trends = sync_trends(metrics, ["to-braze"], since=now - 3600, until=now)
    trends["to-braze"].volume       # '▁▂▅▇█▆▃▁ ...' one character per minute
    trends["to-braze"].errors       # '▁▁▁▁▇█▂▁ ...'

Each line is scaled to its own largest value, and any minute above zero gets at
least the second bar, so one lonely error stays visible next to thousands of events.
Windows longer than `max_width` minutes put several minutes in a character (summed),
so a day still fits a terminal line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from streamctl.store.metrics import MetricsSource, MinuteBucket

BARS = "▁▂▃▄▅▆▇█"
DEFAULT_WIDTH = 30  # characters: a day is 48 minutes a character, next to status's columns


def sparkline(values: Sequence[float]) -> str:
    """One bar per value, from ▁ (zero) to █ (the largest value)."""
    top = max(values, default=0)
    if top <= 0:
        return BARS[0] * len(values)
    steps = len(BARS) - 1
    return "".join(
        BARS[0] if value <= 0 else BARS[max(1, math.ceil(value / top * steps))] for value in values
    )


def squeeze(buckets: Sequence[MinuteBucket], max_width: int) -> list[MinuteBucket]:
    """At most `max_width` buckets, each the sum of consecutive ones (oldest first)."""
    if len(buckets) <= max_width:
        return list(buckets)
    per_bucket = math.ceil(len(buckets) / max_width)
    return [
        MinuteBucket(
            group[0].start,
            sum(b.volume for b in group),
            sum(b.errors for b in group),
        )
        for group in (buckets[i : i + per_bucket] for i in range(0, len(buckets), per_bucket))
    ]


@dataclass(frozen=True)
class SyncTrend:
    sync: str
    volume: str  # sparkline of events that reached the sync
    errors: str  # sparkline of failed attempts, mapping and function errors
    minutes_per_char: int
    buckets: tuple[MinuteBucket, ...]  # what the sparklines draw, for --json

    def as_json(self) -> dict[str, object]:
        return {
            "minutes_per_point": self.minutes_per_char,
            "volume": [b.volume for b in self.buckets],
            "errors": [b.errors for b in self.buckets],
            "volume_sparkline": self.volume,
            "errors_sparkline": self.errors,
        }


def sync_trends(
    metrics: MetricsSource,
    syncs: Sequence[str],
    *,
    since: float,
    until: float,
    max_width: int = DEFAULT_WIDTH,
) -> dict[str, SyncTrend]:
    """The volume and error sparklines of each sync over [since, until)."""
    trends = {}
    for sync in syncs:
        minutes = metrics.minute_buckets(sync, since, until)
        points = squeeze(minutes, max_width)
        per_char = math.ceil(len(minutes) / len(points)) if points else 1
        trends[sync] = SyncTrend(
            sync,
            volume=sparkline([b.volume for b in points]),
            errors=sparkline([b.errors for b in points]),
            minutes_per_char=per_char,
            buckets=tuple(points),
        )
    return trends


def trend_header(name: str, minutes_per_char: int) -> str:
    """`volume/min`, or `volume/24min` when each character sums 24 minutes."""
    return f"{name}/min" if minutes_per_char == 1 else f"{name}/{minutes_per_char}min"
