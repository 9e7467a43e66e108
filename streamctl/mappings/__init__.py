"""Field mappings: `field`, `static`, `template`, `array`, `object` (SPEC §2 "Mapping values").

    mapping = compile_mapping(spec, sync=SyncVars("s", "web", "braze"), event_type=spec_of_type)
    mapping.apply(event)  # -> MappedEvent, raises MappingError naming the field and value

TODO(issue 3): implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamctl.destinations.base import EventTypeSpec, MappedEvent
from streamctl.events import Event


@dataclass(frozen=True)
class SyncVars:
    """The `sync` variable of templates."""

    name: str
    source: str
    destination: str


class CompiledMapping:
    def apply(self, event: Event) -> MappedEvent:
        raise NotImplementedError


def compile_mapping(
    spec: Mapping[str, Any], *, sync: SyncVars, event_type: EventTypeSpec | None
) -> CompiledMapping:
    """Compile a `mappings:` block (required / user / properties); raises SpecError with the node path."""
    raise NotImplementedError
