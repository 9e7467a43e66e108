"""Pipeline results flattened into store rows: cheap to pickle, cheap to insert.

    encoded = encode_results("web", pipeline.process("web", events))
    fresh, duplicates = encoded.split_duplicates(store.seen_message_ids("web", encoded.message_ids))
    store.record_encoded(fresh, destinations=..., duplicates=duplicates)
    duplicates_among(["a", "b", "a"], seen={"b"})   # [1, 2]: the one duplicate check

`replay` runs the pipeline in worker processes, which record these and send
`PendingRow`s back to the process that delivers: tuples of strings and numbers
(JSON already serialised), no Decision objects, no event dicts. Indexes refer to
`events`. One decision has these shapes, each named: `Decision` (the pipeline) ->
`DecisionRow` (recorded) -> `PendingRow` (sent on, unpacked) -> `PendingDelivery` (in a lane)
-> `AttemptRecord` (its outcome).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from streamctl.core.outcomes import STAGE_OF, EventResult, Status


class EventRow(NamedTuple):
    """An event as recorded: `events` of `EncodedResults` (decisions refer to its index)."""

    message_id: str
    event_json: str
    contract_outcome: str | None


class DecisionRow(NamedTuple):
    """One `Decision`, flattened: a row of `deliveries` once recorded."""

    event_index: int
    message_id: str
    sync: str
    event_type: str | None
    status: str
    stage: str
    error: str | None
    user_key: str
    payload_json: str | None


class ViolationRow(NamedTuple):
    """One contract violation of an event (`violations`)."""

    event_index: int
    message_id: str
    contract: str
    version: str | None
    event_name: str | None
    kind: str
    pointer: str
    message: str
    outcome: str


class FunctionErrorRow(NamedTuple):
    """An event function's failure on an event (`function_errors`)."""

    event_index: int
    message_id: str
    sync: str
    error: str | None
    traceback: str | None


class DuplicateRow(NamedTuple):
    """An event received again within 24 h: recorded as a duplicate, not processed."""

    source: str
    message_id: str
    event_json: str


# A recorded PENDING decision, compact for the pipe from replay's workers (strings pickle
# far cheaper than payload dicts): (delivery id, sync, event_type, message_id, user_key,
# payload JSON). A plain tuple, not a NamedTuple: those pickle and unpickle about six
# times slower (8,000 rows: 45 ms against 7 ms), and the process that unpickles them
# is the one that delivers. Read by unpacking (`pending_deliveries`), never by index.
PendingRow = tuple[int, str, str, str, str, str]


def duplicates_among(message_ids: Sequence[str], seen: Collection[str]) -> list[int]:
    """The indexes of the ids already `seen` (received within 24 h), or seen earlier in
    this batch: SPEC §4's duplicate check, the one every caller uses."""
    duplicates: list[int] = []
    this_batch: set[str] = set()
    for index, message_id in enumerate(message_ids):
        if message_id in seen or message_id in this_batch:
            duplicates.append(index)
        else:
            this_batch.add(message_id)
    return duplicates


PENDING = Status.PENDING.value
# A status's text and its stage's, looked up once here: an enum's `.value` is a
# property, and encoding reads two per decision.
_STATUS_AND_STAGE = {status: (status.value, STAGE_OF[status].value) for status in Status}


@dataclass
class EncodedResults:
    source: str
    events: list[EventRow] = field(default_factory=list)
    decisions: list[DecisionRow] = field(default_factory=list)
    violations: list[ViolationRow] = field(default_factory=list)
    function_errors: list[FunctionErrorRow] = field(default_factory=list)
    # The payload objects of the PENDING decisions, in order, when they are at hand
    # (same process); None: parse them from the decisions' payload JSON.
    pending_payloads: list[dict[str, Any]] | None = None

    @property
    def message_ids(self) -> list[str]:
        return [row.message_id for row in self.events]

    def status_counts(self) -> Counter[tuple[str, str]]:
        """Decisions per (sync, status)."""
        return Counter((d.sync, d.status) for d in self.decisions)

    def pending_rows(self, first_delivery_id: int) -> list[PendingRow]:
        """The PENDING decisions as compact rows (what replay's workers send back)."""
        return [
            (first_delivery_id + i, d.sync, d.event_type or "", d.message_id, d.user_key,
             d.payload_json or "{}")
            for i, d in enumerate(self.decisions)
            if d.status == PENDING
        ]  # fmt: skip

    def split_duplicates(self, seen: Collection[str]) -> tuple[EncodedResults, list[DuplicateRow]]:
        """These results without events already `seen` (or seen earlier in this batch),
        and those events as duplicate rows."""
        found = duplicates_among(self.message_ids, seen)
        if not found:
            return self, []
        events = self.events
        duplicates = [DuplicateRow(self.source, *events[i][:2]) for i in found]
        dropped = set(found)
        return self._only([i for i in range(len(events)) if i not in dropped]), duplicates

    def _only(self, keep: list[int]) -> EncodedResults:
        renumber = {old: new for new, old in enumerate(keep)}
        kept = EncodedResults(self.source, [self.events[i] for i in keep])
        payloads = iter(self.pending_payloads) if self.pending_payloads is not None else None
        kept_payloads: list[dict[str, Any]] = []
        for row in self.decisions:
            payload = next(payloads) if payloads is not None and row.status == PENDING else None
            new = renumber.get(row.event_index)
            if new is None:
                continue
            kept.decisions.append(row._replace(event_index=new))
            if payload is not None:
                kept_payloads.append(payload)
        kept.violations = [
            r._replace(event_index=renumber[r.event_index])
            for r in self.violations
            if r.event_index in renumber
        ]
        kept.function_errors = [
            r._replace(event_index=renumber[r.event_index])
            for r in self.function_errors
            if r.event_index in renumber
        ]
        kept.pending_payloads = kept_payloads if payloads is not None else None
        return kept


def encode_results(
    source: str, results: Sequence[EventResult], keep_payloads: bool = True
) -> EncodedResults:
    """Flatten pipeline results; `keep_payloads=False` in worker processes (the
    payload JSON travels, the objects are rebuilt by the store's process)."""
    dumps = orjson.dumps
    # tuple.__new__ builds the named rows without the NamedTuple's Python-level __new__:
    # a third of its cost, paid for every event and decision.
    new = tuple.__new__
    encoded = EncodedResults(source, pending_payloads=[] if keep_payloads else None)
    events, decisions = encoded.events, encoded.decisions
    payloads = encoded.pending_payloads
    pending = Status.PENDING
    function_error = Status.FUNCTION_ERROR
    texts = _STATUS_AND_STAGE
    for index, result in enumerate(results):
        contract = result.contract
        events.append(
            new(
                EventRow,
                (
                    result.message_id,
                    dumps(result.event).decode(),
                    contract.outcome if contract else None,
                ),
            )
        )
        if contract is not None and contract.violations:
            outcome = contract.outcome
            encoded.violations.extend(
                ViolationRow(index, result.message_id, v.contract, v.version, v.event_name,
                             v.kind, v.pointer, v.message, outcome)
                for v in contract.violations
            )  # fmt: skip
        for d in result.decisions:
            status = d.status
            payload = d.payload
            decisions.append(
                new(DecisionRow, (index, d.message_id, d.sync, d.event_type, *texts[status], d.error,
                                  d.user_key, None if payload is None else dumps(payload).decode()))
            )  # fmt: skip
            if status is pending:
                if payloads is not None:
                    payloads.append(payload or {})
            elif status is function_error:
                encoded.function_errors.append(
                    FunctionErrorRow(index, d.message_id, d.sync, d.error, d.traceback)
                )
    return encoded


@dataclass(slots=True)
class PendingDelivery:
    """A delivery the engine still has to send (status pending or retrying).

    Mutable on purpose: the engine updates `attempts` and `next_attempt_at` as it
    goes, and creates hundreds of thousands of these per second in replay.
    """

    id: int
    sync: str
    event_type: str
    message_id: str
    user_key: str
    # The payload object, or its JSON text as read back from the store or sent by a
    # replay worker: text is parsed only for a destination that reads payloads
    # (`Destination.embeds_payloads`), so replay does not decode and re-encode each one.
    payload: dict[str, Any] | str
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    first_attempt_at: float | None = None


@dataclass(slots=True)
class AttemptRecord:
    """One attempt made for deliveries of one sync, and the state it leaves each in.

    The items of a batch that got the same answer and are left in the same state share
    one record (a whole batch, usually): the engine and the store then handle a batch's
    hundred deliveries as one object, not a hundred."""

    delivery_ids: list[int]
    sync: str
    destination: str
    at: float  # when the request was sent
    outcome: str  # delivered | retry | failed (streamctl.destinations.base.ItemStatus)
    status_code: int | None
    latency_ms: float
    error: str | None
    response: str | None
    retry_after: float | None
    new_status: Status  # DELIVERED, RETRYING or ARCHIVED
    attempts: int  # each delivery's attempt count including this one
    next_attempt_at: float | None  # when RETRYING
    first_attempt_at: float


@dataclass(frozen=True)
class RecordedResults:
    """What `record_results` wrote: the deliveries to hand to the engine, by sync."""

    pending: list[PendingDelivery]
    events: int
    duplicates: int
    first_delivery_id: int  # the deliveries written have ids first..first+len(decisions)-1
    encoded: EncodedResults  # what was recorded, duplicates left out


def pending_deliveries(rows: Iterable[PendingRow], created_at: float) -> list[PendingDelivery]:
    """The engine's deliveries of PENDING decisions recorded at `created_at`."""
    return [
        PendingDelivery(delivery_id, sync, event_type, message_id, user_key, payload_json,
                        created_at, 0, created_at)
        for delivery_id, sync, event_type, message_id, user_key, payload_json in rows
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class RejectedInput:
    """Input a source could not take as an event (not JSON, not an object, not a valid
    event), where it came from and why: `errors` lists it (id `r<N>`, stage `source`)."""

    source: str
    origin: str  # where it was read: `TOPIC/PARTITION@OFFSET` for a Kafka message
    reason: str
    excerpt: str  # the input's first bytes, as text (REJECTED_EXCERPT at most)
    at: float  # Unix seconds


REJECTED_EXCERPT = 1024  # characters of a rejected input kept to look at


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """How far a consumer group is behind on one partition of a source's topic."""

    source: str
    topic: str
    partition: int
    end_offset: int  # the high watermark: the offset the next message written will get
    committed: int  # the next offset the group reads: everything before it is stored
    updated_at: float  # Unix seconds

    @property
    def lag(self) -> int:
        return max(0, self.end_offset - self.committed)

    @property
    def bus_group(self) -> str | None:
        """The consumer group, for a row of the bus workers' lag (named `bus:GROUP`)."""
        return self.source.removeprefix(BUS_LAG) if self.source.startswith(BUS_LAG) else None


BUS_LAG = "bus:"  # the name of the bus workers' lag rows: bus:GROUP (a source's: its name)


def bus_lag_name(group: str) -> str:
    return BUS_LAG + group
