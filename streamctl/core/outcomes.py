"""What the pipeline decides about an event, stage by stage (SPEC §1).

These records flow from the pipeline to the store (which keeps every one of them),
to the delivery engine (which sends the `PENDING` ones) and to `preview`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from streamctl.core.events import Event


class Status(StrEnum):
    BLOCKED = "blocked"  # contract
    FUNCTION_ERROR = "function_error"  # function raised / timed out / returned garbage
    DROPPED = "dropped"  # function left the event out
    FILTERED = "filtered"  # no event type matched
    MAPPING_ERROR = "mapping_error"  # permanent, never retried
    DUPLICATE = "duplicate"  # messageId seen on this source within 24 h
    PENDING = "pending"  # queued for delivery
    RETRYING = "retrying"
    DELIVERED = "delivered"
    ARCHIVED = "archived"  # gave up: permanent error, max_attempts or max_age


class Stage(StrEnum):
    INGEST = "ingest"
    CONTRACT = "contract"
    FUNCTION = "function"
    FILTER = "filter"
    MAPPING = "mapping"
    DELIVERY = "delivery"


STAGE_OF: dict[Status, Stage] = {
    Status.BLOCKED: Stage.CONTRACT,
    Status.FUNCTION_ERROR: Stage.FUNCTION,
    Status.DROPPED: Stage.FUNCTION,
    Status.FILTERED: Stage.FILTER,
    Status.MAPPING_ERROR: Stage.MAPPING,
    Status.DUPLICATE: Stage.INGEST,
    Status.PENDING: Stage.DELIVERY,
    Status.RETRYING: Stage.DELIVERY,
    Status.DELIVERED: Stage.DELIVERY,
    Status.ARCHIVED: Stage.DELIVERY,
}

ViolationKind = Literal["undeclared_event", "undeclared_field", "schema"]


@dataclass(frozen=True)
class Violation:
    """One way an event breaks its contract; recorded whatever the enforcement."""

    kind: ViolationKind
    pointer: str  # JSON pointer into the event, e.g. /properties/total
    message: str
    contract: str
    event_name: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ContractResult:
    outcome: Literal["allowed", "blocked", "omitted"]
    event: Event  # the event to go on with (undeclared fields removed when omitted)
    violations: tuple[Violation, ...] = ()


@dataclass(slots=True)
class Decision:
    """What one sync decided about one event (one per matched event type with `match: all`).

    `status` is PENDING for a delivery to send; otherwise the reason it is not sent.
    Not frozen: the pipeline makes one per event and sync, and a frozen dataclass's
    __init__ takes twice as long (2.4 us against 1.1 us).
    """

    message_id: str
    sync: str
    status: Status
    event_type: str | None = None
    payload: dict[str, Any] | None = None  # the destination payload, when mapped
    error: str | None = None
    traceback: str | None = None
    user_key: str = ""
    event: Event | None = None  # the event as the sync saw it (after its function)
    # The messageId of the received event this one derives from: differs from
    # `message_id` when a function split an event or gave it a new id; None: the same.
    origin_message_id: str | None = None

    @property
    def stage(self) -> Stage:
        return STAGE_OF[self.status]


@dataclass
class EventResult:
    """Everything the pipeline decided about one received event."""

    message_id: str
    source: str
    event: Event
    contract: ContractResult | None = None
    decisions: list[Decision] = field(default_factory=list)
