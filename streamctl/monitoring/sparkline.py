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
DEFAULT_WIDTH = 30  # characters: a day is an hour a character (24), next to status's columns
# Minutes a character may sum: round spans a person reads at a glance (`volume/h`, not
# the `volume/49min` that dividing a day by the width gave).
ROUND_SPANS = (1, 2, 3, 5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 720, 1440)


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
    per_bucket = minutes_per_char(len(buckets), max_width)
    if per_bucket == 1:
        return list(buckets)
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
        per_char = minutes_per_char(len(minutes), max_width)
        trends[sync] = SyncTrend(
            sync,
            volume=sparkline([b.volume for b in points]),
            errors=sparkline([b.errors for b in points]),
            minutes_per_char=per_char,
            buckets=tuple(points),
        )
    return trends


def minutes_per_char(minutes: int, max_width: int) -> int:
    """What one character of a sparkline sums so that `minutes` fit `max_width` characters."""
    return 1 if minutes <= max_width else round_span(math.ceil(minutes / max_width))


def round_span(minutes: int) -> int:
    """The smallest round span of at least `minutes` (whole days past a day)."""
    for span in ROUND_SPANS:
        if span >= minutes:
            return span
    return math.ceil(minutes / 1440) * 1440


def trend_header(name: str, minutes_per_char: int) -> str:
    """`volume/min`, `volume/15min`, `volume/h`, `volume/2h`, `volume/day`: what one
    character sums."""
    if minutes_per_char % 1440 == 0:
        days = minutes_per_char // 1440
        return f"{name}/day" if days == 1 else f"{name}/{days}d"
    if minutes_per_char % 60 == 0:
        hours = minutes_per_char // 60
        return f"{name}/h" if hours == 1 else f"{name}/{hours}h"
    return f"{name}/min" if minutes_per_char == 1 else f"{name}/{minutes_per_char}min"
