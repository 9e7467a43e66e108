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
- `timestamp`, `originalTimestamp` and `sentAt`, when present, must be ISO 8601
  strings for a moment of years 1 to 9999 in UTC (what Python's datetime holds);
  anything else (a number, `0001-01-01T00:00:00+01:00`, year 99999) is refused
  naming the field, never an OverflowError;
- `timestamp`, when absent, is `receivedAt - (sentAt - originalTimestamp)`: the
  device's clock skew is removed; without `sentAt` it is `originalTimestamp`, and
  without either it is `receivedAt`; a correction that lands outside the range is
  refused naming `originalTimestamp`;
- batch-level `context` and `integrations` are merged into each event (the event's
  own keys win);
- an event larger than 32 KB (serialised) is refused, measured as stored: with the
  batch's context merged in. The merge is shallow (merged events share the batch's
  values), and the merged size is only computed when the event's own size plus the
  batch's shared size could pass the limit, so a batch-level context costs one
  serialisation per batch, not one per event.

Every refusal is an `EventError` (HTTP 400) naming the event by messageId or index.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
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
TIMESTAMP_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
# The most a merged `sentAt` adds to an event: `,"sentAt":"` and the longest ISO 8601
# text fromisoformat accepts (with microseconds and an offset with seconds) is under it.
_SENT_AT_BYTES = 64
# Years where an offset may carry a moment out of datetime's range in UTC.
_EDGE_YEARS = (1, 9999)
_NO_ID = (None, "")
# How much longer than the JSON text it was parsed from an event can serialise: a
# number grows the most, `1e15` is written `1000000000000000.0` (4.5 times), and the
# text around it in an object (a key, a comma) only lowers the ratio.
_MAX_GROWTH = 5


@dataclass(frozen=True)
class BatchShared:
    """What a batch body gives each of its events: `context`, `integrations` and `sentAt`.

    `size` is the serialised size of the shared `context` and `integrations`: merging
    adds at most that (plus a `sentAt`) to an event, so events whose own size leaves
    that much room are not measured again.
    """

    merged: Mapping[str, dict[str, Any]]
    sent_at: Any
    size: int
    gives: bool = False  # anything to give an event (a field, not __bool__: the hot path)

    @classmethod
    def of(cls, batch: Mapping[str, Any]) -> BatchShared:
        merged = {k: v for k in _MERGED_BATCH_KEYS if isinstance(v := batch.get(k), dict) and v}
        try:
            size = len(orjson.dumps(merged)) if merged else 0
        except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
            msg = f"the batch's context or integrations cannot be stored as JSON: {exc}"
            raise EventError(msg) from None
        sent_at = batch.get("sentAt")
        return cls(merged, sent_at, size, bool(merged) or sent_at is not None)


_NOTHING_SHARED = BatchShared({}, None, 0)


def normalise(
    event: Event,
    *,
    received_at: datetime | None = None,
    batch: Mapping[str, Any] | BatchShared | None = None,
    call_type: str | None = None,
    index: int | None = None,
    text_length: int | None = None,
) -> Event:
    """The event ready for the pipeline (a new dict); raises EventError (400) naming what is wrong.

    `received_at` defaults to now; `batch` is the enclosing `/v1/batch` body (its
    `context` and `integrations` are merged in), or its `BatchShared` when the caller
    normalises many events of one batch; `call_type` is the type implied by a
    typed endpoint; `index` is the event's position in its batch, for messages;
    `text_length`: the length of the JSON text the event was parsed from, when it was
    parsed alone (an NDJSON line), which can spare measuring its size.
    """
    if not isinstance(event, dict):
        msg = f"{_which(None, index)}: an event must be a JSON object, got {type(event).__name__}"
        raise EventError(msg)
    if batch is None:
        shared = _NOTHING_SHARED
    else:
        shared = batch if isinstance(batch, BatchShared) else BatchShared.of(batch)
    # The event's size, or a bound of it from its text: measured only when it could matter.
    size = None if text_length is None else text_length * _MAX_GROWTH
    if size is None or size + shared.size > MAX_EVENT_BYTES:
        size = _check_size(event, index)

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
    if shared.gives:
        _merge_batch(out, shared)
        if size + shared.size + _SENT_AT_BYTES > MAX_EVENT_BYTES:
            _check_size(out, index, merged=True)  # exact, now that it could be over

    moment = received_at if received_at is not None else datetime.now(UTC)
    out["receivedAt"] = received = _received_text(moment)
    stamp = out.get("timestamp")
    if stamp is None:
        out["timestamp"] = _corrected_timestamp(out, received, moment, index)
        return out
    # The common case inline (a valid `timestamp` alone); the helpers word refusals.
    try:
        valid = datetime.fromisoformat(stamp).year not in _EDGE_YEARS
    except (TypeError, ValueError):
        valid = False
    if not valid or "originalTimestamp" in out or "sentAt" in out:
        for key in TIMESTAMP_FIELDS:
            if out.get(key) is not None:
                _parse_field(out, key, index)
    return out


def _check_size(event: Event, index: int | None, *, merged: bool = False) -> int:
    """The event's serialised size; EventError when over the limit or not storable."""
    try:
        size = len(orjson.dumps(event))
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        msg = f"{_which(event.get('messageId'), index)}: event cannot be stored as JSON: {exc}"
        raise EventError(msg) from None
    if size > MAX_EVENT_BYTES:
        which = _which(event.get("messageId"), index)
        what = "with the batch's context and integrations merged in, " if merged else ""
        msg = f"{which}: {what}event is {size} bytes, over the {MAX_EVENT_BYTES} byte limit"
        raise EventError(msg)
    return size


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


def _merge_batch(event: Event, batch: BatchShared) -> None:
    for key, shared in batch.merged.items():
        own = event.get(key)
        if own is None:
            event[key] = dict(shared)
        elif isinstance(own, dict):
            event[key] = {**shared, **own}
    # Segment's and RudderStack's SDKs stamp `sentAt` once on the batch, not on each event;
    # the clock-skew correction needs it.
    if event.get("sentAt") is None and batch.sent_at is not None:
        event["sentAt"] = batch.sent_at


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


def _corrected_timestamp(
    event: Event, received: str, received_at: datetime, index: int | None
) -> str:
    original_text = event.get("originalTimestamp")
    if original_text is None:
        if event.get("sentAt") is not None:
            _parse_field(event, "sentAt", index)  # unused, but still a timestamp
        return received
    original = _parse_field(event, "originalTimestamp", index)
    if event.get("sentAt") is None:
        return format_timestamp(original)
    sent = _parse_field(event, "sentAt", index)
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    try:
        return format_timestamp(received_at - (sent - original))
    except OverflowError:
        msg = (
            f"{_which(event.get('messageId'), index)}: originalTimestamp corrected for the "
            f"device's clock (receivedAt - (sentAt - originalTimestamp)) is outside years 1-9999"
        )
        raise EventError(msg) from None


def _parse_field(event: Event, key: str, index: int | None) -> datetime:
    value = event.get(key)
    moment = parse_iso(value)
    if moment is None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = (
            f"{_which(event.get('messageId'), index)}: {key} is not an ISO 8601 timestamp "
            f"of years 1-9999: {shown}"
        )
        raise EventError(msg)
    return moment
