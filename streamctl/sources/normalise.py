"""Normalisation of Segment-spec events (SPEC §4), run on every ingested event.

    normalise({"type": "track", "event": "Signed Up", "userId": "u1"})
    # {"type": "track", "event": "Signed Up", "userId": "u1",
    #  "messageId": "3f1c...", "receivedAt": "2026-11-26T12:00:00.000Z",
    #  "timestamp": "2026-11-26T12:00:00.000Z"}

What it does, in order:

- the call type: `type` must be one of the Segment call types; a typed endpoint
  (`/v1/track`) passes `call_type`, which wins over the body;
- identity: `userId` or `anonymousId` must be present and not empty;
- `messageId` is assigned (uuid4) when missing, and may be at most 100 characters;
- `receivedAt` is set (ISO 8601 UTC with milliseconds and a `Z`);
- `timestamp`, when absent, is `receivedAt - (sentAt - originalTimestamp)`: the
  device's clock skew is removed; without `sentAt` it is `originalTimestamp`, and
  without either it is `receivedAt`;
- batch-level `context` and `integrations` are merged into each event (the event's
  own keys win);
- an event larger than 32 KB (serialised) is refused.

Every refusal is an `EventError` (HTTP 400) naming the event by messageId or index.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from streamctl.core.errors import EventError
from streamctl.core.events import CALL_TYPES, Event
from streamctl.core.timestamps import format_timestamp, parse_iso

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_MESSAGE_ID = 100

_CALL_TYPES = frozenset(CALL_TYPES)
_MERGED_BATCH_KEYS = ("context", "integrations")
_NO_ID = (None, "")
# How much longer than the JSON text it was parsed from an event can serialise: a
# number grows the most, `1e15` is written `1000000000000000.0` (4.5 times), and the
# text around it in an object (a key, a comma) only lowers the ratio.
_MAX_GROWTH = 5


def normalise(
    event: Event,
    *,
    received_at: datetime | None = None,
    batch: Mapping[str, Any] | None = None,
    call_type: str | None = None,
    index: int | None = None,
    text_length: int | None = None,
) -> Event:
    """The event ready for the pipeline (a new dict); raises EventError (400) naming what is wrong.

    `received_at` defaults to now; `batch` is the enclosing `/v1/batch` body (its
    `context` and `integrations` are merged in); `call_type` is the type implied by a
    typed endpoint; `index` is the event's position in its batch, for messages;
    `text_length`: the length of the JSON text the event was parsed from, when it was
    parsed alone (an NDJSON line), which can spare measuring its size.
    """
    if not isinstance(event, dict):
        msg = f"{_which(None, index)}: an event must be a JSON object, got {type(event).__name__}"
        raise EventError(msg)
    if text_length is None or text_length * _MAX_GROWTH > MAX_EVENT_BYTES:
        _check_size(event, index)

    out = dict(event)
    # The checks inline their common case (this runs for every ingested event); the
    # helpers handle the rest and word the refusals.
    kind = out.get("type")
    if call_type is not None or not (type(kind) is str and kind in _CALL_TYPES):
        out["type"] = _call_type(out, call_type, index)
    if out.get("userId") in _NO_ID and out.get("anonymousId") in _NO_ID:
        _check_identity(out, index)
    message_id = out.get("messageId")
    if type(message_id) is not str or not 0 < len(message_id) <= MAX_MESSAGE_ID:
        out["messageId"] = _message_id(message_id, index)
    if batch:
        _merge_batch(out, batch)

    moment = received_at if received_at is not None else datetime.now(UTC)
    out["receivedAt"] = received = _received_text(moment)
    if out.get("timestamp") is None:
        out["timestamp"] = _corrected_timestamp(out, received, moment)
    return out


def _check_size(event: Event, index: int | None) -> None:
    try:
        size = len(orjson.dumps(event))
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        msg = f"{_which(event.get('messageId'), index)}: event cannot be stored as JSON: {exc}"
        raise EventError(msg) from None
    if size > MAX_EVENT_BYTES:
        which = _which(event.get("messageId"), index)
        msg = f"{which}: event is {size} bytes, over the {MAX_EVENT_BYTES} byte limit"
        raise EventError(msg)


def _which(message_id: Any, index: int | None) -> str:
    parts = []
    if index is not None:
        parts.append(f"event {index}")
    if isinstance(message_id, str | int) and not isinstance(message_id, bool):
        parts.append(f"messageId {str(message_id)[:MAX_MESSAGE_ID]!r}")
    return " ".join(parts) or "event"


def _call_type(event: Event, call_type: str | None, index: int | None) -> str:
    if call_type is not None:
        # A typed endpoint (/v1/track) decides the type, as Segment's does.
        return call_type
    kind = event.get("type")
    if isinstance(kind, str) and kind in _CALL_TYPES:  # a dict or list is not hashable
        return kind
    which = _which(event.get("messageId"), index)
    if kind is None:
        msg = f"{which}: missing 'type' (one of {', '.join(CALL_TYPES)})"
    else:
        msg = f"{which}: unknown type {kind!r} (one of {', '.join(CALL_TYPES)})"
    raise EventError(msg)


def _check_identity(event: Event, index: int | None) -> None:
    if event.get("userId") in _NO_ID and event.get("anonymousId") in _NO_ID:
        msg = f"{_which(event.get('messageId'), index)}: needs a userId or an anonymousId"
        raise EventError(msg)


def _message_id(value: Any, index: int | None) -> str:
    if value is None or value == "":
        return str(uuid.uuid4())
    if isinstance(value, bool) or not isinstance(value, str | int):
        msg = f"{_which(None, index)}: messageId must be a string, got {type(value).__name__}"
        raise EventError(msg)
    text = str(value)
    if len(text) > MAX_MESSAGE_ID:
        msg = (
            f"{_which(text, index)}: messageId is {len(text)} characters, "
            f"over the {MAX_MESSAGE_ID} character limit"
        )
        raise EventError(msg)
    return text


def _merge_batch(event: Event, batch: Mapping[str, Any]) -> None:
    for key in _MERGED_BATCH_KEYS:
        shared = batch.get(key)
        if not isinstance(shared, dict) or not shared:
            continue
        own = event.get(key)
        if own is None:
            event[key] = dict(shared)
        elif isinstance(own, dict):
            event[key] = {**shared, **own}
    # Segment's and RudderStack's SDKs stamp `sentAt` once on the batch, not on each event;
    # the clock-skew correction needs it.
    if event.get("sentAt") is None and batch.get("sentAt") is not None:
        event["sentAt"] = batch["sentAt"]


# The listener stamps a whole batch with one `received_at`: format it once.
_last_received: tuple[datetime | None, str] = (None, "")


def _received_text(received_at: datetime) -> str:
    global _last_received
    cached_moment, cached_text = _last_received
    if cached_moment is received_at:
        return cached_text
    text = format_timestamp(received_at)
    _last_received = (received_at, text)
    return text


def _corrected_timestamp(event: Event, received: str, received_at: datetime) -> str:
    original_text = event.get("originalTimestamp")
    if original_text is None:
        return received
    original = _parse_field(event, "originalTimestamp")
    if event.get("sentAt") is None:
        return format_timestamp(original)
    sent = _parse_field(event, "sentAt")
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    return format_timestamp(received_at - (sent - original))


def _parse_field(event: Event, key: str) -> datetime:
    moment = parse_iso(event.get(key))
    if moment is None:
        msg = f"{_which(event.get('messageId'), None)}: {key} is not an ISO 8601 timestamp: {event.get(key)!r}"
        raise EventError(msg)
    return moment
