"""Mapped event times in the units vendors want, failing as a `mapping_error`.

Built on `streamctl.core.timestamps.parse_timestamp` (ISO 8601 strings, or epoch seconds/milliseconds):
a mapped time that does not parse is a MappingError naming the field and the value,
so the event is archived at mapping time instead of being sent with a wrong date.

    epoch_seconds("2024-05-01T12:00:00Z", field="createdAt")   # 1714564800
    epoch_micros("2024-05-01T12:00:00.5Z", field="timestamp")   # 1714564800500000
    epoch_millis("2024-05-01T12:00:00.5Z", field="timestamp")   # 1714564800500
    iso8601(1714564800, field="occurredAt")                     # "2024-05-01T12:00:00.000Z"
"""

from __future__ import annotations

from datetime import UTC, datetime

from streamctl.core.errors import MappingError
from streamctl.core.timestamps import TimestampError, format_timestamp, parse_timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def mapped_time(value: object, *, field: str) -> datetime:
    """The aware UTC datetime of a mapped value; MappingError naming `field` otherwise."""
    try:
        return parse_timestamp(value)
    except (TimestampError, OverflowError, OSError) as exc:
        msg = f"field {field!r}: {exc}"
        raise MappingError(msg, field=field) from None


def epoch_seconds(value: object, *, field: str) -> int:
    return epoch_micros(value, field=field) // 1_000_000


def epoch_millis(value: object, *, field: str) -> int:
    return epoch_micros(value, field=field) // 1000


def epoch_micros(value: object, *, field: str) -> int:
    # Integer arithmetic: float seconds lose microseconds at present-day epochs.
    delta = mapped_time(value, field=field) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso8601(value: object, *, field: str) -> str:
    """ISO 8601 in UTC with milliseconds (HubSpot's `occurredAt`, Intercom's dates)."""
    return format_timestamp(mapped_time(value, field=field))
