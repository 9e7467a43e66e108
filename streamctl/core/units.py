"""Durations (`500ms`, `30s`, `5m`, `4h`, `1d`) and rates (`100/s`, `6000/m`) in project files.

    parse_duration("4h")    # 14400.0 seconds
    parse_rate("6000/m")    # 100.0 events per second
    format_duration(7200)   # "2h": the way durations are written in YAML

A bare number is seconds (durations) or events per second (rates). The schemas
already check the shape; these raise ValueError for anything else.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")
RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*")
SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float) -> float:
    """Seconds in a duration."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = DURATION.fullmatch(str(value))
    if match is None:
        msg = f"not a duration: {value!r} (expected 500ms, 30s, 5m, 4h, 1d)"
        raise ValueError(msg)
    return float(match.group(1)) * SECONDS[match.group(2)]


def parse_moment(value: str, now: float | None = None) -> float:
    """Unix seconds of `--since`-style text: a duration back from `now`, or an ISO 8601 time."""
    try:
        return (time.time() if now is None else now) - parse_duration(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        msg = f"{value!r}: expected a duration (30m, 24h, 7d) or an ISO 8601 time"
        raise ValueError(msg) from None


def parse_rate(value: str | float) -> float:
    """Events per second in a rate."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = RATE.fullmatch(str(value))
    if match is None:
        msg = f"not a rate: {value!r} (expected 100/s, 6000/m, 20000/h)"
        raise ValueError(msg)
    return float(match.group(1)) / SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """300 -> '5m', 90 -> '90s', 7200 -> '2h', 86400 -> '1d': the way YAML writes them."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
