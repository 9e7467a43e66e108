"""normalise's inlined common cases refuse and repair exactly like its helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamctl.core.errors import EventError
from streamctl.sources.normalise import normalise

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("kind", [{}, [], 3, None, "Track"])
def test_a_type_that_is_not_a_call_type_is_a_400_even_when_unhashable(kind):
    with pytest.raises(EventError, match="type"):
        normalise({"type": kind, "userId": "u"}, received_at=NOW, index=0)


@pytest.mark.parametrize(("given", "kept"), [(7, "7"), ("m" * 100, "m" * 100), ("abc", "abc")])
def test_message_ids_are_kept_as_text(given, kept):
    assert (
        normalise({"type": "track", "userId": "u", "messageId": given}, received_at=NOW)[
            "messageId"
        ]
        == kept
    )


@pytest.mark.parametrize("given", [None, ""])
def test_a_missing_message_id_is_assigned(given):
    out = normalise({"type": "track", "userId": "u", "messageId": given}, received_at=NOW)
    assert len(out["messageId"]) == 36


def test_a_message_id_over_100_characters_is_refused():
    with pytest.raises(EventError, match="100 character"):
        normalise({"type": "track", "userId": "u", "messageId": "m" * 101}, received_at=NOW)


@pytest.mark.parametrize("ids", [{}, {"userId": ""}, {"userId": None, "anonymousId": ""}])
def test_no_identity_is_refused(ids):
    with pytest.raises(EventError, match="userId or an anonymousId"):
        normalise({"type": "track", **ids}, received_at=NOW)


def test_a_typed_endpoint_wins_and_received_at_follows_each_moment():
    later = datetime(2026, 11, 26, 12, 0, 1, tzinfo=UTC)
    first = normalise({"type": "identify", "userId": "u"}, received_at=NOW, call_type="track")
    second = normalise({"type": "track", "userId": "u"}, received_at=later)
    assert first["type"] == "track"
    assert first["receivedAt"] == "2026-11-26T12:00:00.000Z"
    assert second["receivedAt"] == "2026-11-26T12:00:01.000Z"
