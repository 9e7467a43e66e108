"""What an event is inside streamctl.

An event is a Segment-spec message as a plain dict (orjson in, orjson out): `type`,
`messageId`, `userId`/`anonymousId`, `event`, `properties`, `traits`, `context`,
`timestamp`, `receivedAt`, ... Plain dicts keep the hot path free of conversions.
"""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]

CALL_TYPES = ("track", "identify", "page", "screen", "group", "alias")


def user_key(event: Event) -> str:
    """The identity used for `ordering: per_user` and for destinations' identity needs."""
    return str(event.get("userId") or event.get("anonymousId") or "")
