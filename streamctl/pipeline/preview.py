"""One event through the pipeline without delivering: what `streamctl preview` shows.

    report = preview_event(project, destinations, event, syncs=["purchases-to-braze"])
    report.as_json()   # SPEC §3 `preview --json`, secrets redacted

Each sync's part says what its function did, which event types matched, the payload
and the exact request the destination would send for it, and the sync's outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from streamctl.config.secrets import redact_data, secret_strings
from streamctl.core.errors import StreamctlError
from streamctl.core.events import Event
from streamctl.core.model import Project
from streamctl.core.outcomes import ContractResult, Decision, Status, Violation
from streamctl.destinations.base import Destination, HttpRequest
from streamctl.functions import display_path
from streamctl.pipeline.process import Pipeline
from streamctl.sources.normalise import normalise

# Which decision speaks for a sync that sent nothing, most telling first.
OUTCOME_ORDER = (
    Status.BLOCKED,
    Status.FUNCTION_ERROR,
    Status.MAPPING_ERROR,
    Status.FILTERED,
    Status.DROPPED,
)
OUTCOME_NAMES = {Status.PENDING: "delivered"}


@dataclass(frozen=True)
class DeliveryPreview:
    event_type: str
    payload: dict[str, Any]
    request: HttpRequest | None
    message_id: str
    error: str | None = None  # the destination could not build the request


@dataclass(frozen=True)
class SyncPreview:
    sync: str
    destination: str
    function: str | None  # the function file, when the sync has one
    decisions: tuple[Decision, ...]
    deliveries: tuple[DeliveryPreview, ...]

    @property
    def outcome(self) -> str:
        if self.deliveries:
            return "delivered"
        statuses = {d.status for d in self.decisions}
        for status in OUTCOME_ORDER:
            if status in statuses:
                return status.value
        return "filtered"

    @property
    def error(self) -> str | None:
        for decision in self.decisions:
            if decision.error and decision.status is not Status.FILTERED:
                return decision.error
        for delivery in self.deliveries:
            if delivery.error:
                return delivery.error
        return None

    @property
    def function_outcome(self) -> str:
        statuses = {d.status for d in self.decisions}
        if self.function is None or Status.BLOCKED in statuses:
            return "skipped"
        if Status.FUNCTION_ERROR in statuses:
            return "error"
        if statuses == {Status.DROPPED}:
            return "dropped"
        return "split" if len(self.function_events) > 1 else "ok"

    @property
    def function_events(self) -> list[Event]:
        """The events the function returned (the sync's input events when it has none)."""
        seen: dict[int, Event] = {}
        for decision in self.decisions:
            if decision.status in (Status.BLOCKED, Status.FUNCTION_ERROR, Status.DROPPED):
                continue
            if decision.event is not None:
                seen.setdefault(id(decision.event), decision.event)
        return list(seen.values())


@dataclass(frozen=True)
class PreviewReport:
    message_id: str
    event: Event  # normalised
    contract_name: str | None
    contract: ContractResult | None
    syncs: tuple[SyncPreview, ...]
    secrets: frozenset[str] = field(default_factory=frozenset)

    @property
    def contract_outcome(self) -> str:
        return self.contract.outcome if self.contract is not None else "allowed"

    def as_json(self) -> dict[str, Any]:
        """SPEC §3 `preview --json` (plus `event`, `decisions` and request headers), redacted."""
        data = {
            "message_id": self.message_id,
            "event": self.event,
            "contract": {
                "name": self.contract_name,
                "outcome": self.contract_outcome,
                "violations": [
                    violation_json(v) for v in (self.contract.violations if self.contract else ())
                ],
            },
            "syncs": [_sync_json(s) for s in self.syncs],
        }
        return redact_data(data, self.secrets)  # type: ignore[no-any-return]


def preview_event(
    project: Project,
    destinations: Mapping[str, Destination],
    event: Event,
    *,
    syncs: Sequence[str],
    received_at: datetime | None = None,
) -> PreviewReport:
    """Normalise `event`, then run it through its source's contract and each of `syncs`.

    The syncs must read one source. Raises EventError when the listener would refuse
    the event (no identity, too large, ...)."""
    chosen = [project.sync(name) for name in syncs]
    source = chosen[0].source
    normalised = normalise(event, received_at=received_at)
    pipeline = Pipeline(project, destinations)
    [result] = pipeline.process(source, [normalised], syncs=list(syncs))
    previews = []
    for sync in chosen:
        decisions = tuple(d for d in result.decisions if d.sync == sync.name)
        destination = destinations[sync.destination]
        previews.append(
            SyncPreview(
                sync=sync.name,
                destination=sync.destination,
                function=display_path(sync.function.path) if sync.function else None,
                decisions=decisions,
                deliveries=tuple(
                    _delivery(destination, d) for d in decisions if d.status is Status.PENDING
                ),
            )
        )
    source_config = project.sources.get(source)
    secrets = set(project.secrets)
    for name in {s.destination for s in chosen}:
        secrets |= _secret_values(destinations[name])
    return PreviewReport(
        message_id=result.message_id,
        event=normalised,
        contract_name=source_config.contract if source_config else None,
        contract=result.contract,
        syncs=tuple(previews),
        secrets=frozenset(secrets),
    )


def violation_json(violation: Violation) -> dict[str, Any]:
    return {
        "kind": violation.kind,
        "pointer": violation.pointer,
        "message": violation.message,
        "contract": violation.contract,
        "event_name": violation.event_name,
        "version": violation.version,
    }


def _delivery(destination: Destination, decision: Decision) -> DeliveryPreview:
    assert decision.event_type is not None and decision.payload is not None
    try:
        request: HttpRequest | None = destination.build_request(
            decision.event_type, [decision.payload]
        )
        error = None
    except StreamctlError as exc:
        request, error = None, str(exc)
    return DeliveryPreview(
        decision.event_type, decision.payload, request, decision.message_id, error
    )


def _secret_values(destination: Destination) -> set[str]:
    found: set[str] = set()
    for name in destination.catalog.secret_fields:
        found |= secret_strings(destination.config.get(name))
    return found


def _sync_json(preview: SyncPreview) -> dict[str, Any]:
    return {
        "sync": preview.sync,
        "destination": preview.destination,
        "function": {
            "path": preview.function,
            "outcome": preview.function_outcome,
            "events": preview.function_events,
        },
        "deliveries": [
            {
                "event_type": d.event_type,
                "message_id": d.message_id,
                "payload": d.payload,
                "request": _request_json(d.request) if d.request is not None else None,
                "error": d.error,
            }
            for d in preview.deliveries
        ],
        "decisions": [
            {
                "message_id": d.message_id,
                "status": d.status.value,
                "stage": d.stage.value,
                "event_type": d.event_type,
                "error": d.error,
                "traceback": d.traceback,
            }
            for d in preview.decisions
        ],
        "outcome": preview.outcome,
        "error": preview.error,
    }


def _request_json(request: HttpRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "url": request.url,
        "headers": dict(request.headers),
        "body": request_body(request),
    }


def request_body(request: HttpRequest) -> Any:
    """The body as JSON when it is JSON, else as text."""
    if request.json is not None:
        return request.json
    content = request.content or b""
    text = content.decode("utf-8", errors="replace")
    try:
        return orjson.loads(content) if content.strip() else text
    except orjson.JSONDecodeError:
        return text
