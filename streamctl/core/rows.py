"""Pipeline results flattened into store rows: cheap to pickle, cheap to insert.

    encoded = encode_results("web", pipeline.process("web", events))
    fresh, duplicates = encoded.split_duplicates(store.seen_message_ids("web", encoded.message_ids))
    store.record_encoded(fresh, destinations=..., duplicates=duplicates)

`replay` runs the pipeline in worker processes, which send these back to the one
process that owns the store: tuples of strings and numbers (JSON already
serialised), no Decision objects, no event dicts. Indexes refer to `events`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamctl.core.outcomes import STAGE_OF, EventResult, Status

# (message_id, event JSON, contract outcome)
EventRow = tuple[str, str, str | None]
# (event index, message_id, sync, event_type, status, stage, error, user_key, payload JSON)
DecisionRow = tuple[int, str, str, str | None, str, str, str | None, str, str | None]
# (event index, message_id, contract, version, event_name, kind, pointer, message, outcome)
ViolationRow = tuple[int, str, str, str | None, str | None, str, str, str, str]
# (event index, message_id, sync, error, traceback)
FunctionErrorRow = tuple[int, str, str, str | None, str | None]
# (source, message_id, event JSON) of an event received again within 24 h
DuplicateRow = tuple[str, str, str]
# (delivery id, sync, event_type, message_id, user_key, payload JSON) of a PENDING decision
PendingRow = tuple[int, str, str, str, str, str]

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
        return [row[0] for row in self.events]

    def pending_rows(self, first_delivery_id: int) -> list[PendingRow]:
        """The PENDING decisions as compact rows (what replay's workers send back:
        strings pickle far cheaper than payload dicts)."""
        return [
            (first_delivery_id + i, d[2], d[3] or "", d[1], d[7], d[8] or "{}")
            for i, d in enumerate(self.decisions)
            if d[4] == PENDING
        ]

    def split_duplicates(self, seen: set[str]) -> tuple[EncodedResults, list[DuplicateRow]]:
        """These results without events already `seen` (or seen earlier in this batch),
        and those events as duplicate rows."""
        keep: list[int] = []
        duplicates: list[DuplicateRow] = []
        this_batch: set[str] = set()
        for index, (message_id, payload, _) in enumerate(self.events):
            if message_id in seen or message_id in this_batch:
                duplicates.append((self.source, message_id, payload))
            else:
                this_batch.add(message_id)
                keep.append(index)
        if not duplicates:
            return self, []
        return self._only(keep), duplicates

    def _only(self, keep: list[int]) -> EncodedResults:
        renumber = {old: new for new, old in enumerate(keep)}
        kept = EncodedResults(self.source, [self.events[i] for i in keep])
        payloads = iter(self.pending_payloads) if self.pending_payloads is not None else None
        kept_payloads: list[dict[str, Any]] = []
        for row in self.decisions:
            payload = next(payloads) if payloads is not None and row[4] == PENDING else None
            new = renumber.get(row[0])
            if new is None:
                continue
            kept.decisions.append((new, *row[1:]))
            if payload is not None:
                kept_payloads.append(payload)
        kept.violations = [(renumber[r[0]], *r[1:]) for r in self.violations if r[0] in renumber]
        kept.function_errors = [
            (renumber[r[0]], *r[1:]) for r in self.function_errors if r[0] in renumber
        ]
        kept.pending_payloads = kept_payloads if payloads is not None else None
        return kept


def encode_results(
    source: str, results: Sequence[EventResult], keep_payloads: bool = True
) -> EncodedResults:
    """Flatten pipeline results; `keep_payloads=False` in worker processes (the
    payload JSON travels, the objects are rebuilt by the store's process)."""
    dumps = orjson.dumps
    encoded = EncodedResults(source, pending_payloads=[] if keep_payloads else None)
    events, decisions = encoded.events, encoded.decisions
    payloads = encoded.pending_payloads
    pending = Status.PENDING
    function_error = Status.FUNCTION_ERROR
    texts = _STATUS_AND_STAGE
    for index, result in enumerate(results):
        contract = result.contract
        events.append(
            (
                result.message_id,
                dumps(result.event).decode(),
                contract.outcome if contract else None,
            )
        )
        if contract is not None and contract.violations:
            outcome = contract.outcome
            encoded.violations.extend(
                (index, result.message_id, v.contract, v.version, v.event_name, v.kind,
                 v.pointer, v.message, outcome)
                for v in contract.violations
            )  # fmt: skip
        for d in result.decisions:
            status = d.status
            payload = d.payload
            decisions.append(
                (index, d.message_id, d.sync, d.event_type, *texts[status], d.error, d.user_key,
                 None if payload is None else dumps(payload).decode())
            )  # fmt: skip
            if status is pending:
                if payloads is not None:
                    payloads.append(payload or {})
            elif status is function_error:
                encoded.function_errors.append((index, d.message_id, d.sync, d.error, d.traceback))
    return encoded
