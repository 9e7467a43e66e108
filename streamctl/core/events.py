"""What an event is inside streamctl.

An event is a Segment-spec message as a plain dict (orjson in, orjson out): `type`,
`messageId`, `userId`/`anonymousId`, `event`, `properties`, `traits`, `context`,
`timestamp`, `receivedAt`, ... Plain dicts keep the hot path free of conversions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]
Payload = dict[str, Any]  # what a destination sends for one event (JSON object)

CALL_TYPES = ("track", "identify", "page", "screen", "group", "alias")


def user_key(event: Event) -> str:
    """The identity used for `ordering: per_user` and for destinations' identity needs."""
    return str(event.get("userId") or event.get("anonymousId") or "")


@dataclass(frozen=True)
class MappedEvent:
    """The output of a sync's mappings for one event: the three sections of SPEC §2."""

    required: dict[str, Any]
    user: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
