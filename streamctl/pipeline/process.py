"""One batch of events through contract -> function -> event types -> mappings, per sync.

TODO(issue 3): implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamctl.config.model import Project
from streamctl.destinations.base import Destination
from streamctl.events import Event
from streamctl.pipeline.outcomes import EventResult


class Pipeline:
    """The compiled pipeline of a project. Pure: it decides, it never sends nor stores."""

    def __init__(self, project: Project, destinations: Mapping[str, Destination]) -> None:
        self.project = project
        self.destinations = destinations

    def process(
        self, source: str, events: Sequence[Event], syncs: Sequence[str] | None = None
    ) -> list[EventResult]:
        """Decide every sync's outcome for each event (normalised already). `syncs` narrows to those names."""
        raise NotImplementedError
