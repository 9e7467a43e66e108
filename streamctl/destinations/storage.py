"""Event storage destinations: a sync's events written as rows in Segment's warehouse layout.

`StorageDestination` is what `postgres`, `duckdb` and `parquet` share: the two event
types, the payload (one event's rows, made by `warehouse.layout_event` in the pipeline)
and `send`, which plans a batch against the schema it knows, lets the backend add or
widen columns, plans again, and loads. A batch counts as delivered only once the
backend committed it; loading the same batch again (a retry after a lost answer)
writes nothing twice, since every table has a key (`id` = messageId).

    destinations:
      warehouse:
        type: postgres
        config: { url: "${WAREHOUSE_URL}", schema: events }
    # syncs/store-all.yaml
    event_types:
      - type: event          # every event, whole, in the warehouse layout

Errors: what may pass by itself (connection lost, a lock held elsewhere) is retried;
anything else fails the batch with `split`, so the engine halves it until the one
event the database refuses is archived alone and the others are stored.
"""

from __future__ import annotations

import asyncio
import threading
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import httpx
import orjson

from streamctl.core.events import Event
from streamctl.destinations.base import (
    BatchResult,
    ConfigField,
    Destination,
    EventTypeSpec,
    FieldSpec,
    HttpRequest,
    ItemResult,
    ItemStatus,
    MappedEvent,
    Payload,
)
from streamctl.destinations.warehouse import (
    SchemaBackend,
    SchemaChange,
    StagingBackend,
    TableRows,
    TableSchema,
    WarehouseBackend,
    layout_event,
    layout_mapped,
    layout_violations,
    plan_load,
    plan_summary,
)


class _Changes(Protocol):
    @property
    def changes(self) -> Sequence[SchemaChange]: ...


_Plan = TypeVar("_Plan", bound=_Changes)
MAX_PLANS = 5  # plan, evolve, plan again: more rounds means another writer keeps changing it

STORE_EVENT = EventTypeSpec(
    name="event",
    description="The whole event in Segment's warehouse layout: its call table (tracks, "
    "identifies, pages, screens, groups, aliases), its track event's own table, `users`. "
    "Needs no mappings.",
    user_fields=False,
    properties=False,
)
STORE_ROW = EventTypeSpec(
    name="row",
    description="Mapped fields as the columns of one table (`table`); `user` and "
    "`properties` sections become columns too; `id` is the messageId unless mapped.",
    required=(FieldSpec("table", "string", "The table the row goes to (snake_cased)."),),
    optional=(FieldSpec("id", "string", "The row's key (default: the messageId)."),),
    open_fields=True,
)
STORE_VIOLATIONS = EventTypeSpec(
    name="violations",
    description="Contract violations of the sync's source, one row per event that broke "
    "its contract, blocked or not, in `event_violations` (as Hightouch stores them). "
    "Needs no mappings.",
    user_fields=False,
    properties=False,
)
STORAGE_EVENT_TYPES = (STORE_EVENT, STORE_ROW, STORE_VIOLATIONS)
WIDEN_TO_TEXT = ConfigField(
    "widen_to_text",
    "boolean",
    default=False,
    description="A value that fits its column's type in no lossless way turns the column "
    "into text (default: the value goes to the `discards` table).",
)


class StorageDestination(Destination):
    """A destination that stores events in tables (see the module docstring)."""

    takes_payload_text = True  # decoded in `load`'s thread, off the event loop

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.widen_to_text = bool(self.config.get("widen_to_text"))
        self._backend: WarehouseBackend | StagingBackend | None = None
        self._schema: dict[str, TableSchema] | None = None
        self._lock = threading.Lock()  # the backend's creation and the schema's updates
        self._planning = threading.Lock()  # see `_plan_and_load`

    @abstractmethod
    def open_backend(self) -> WarehouseBackend | StagingBackend:
        """Connect (called on the first batch, in the delivering process only)."""

    @abstractmethod
    def transient(self, exc: BaseException) -> bool:
        """Whether an error may pass by itself (connection lost, lock held): retry."""

    @abstractmethod
    def target(self) -> str:
        """Where rows go, for `preview`, without credentials: `postgresql://host/db#schema`."""

    # -- shaping -----------------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        if event_type == "row":
            columns = {k: v for k, v in mapped.required.items() if k != "table"}
            columns.update(mapped.user)
            columns.update(mapped.properties)
            return layout_mapped(str(mapped.required["table"]), columns, event)
        if event_type == "violations":
            return layout_violations(event, mapped.required)
        return layout_event(event)

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        """What `preview` shows: the rows each table would get."""
        return HttpRequest("INSERT", self.target(), json=list(payloads))

    # -- sending -----------------------------------------------------------------------

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        try:
            await asyncio.to_thread(self.load, payloads)
        except Exception as exc:
            transient = self.transient(exc)
            status = ItemStatus.RETRY if transient else ItemStatus.FAILED
            error = f"{self.catalog.type} {self.name!r}: {type(exc).__name__}: {exc}"
            return BatchResult.same(
                len(payloads), ItemResult(status, error=error), split=not transient
            )
        return BatchResult.same(len(payloads), ItemResult(ItemStatus.DELIVERED))

    def load(self, payloads: Sequence[Payload]) -> None:
        """Store a batch; committed when this returns (blocking: call it off the loop)."""
        backend = self.backend()
        if isinstance(backend, StagingBackend):
            self._load_staged(backend, payloads)
            return
        batch = TableRows.collect(map(decoded, payloads))
        self._plan_and_load(
            backend,
            lambda schema: plan_load(batch, schema, widen_to_text=self.widen_to_text),
            backend.load,
        )

    def _load_staged(self, backend: StagingBackend, payloads: Sequence[Payload]) -> None:
        """`load` by a backend that takes the payloads as they are and plans from a
        summary of their values (`plan_summary`)."""
        batch = backend.stage(payloads)
        try:
            summary = batch.summary(self._known_schema(backend))
            self._plan_and_load(
                backend,
                lambda schema: plan_summary(
                    summary,
                    schema,
                    widen_to_text=self.widen_to_text,
                    carried_discards=batch.carried_discards,
                ),
                lambda plan: backend.load_staged(batch, plan),
            )
        finally:
            batch.close()

    def _plan_and_load(
        self,
        backend: WarehouseBackend | StagingBackend,
        plan_against: Callable[[dict[str, TableSchema]], _Plan],
        load: Callable[[_Plan], object],
    ) -> None:
        """Plan against the schema known, let the backend add or widen columns, plan
        again, until a plan needs no change: then load it.

        One batch plans at a time (planning holds the GIL anyway): the batches that
        wait for the first ones of a new schema plan once against the schema those
        made, instead of each planning every column as new, changing the schema
        again and planning twice (a replay's first four batches did)."""
        for _ in range(MAX_PLANS):
            with self._planning:
                plan = plan_against(self._known_schema(backend))
                if plan.changes:
                    evolved = backend.evolve(plan.changes)
                    with self._lock:
                        self._schema = evolved
                    continue
            load(plan)
            return
        msg = f"the schema kept changing under {MAX_PLANS} plans of one batch"
        raise RuntimeError(msg)

    def backend(self) -> WarehouseBackend | StagingBackend:
        with self._lock:
            if self._backend is None:
                self._backend = self.open_backend()
            return self._backend

    def _known_schema(self, backend: SchemaBackend) -> dict[str, TableSchema]:
        with self._lock:
            if self._schema is None:
                self._schema = backend.schema()
            return self._schema

    async def aclose(self) -> None:
        with self._lock:
            backend, self._backend, self._schema = self._backend, None, None
        if backend is not None:
            await asyncio.to_thread(backend.close)


def decoded(payload: Payload) -> Any:
    """A payload as an object: stored payloads arrive as their JSON text."""
    return orjson.loads(payload) if isinstance(payload, str) else payload
