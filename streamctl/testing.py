"""Run a sync over events in your own tests, without delivering anything.

    # tests/test_purchases.py (your project's pytest)
    from streamctl.testing import load, run_sync

    project = load(".")                     # the project folder, checked like `streamctl validate`

    def test_an_order_becomes_a_braze_purchase():
        [decision] = run_sync(project, "purchases-to-braze", [{
            "type": "track", "event": "Order Completed", "userId": "u1",
            "properties": {"order_id": "o1", "total": 9.5},
        }])
        assert decision.status == "pending"          # would be delivered
        assert decision.event_type == "purchase"
        assert decision.payload["external_id"] == "u1"

Events go through the same stages as in production: normalisation (SPEC §4), the
source's contract, the sync's function, event-type selection and mappings. Each
`Decision` says what happened (`status`: pending = would be delivered, blocked,
dropped, filtered, mapping_error, function_error), with the destination `payload`.

To keep results reproducible, events without a `messageId` get `test-1`, `test-2`,
... and `receivedAt` is `RECEIVED_AT` (2024-01-01T00:00:00.000Z) unless given, so
an event without a `timestamp` gets that one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from streamctl.core.errors import UsageError
from streamctl.core.events import Event
from streamctl.core.model import Project
from streamctl.core.outcomes import Decision, EventResult
from streamctl.destinations.base import Destination
from streamctl.destinations.registry import create
from streamctl.pipeline.process import Pipeline
from streamctl.sources.normalise import normalise

RECEIVED_AT = datetime(2024, 1, 1, tzinfo=UTC)

__all__ = ["RECEIVED_AT", "load", "pipeline_for", "prepare_events", "run_sync", "run_syncs"]

# One Pipeline per Project object: compiling destinations once keeps big test suites quick.
_pipelines: dict[int, tuple[Project, Pipeline]] = {}


def load(project_dir: str | Path = ".", *, env: Mapping[str, str] | None = None) -> Project:
    """The project in `project_dir`, loaded and checked; raises ConfigError listing every problem.

    `env` replaces `os.environ` for `${VAR}` references (handy for test credentials)."""
    from streamctl.config.loader import load_project

    return load_project(project_dir, env=os.environ if env is None else env)


def run_sync(
    project: Project | str | Path,
    sync: str,
    events: Iterable[Event],
    *,
    received_at: datetime | None = None,
) -> list[Decision]:
    """Every decision `sync` makes about `events`, in order (one per event, more on splits
    and `match: all`). Nothing is delivered and nothing is stored."""
    results = run_syncs(project, events, syncs=[sync], received_at=received_at)
    return [decision for result in results for decision in result.decisions]


def run_syncs(
    project: Project | str | Path,
    events: Iterable[Event],
    *,
    syncs: Sequence[str],
    received_at: datetime | None = None,
) -> list[EventResult]:
    """Like `run_sync` for several syncs of one source: the full EventResult per event
    (contract outcome and violations, then every sync's decisions)."""
    loaded = project if isinstance(project, Project) else load(project)
    pipeline = pipeline_for(loaded)
    source = _source_of(loaded, syncs)
    prepared = prepare_events(events, received_at=received_at)
    return pipeline.process(source, prepared, syncs=list(syncs))


def prepare_events(events: Iterable[Event], *, received_at: datetime | None = None) -> list[Event]:
    """Events normalised as the listener would, with reproducible messageIds and receivedAt."""
    prepared = []
    for index, event in enumerate(events):
        if isinstance(event, dict) and not event.get("messageId"):
            event = {**event, "messageId": f"test-{index + 1}"}
        prepared.append(normalise(event, received_at=received_at or RECEIVED_AT, index=index))
    return prepared


def pipeline_for(project: Project) -> Pipeline:
    """The Pipeline of `project` with every destination created (and reused across calls)."""
    cached = _pipelines.get(id(project))
    if cached is not None and cached[0] is project:
        return cached[1]
    pipeline = Pipeline(project, destinations_of(project))
    _pipelines[id(project)] = (project, pipeline)
    return pipeline


def destinations_of(project: Project, names: Iterable[str] | None = None) -> dict[str, Destination]:
    """The runtime destination objects of the project (or of `names` only)."""
    wanted = project.destinations.keys() if names is None else names
    return {name: create(project.destinations[name]) for name in wanted}


def _source_of(project: Project, syncs: Sequence[str]) -> str:
    if not syncs:
        raise UsageError("name at least one sync")
    chosen = []
    for name in syncs:
        try:
            chosen.append(project.sync(name))
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from None
    sources = {s.source for s in chosen}
    if len(sources) > 1:
        msg = f"syncs {', '.join(syncs)} read different sources ({', '.join(sorted(sources))}); run them separately"
        raise UsageError(msg)
    return chosen[0].source
