"""One batch of events through contract -> function -> event types -> mappings, per sync.

    pipeline = Pipeline(project, {name: create(cfg) for name, cfg in project.destinations.items()})
    for result in pipeline.process("web", normalised_events):
        result.contract            # ContractResult | None (the source has no contract)
        result.decisions           # one Decision per sync (and per matched event type / split event)

The pipeline decides and never sends nor stores: the caller records every decision
and hands the `PENDING` ones to delivery. It is the hot path of `replay`, so the
per-event work is plain loops over precompiled objects.

Functions see a batch: the events of one `process` call that passed the contract.
Their output events are tied back to the received event they came from by
`messageId`: an unchanged id, or a new one that starts with the original followed
by a separator (`abc-1`, `abc:2`); otherwise to the event before them in the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamctl.core.errors import FunctionError, MappingError, UsageError
from streamctl.core.events import Event, user_key
from streamctl.core.model import Contract, EventTypeRule, Project, SyncConfig
from streamctl.core.outcomes import ContractResult, Decision, EventResult, Status
from streamctl.destinations.base import Destination, MappedEvent
from streamctl.functions import run_function

SPLIT_SEPARATORS = "-:_./#"
# An event type of this name (the storage destinations have one) is given the contract's
# findings about each event of the source that broke it, blocked or not, instead of events.
VIOLATIONS = "violations"
VIOLATIONS_IN_MESSAGE = 3


@dataclass(frozen=True)
class _Route:
    """A sync with its destination, resolved once per source."""

    sync: SyncConfig
    destination: Destination


class Pipeline:
    """The compiled pipeline of a project. Pure: it decides, it never sends nor stores."""

    def __init__(self, project: Project, destinations: Mapping[str, Destination]) -> None:
        self.project = project
        self.destinations = destinations
        self._routes: dict[tuple[str, tuple[str, ...] | None], tuple[_Route, ...]] = {}

    def process(
        self, source: str, events: Sequence[Event], syncs: Sequence[str] | None = None
    ) -> list[EventResult]:
        """Decide every sync's outcome for each event (normalised already). `syncs` narrows to those names."""
        results = [EventResult(str(event.get("messageId", "")), source, event) for event in events]
        contract = self.contract_of(source)
        passed: list[tuple[int, Event]] = []
        blocked: list[int] = []
        if contract is None:
            passed = list(enumerate(events))
        else:
            for index, result in enumerate(results):
                checked = contract.check(result.event)
                result.contract = checked
                if checked.outcome == "blocked":
                    blocked.append(index)
                else:
                    passed.append((index, checked.event))

        for route in self.routes(source, syncs):
            sync_name = route.sync.name
            if contract is not None:
                self._violations(route, results)
            for index in blocked:
                result = results[index]
                assert result.contract is not None
                result.decisions.append(
                    Decision(
                        result.message_id, sync_name, Status.BLOCKED,
                        error=blocked_message(result.contract), user_key=user_key(result.event),
                        event=result.event, origin_message_id=result.message_id,
                    )
                )  # fmt: skip
            if route.sync.function is not None:
                self._run_function(route, passed, results)
            else:
                for index, event in passed:
                    message_id = results[index].message_id
                    self._route(route, event, results[index].decisions, message_id)
        return results

    def contract_of(self, source: str) -> Contract | None:
        config = self.project.sources.get(source)
        if config is None:
            known = ", ".join(self.project.sources) or "none"
            msg = f"unknown source {source!r}; known: {known}"
            raise UsageError(msg)
        return self.project.contracts.get(config.contract) if config.contract else None

    def routes(self, source: str, syncs: Sequence[str] | None = None) -> tuple[_Route, ...]:
        """The syncs reading `source` (narrowed to `syncs`), each with its destination."""
        key = (source, tuple(syncs) if syncs is not None else None)
        cached = self._routes.get(key)
        if cached is not None:
            return cached
        chosen = self.project.syncs_for_source(source)
        if syncs is not None:
            known = {s.name for s in self.project.syncs}
            unknown = [name for name in syncs if name not in known]
            if unknown:
                msg = f"unknown sync {unknown[0]!r}; known: {', '.join(sorted(known)) or 'none'}"
                raise UsageError(msg)
            chosen = tuple(s for s in chosen if s.name in syncs)
        routes = tuple(_Route(sync, self._destination(sync)) for sync in chosen)
        self._routes[key] = routes
        return routes

    def _destination(self, sync: SyncConfig) -> Destination:
        destination = self.destinations.get(sync.destination)
        if destination is None:
            msg = f"sync {sync.name!r}: destination {sync.destination!r} is not available"
            raise UsageError(msg)
        return destination

    def _run_function(
        self, route: _Route, passed: list[tuple[int, Event]], results: list[EventResult]
    ) -> None:
        if not passed:
            return
        sync = route.sync
        assert sync.function is not None
        try:
            output = run_function(sync.function, [event for _, event in passed])
        except FunctionError as exc:
            for index, event in passed:
                message_id = results[index].message_id
                results[index].decisions.append(
                    Decision(
                        message_id, sync.name, Status.FUNCTION_ERROR, error=str(exc),
                        traceback=exc.traceback or None, user_key=user_key(event), event=event,
                        origin_message_id=message_id,
                    )
                )  # fmt: skip
            return

        origins = Origins([str(event.get("messageId")) for _, event in passed])
        produced: set[int] = set()
        for event in output:
            index = passed[origins.of(str(event["messageId"]))][0]
            produced.add(index)
            self._route(route, event, results[index].decisions, results[index].message_id)
        for index, event in passed:
            if index not in produced:
                message_id = results[index].message_id
                results[index].decisions.append(
                    Decision(
                        message_id, sync.name, Status.DROPPED, error="the function left the event out",
                        user_key=user_key(event), event=event, origin_message_id=message_id,
                    )
                )  # fmt: skip

    def _route(self, route: _Route, event: Event, decisions: list[Decision], origin: str) -> None:
        """Event-type selection (match first | all), then mapping, for one event of one sync."""
        sync = route.sync
        matched = False
        for rule in sync.event_types:
            if rule.type == VIOLATIONS or (rule.filter is not None and not rule.filter(event)):
                continue
            matched = True
            decisions.append(self._map(route, rule, event, origin))
            if sync.match == "first":
                break
        if not matched:
            decisions.append(
                Decision(
                    str(event.get("messageId", origin)), sync.name, Status.FILTERED,
                    error="no event type matched", user_key=user_key(event), event=event,
                    origin_message_id=origin,
                )
            )  # fmt: skip

    def _violations(self, route: _Route, results: list[EventResult]) -> None:
        """A PENDING delivery of the sync's `violations` event type for each event whose
        contract found anything (Hightouch's `event_violations`): the findings are its
        mapped fields, the event as it arrived its event."""
        rules = [rule for rule in route.sync.event_types if rule.type == VIOLATIONS]
        if not rules:
            return
        for result in results:
            checked = result.contract
            if checked is None or not checked.violations:
                continue
            for rule in rules:
                if rule.filter is not None and not rule.filter(result.event):
                    continue
                findings = MappedEvent(
                    {"outcome": checked.outcome, "violations": findings_of(checked)}
                )
                payload = route.destination.build_payload(VIOLATIONS, findings, result.event)
                result.decisions.append(
                    Decision(
                        result.message_id, route.sync.name, Status.PENDING, event_type=VIOLATIONS,
                        payload=payload, user_key=user_key(result.event), event=result.event,
                        origin_message_id=result.message_id,
                    )
                )  # fmt: skip

    def _map(self, route: _Route, rule: EventTypeRule, event: Event, origin: str) -> Decision:
        message_id = str(event.get("messageId", origin))
        destination = route.destination
        event_type = rule.type
        try:
            mapped = rule.mapping.apply(event)
            payload = destination.build_payload(event_type, mapped, event)
        except MappingError as exc:
            return Decision(
                message_id, route.sync.name, Status.MAPPING_ERROR, event_type=event_type,
                error=str(exc), user_key=user_key(event), event=event, origin_message_id=origin,
            )  # fmt: skip
        problem = destination.check_payload(event_type, payload)
        if problem is not None:
            return Decision(
                message_id, route.sync.name, Status.MAPPING_ERROR, event_type=event_type,
                payload=payload, error=problem, user_key=user_key(event), event=event,
                origin_message_id=origin,
            )  # fmt: skip
        return Decision(
            message_id, route.sync.name, Status.PENDING, event_type=event_type, payload=payload,
            user_key=user_key(event), event=event, origin_message_id=origin,
        )  # fmt: skip


def findings_of(checked: ContractResult) -> list[dict[str, str | None]]:
    """A contract's violations of one event, as the `violations` event type gets them."""
    return [
        {"kind": v.kind, "pointer": v.pointer, "message": v.message, "contract": v.contract,
         "version": v.version}
        for v in checked.violations
    ]  # fmt: skip


class Origins:
    """Which received event each output event of a function comes from (see the module docstring).

        origins = Origins(["a", "b"])
        origins.of("b")      # 1: the same id
        origins.of("a-2")    # 0: the id of a received event, a separator, more
        origins.of("zzz")    # 0: nothing matches: the event before it in the output

    Positions are indexes into the batch given to the function. A batch may hold the
    same messageId twice (a replayed duplicate): outputs with that id go to them in turn.
    """

    def __init__(self, message_ids: Sequence[str]) -> None:
        self._positions: dict[str, list[int]] = {}
        for position, message_id in enumerate(message_ids):
            self._positions.setdefault(message_id, []).append(position)
        self._taken: dict[str, int] = {}
        self._previous = 0

    def of(self, message_id: str) -> int:
        if message_id in self._positions:
            found = self._next(message_id)
        else:
            found = self._by_prefix(message_id)
        self._previous = found
        return found

    def _next(self, message_id: str) -> int:
        positions = self._positions[message_id]
        taken = self._taken.get(message_id, 0)
        self._taken[message_id] = taken + 1
        return positions[min(taken, len(positions) - 1)]

    def _by_prefix(self, message_id: str) -> int:
        candidate = message_id
        while True:
            cut = max(candidate.rfind(sep) for sep in SPLIT_SEPARATORS)
            if cut <= 0:
                return self._previous
            candidate = candidate[:cut]
            positions = self._positions.get(candidate)
            if positions is not None:
                return positions[0]


def blocked_message(contract: ContractResult) -> str:
    """`blocked by contract 'web': /properties/total: -3 is less than the minimum of 0; ...`"""
    violations = contract.violations
    if not violations:
        return "blocked by the contract"
    shown = "; ".join(
        f"{v.pointer or '/'}: {v.message}" for v in violations[:VIOLATIONS_IN_MESSAGE]
    )
    more = (
        f" (and {len(violations) - VIOLATIONS_IN_MESSAGE} more)"
        if len(violations) > VIOLATIONS_IN_MESSAGE
        else ""
    )
    return f"blocked by contract {violations[0].contract!r}: {shown}{more}"
