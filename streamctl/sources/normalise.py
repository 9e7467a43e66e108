"""Normalisation of Segment-spec events (SPEC §4): messageId, receivedAt, timestamp skew
correction, batch-level context/integrations merge, size limits.

TODO(issue 3): implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streamctl.events import Event

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_MESSAGE_ID = 100


def normalise(
    event: Event, *, received_at: datetime | None = None, batch: Mapping[str, Any] | None = None
) -> Event:
    """The event ready for the pipeline; raises EventError (400) naming what is wrong."""
    raise NotImplementedError
