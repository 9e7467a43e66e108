from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from streamctl.core.errors import EventError
from streamctl.core.timestamps import format_timestamp
from streamctl.sources.ndjson import parse_lines
from streamctl.sources.normalise import MAX_EVENT_BYTES, normalise

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def track(**extra):
    return {"type": "track", "event": "Signed Up", "userId": "u1", **extra}


def test_assigns_message_id_received_at_and_timestamp():
    event = normalise(track(), received_at=RECEIVED)
    assert uuid.UUID(event["messageId"]).version == 4
    assert event["receivedAt"] == "2026-01-02T03:04:05.678Z"
    assert event["timestamp"] == "2026-01-02T03:04:05.678Z"


def test_keeps_given_message_id_and_timestamp_and_does_not_mutate_input():
    original = track(messageId="m-1", timestamp="2025-12-31T23:59:59.000Z")
    event = normalise(original, received_at=RECEIVED)
    assert event["messageId"] == "m-1"
    assert event["timestamp"] == "2025-12-31T23:59:59.000Z"
    assert "receivedAt" not in original


def test_timestamp_corrects_the_device_clock_skew():
    # The device clock is 10 minutes fast: it says it sent at 12:10, for an event at 12:05.
    event = normalise(
        track(originalTimestamp="2026-01-02T12:05:00.000Z", sentAt="2026-01-02T12:10:00.000Z"),
        received_at=datetime(2026, 1, 2, 12, 0, 1, tzinfo=UTC),
    )
    assert event["timestamp"] == "2026-01-02T11:55:01.000Z"


def test_timestamp_is_original_timestamp_without_sent_at():
    event = normalise(track(originalTimestamp="2026-01-02T12:05:00+02:00"), received_at=RECEIVED)
    assert event["timestamp"] == "2026-01-02T10:05:00.000Z"


def test_bad_sent_at_is_refused_naming_the_field():
    with pytest.raises(
        EventError, match="sentAt is not an ISO 8601 timestamp of years 1-9999: 'yesterday'"
    ):
        normalise(
            track(originalTimestamp="2026-01-02T12:05:00Z", sentAt="yesterday"),
            received_at=RECEIVED,
        )


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"event": "x", "userId": "u"}, "missing 'type'"),
        ({"type": "tracking", "userId": "u"}, "unknown type 'tracking'"),
        ({"type": "track", "event": "x"}, "needs a userId or an anonymousId"),
        ({"type": "track", "userId": ""}, "needs a userId or an anonymousId"),
        ({"type": "track", "userId": "u", "messageId": "x" * 101}, "messageId is 101 characters"),
        ({"type": "track", "userId": "u", "messageId": ["a"]}, "messageId must be a string"),
    ],
)
def test_refusals_are_400_event_errors(event, message):
    with pytest.raises(EventError, match=message) as caught:
        normalise(event)
    assert caught.value.status_code == 400


def test_typed_endpoint_supplies_the_type():
    event = normalise({"event": "x", "anonymousId": "a1"}, call_type="track")
    assert event["type"] == "track"


def test_message_id_of_exactly_100_characters_is_kept():
    assert normalise(track(messageId="m" * 100))["messageId"] == "m" * 100


def test_batch_context_and_integrations_merge_with_event_keys_winning():
    batch = {
        "context": {"library": {"name": "analytics-python"}, "ip": "1.2.3.4"},
        "integrations": {"All": True},
    }
    event = normalise(track(context={"ip": "5.6.7.8"}), batch=batch)
    assert event["context"] == {"library": {"name": "analytics-python"}, "ip": "5.6.7.8"}
    assert event["integrations"] == {"All": True}


def test_too_large_event_names_message_id_index_and_size():
    event = track(messageId="big-1", properties={"blob": "x" * MAX_EVENT_BYTES})
    with pytest.raises(
        EventError,
        match=r"event 7 messageId 'big-1': event is \d+ bytes, over the 32768 byte limit",
    ):
        normalise(event, index=7)


@pytest.mark.parametrize("text_length", [None, 100, MAX_EVENT_BYTES // 5 + 1])
def test_the_size_is_measured_unless_the_text_it_came_from_was_short_enough(text_length):
    # Parsed text serialises to at most 5 times its length: a line of at most a fifth
    # of the limit cannot be over it, and is not measured (what the argument spares).
    event = track(messageId="big-2", properties={"blob": "x" * MAX_EVENT_BYTES})
    if text_length == 100:
        assert normalise(event, text_length=text_length)["messageId"] == "big-2"
    else:
        with pytest.raises(EventError, match="over the 32768 byte limit"):
            normalise(event, text_length=text_length)


def test_an_ndjson_line_over_the_limit_is_a_bad_line_with_its_number():
    big = orjson.dumps(track(messageId="big-3", properties={"blob": "x" * MAX_EVENT_BYTES}))
    chunk = parse_lines([orjson.dumps(track(messageId="ok")), big, b"{}"], first_line=10)
    assert [e["messageId"] for e in chunk.events] == ["ok"]
    too_large, no_type = chunk.bad
    assert (too_large.line, no_type.line) == (11, 12)
    assert "over the 32768 byte limit" in too_large.message


def test_non_object_event_is_refused():
    with pytest.raises(EventError, match="must be a JSON object, got list"):
        normalise([1, 2])  # type: ignore[arg-type]


def test_format_timestamp_treats_naive_as_utc():
    assert format_timestamp(datetime(2026, 5, 6, 7, 8, 9)) == "2026-05-06T07:08:09.000Z"


def test_values_json_cannot_hold_are_refused():
    with pytest.raises(EventError, match="cannot be stored as JSON"):
        normalise(track(properties={"n": 2**70}))


def test_batch_level_sent_at_corrects_the_clock_skew_as_sdks_send_it():
    received = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    # The device's clock is 1 h behind; it queued the event 5 s before sending the batch.
    event = {
        "type": "track",
        "userId": "u1",
        "event": "E",
        "originalTimestamp": "2026-01-01T11:00:00.000Z",
    }
    out = normalise(event, received_at=received, batch={"sentAt": "2026-01-01T11:00:05.000Z"})
    assert out["timestamp"] == "2026-01-01T12:00:05.000Z"
    # Without sentAt anywhere, the device's own clock is all there is.
    assert normalise(event, received_at=received)["timestamp"] == "2026-01-01T11:00:00.000Z"
