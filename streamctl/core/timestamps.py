"""Timestamps: the one parser, the one ISO 8601 formatter, read and written everywhere.

    parse_timestamp("2026-11-26T12:00:00Z")     # aware UTC datetime; numbers: epoch s or ms
    parse_iso("not a time")                     # None: strings only, for ingest and tests
    format_timestamp(moment)                    # "2026-11-26T12:00:00.000Z"
    iso(1795694400.0)                           # the same, from epoch seconds
    iso(1795694400.0, "seconds")                # "2026-11-26T12:00:00Z"

Naive times are UTC, as Segment's libraries send them; output is always UTC with `Z`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, overload

Precision = Literal["seconds", "milliseconds"]


class TimestampError(ValueError):
    """A value that is not an ISO 8601 timestamp nor an epoch number."""


# Below this an epoch number is seconds, above it milliseconds (Mixpanel's own rule
# of thumb: 1e11 seconds is the year 5138, 1e11 milliseconds is 1973).
_SECONDS_CEILING = 100_000_000_000


def parse_timestamp(value: Any) -> datetime:
    """An aware UTC datetime from an ISO 8601 string or epoch seconds/milliseconds."""
    if isinstance(value, bool):
        msg = f"expected a timestamp, got the boolean {value}"
        raise TimestampError(msg)
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) >= _SECONDS_CEILING else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            msg = f"expected an ISO 8601 timestamp, got {value!r}"
            raise TimestampError(msg) from None
        # A timestamp without an offset is read as UTC, as Segment's libraries send it.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    msg = f"expected a timestamp, got {type(value).__name__} {value!r}"
    raise TimestampError(msg)


def parse_iso(value: Any) -> datetime | None:
    """`parse_timestamp` of an ISO 8601 string; None for anything else (an event's
    `timestamp` must be a string: epoch numbers are not Segment's spec), and for a
    moment outside years 1-9999 in UTC (`0001-01-01T00:00:00+01:00`)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except (TimestampError, OverflowError):
        return None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a `Z`: `2026-11-26T12:00:00.000Z`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text[:-6] + "Z"  # drop "+00:00"


@overload
def iso(epoch: float, precision: Precision = "milliseconds") -> str: ...


@overload
def iso(epoch: None, precision: Precision = "milliseconds") -> None: ...


def iso(epoch: float | None, precision: Precision = "milliseconds") -> str | None:
    """Epoch seconds as ISO 8601 UTC (`Z`); None stays None (a time not yet reached)."""
    if epoch is None:
        return None
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec=precision)
    return text.replace("+00:00", "Z")
