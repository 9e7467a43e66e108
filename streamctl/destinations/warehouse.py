"""Event storage in Segment's warehouse layout: naming, flattening, types, discards.

Shared by the storage destinations (`postgres`, `duckdb`, `parquet`); each of their
modules holds only its database's specifics, behind `WarehouseBackend`.

    payload = layout_event(event)                  # in the pipeline: one event's rows
    batch = TableRows.collect(payloads)            # at delivery: rows per table
    plan = plan_load(batch, schema, widen_to_text=False)
    plan.changes                                   # columns to add / widen first
    plan.tables["order_completed"].columns         # then load these rows

    # or, the batch held by the database (duckdb, parquet): the same rules from a
    # summary of each column's value kinds (`ColumnSummary`), made by its SQL
    plan = plan_summary(summary, schema, widen_to_text=False, carried_discards=True)
    plan.tables["order_completed"]                 # [ColumnPlan(name, type, discard)]

The layout (docs/destinations/postgres.md has the whole table, against Segment's
warehouse schema docs):

- `tracks`, `identifies`, `pages`, `screens`, `groups`, `aliases`: one row per call;
  one table per track event name (`order_completed` for "Order Completed") with the
  event's properties as columns; `users`: the latest traits per `userId`.
- column names are snake_case (Segment's go-snakecase: `orderId` -> `order_id`,
  `Order Completed` -> `order_completed`), nested objects are flattened with `_`
  (`context.page.url` -> `context_page_url`), arrays are stored as JSON text, nulls
  are left out (a column appears with its first non-null value, as in Segment).
- Two keys that give one column name (`orderId` and `order_id`): the key that already
  is the column name wins, else the first in code-point order; the other's value goes
  to `discards`. A property named like a standard column (`id`, `user_id`, ...) goes
  to `discards` too (Segment drops those).
- Types: boolean, bigint, double, timestamp (an ISO 8601 date-time string), text.
  A value of another type than its column's: bigint into double is stored as a
  double; a double into a bigint column widens the column to double; anything goes
  into a text column as its JSON text; with `widen_to_text` any other conflict
  turns the column into text; otherwise the value goes to `discards` (table, column,
  value, reason, messageId, as RudderStack's `rudder_discards`) and the row is
  still written without it.

Why the work is split this way: the pipeline (`layout_event`, run by replay's worker
processes) does the per-event flattening and naming, once per event; delivery (the one
process that owns the database connection) only checks each value's type against its
column and builds the rows, which keeps the delivering process's share small.

The payload (a delivery's, stored as JSON text in the store, read by `TableRows.collect`
and by DuckDB's SQL in `duckdb_staging`):

    {"rows": {"tracks": {"id": MESSAGE_ID, "received_at": ..., ...},
              "order_completed": {"total": 30, ...}},
     "discards": [[table, column, value, reason], ...]}

- `layout_event`'s first row is its call table's: its `id` and `received_at` are the
  event's messageId and receivedAt (`payload_event`). In a payload with a `tracks` row
  every other row is its event table's and holds only what the properties add to
  `tracks`' row: the event table's row is `{**tracks, **own}`.
- A mapped row's or a violation's payload names its event: `message_id` and
  `received_at` beside `rows` (a mapped row's `id` may be another field).
- `discards` only when there are some (most events have none).
- Payloads stored before 2026-12-04 (pending deliveries when streamctl is upgraded)
  carry `message_id`, `received_at`, `"discards": []` and `"extends": {table:
  "tracks"}` too: they load alike. Leaving those out made a bench track's payload 687
  -> 558 bytes (docs/destinations/postgres.md, "The pipeline's share").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import not_
from typing import Any, Literal, Protocol, runtime_checkable

import orjson

from streamctl.core.events import Event

ColumnType = Literal["boolean", "bigint", "double", "timestamp", "text"]
TableSchema = dict[str, ColumnType]  # column name -> type
Row = dict[str, Any]

MAX_NAME_BYTES = 63  # PostgreSQL's identifier limit; the same names in every backend
DISCARDS = "discards"
USERS = "users"
TRACKS = "tracks"
CALL_TABLES = {
    "track": TRACKS,
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
# Tables whose names an event table may not take: `track_` goes in front of such an event.
RESERVED_TABLES = frozenset({*CALL_TABLES.values(), USERS, DISCARDS, "event_violations"})
TIMESTAMP_COLUMNS = ("received_at", "sent_at", "timestamp", "original_timestamp")
# Every call table's columns taken from the envelope, in this order, and their types.
STANDARD_COLUMNS: dict[str, ColumnType] = {
    "id": "text",
    "anonymous_id": "text",
    "user_id": "text",
    **dict.fromkeys(TIMESTAMP_COLUMNS, "timestamp"),
    "event": "text",
    "event_text": "text",
    "name": "text",
    "category": "text",
    "group_id": "text",
    "previous_id": "text",
}
# Set by the database when a row is written (Segment's `loaded_at` and `uuid_ts`).
LOAD_TIME_COLUMNS = ("loaded_at", "uuid_ts")
RESERVED_COLUMNS = frozenset({*STANDARD_COLUMNS, *LOAD_TIME_COLUMNS})
DISCARD_COLUMNS: dict[str, ColumnType] = {
    "table_name": "text",
    "column_name": "text",
    "column_value": "text",
    "reason": "text",
    "row_id": "text",  # the event's messageId
    "received_at": "timestamp",
}
DISCARD_KEY = ("row_id", "table_name", "column_name")
USER_COLUMNS: dict[str, ColumnType] = {"id": "text", "received_at": "timestamp"}

_CAMEL_RUN = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NOT_WORD = re.compile(r"[\W_]+")
# An ISO 8601 date-time (`is_timestamp`); in RE2's syntax too, for the databases' own
# regular expressions (`\d` is ASCII there, any Unicode digit in Python's `re`).
ISO_DATETIME_PATTERN = (
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d"
    r"(:[0-5]\d(\.\d{1,9})?)?(Z|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)?"
)
_ISO_DATETIME = re.compile(ISO_DATETIME_PATTERN)


# -- names ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def snake_case(key: str) -> str:
    """A column or table name as Segment makes it: `orderId` -> `order_id`,
    `Order Completed` -> `order_completed`, `HTTPStatus` -> `http_status`. Unicode
    letters stay (lowercased); a leading digit gets `_` in front; at most 63 bytes.
    Empty when the key has no letter or digit."""
    name = _CAMEL.sub(r"\1_\2", _CAMEL_RUN.sub(r"\1_\2", key))
    name = _NOT_WORD.sub("_", name).strip("_").lower()
    if name[:1].isdigit():
        name = "_" + name
    encoded = name.encode()
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode(errors="ignore").rstrip("_")
    return name


def event_table(event_name: str) -> str:
    """The table of a track event: `Order Completed` -> `order_completed`; a name that
    is a standard table's gets `track_` in front (`Users` -> `track_users`)."""
    name = snake_case(event_name)
    return f"track_{name}" if name in RESERVED_TABLES else name


# -- one event's rows (pipeline side) ---------------------------------------------------

# Column names of the keys seen, per prefix (`context_`, `context_page_`, `` for
# properties): a dict lookup instead of `snake_case`'s cache and a concatenation per
# key. Bounded (keys are the events' own): a cache past its size is emptied, and keys
# longer than `_MAX_KEY` (rare) are named each time, so it holds at most ~64 x 1,024
# short names (~20 MB, where a usual project has a few dozen prefixes and keys each).
_NAMES: dict[str, dict[str, str]] = {}
_MAX_PREFIXES = 64
_MAX_NAMES = 1024
_MAX_KEY = 64


def _names_under(prefix: str) -> dict[str, str]:
    names = _NAMES.get(prefix)
    if names is None:
        if len(_NAMES) >= _MAX_PREFIXES:
            _NAMES.clear()
        names = _NAMES[prefix] = {}
    return names


def _new_name(names: dict[str, str], prefix: str, key: str) -> str:
    """A key's column under `prefix` ("" when the key gives no name), cached in `names`."""
    name = snake_case(key)
    column = prefix + name if name else ""
    if len(key) <= _MAX_KEY:
        if len(names) >= _MAX_NAMES:
            names.clear()
        names[key] = column
    return column


_NO_COLUMNS: dict[str, Any] = {}
# Column names `put` refuses (no name; set by the database), for `flatten`'s one check.
_NOT_PLAIN = frozenset({"", *LOAD_TIME_COLUMNS})


class _Columns:
    """Flattened columns of one row, with the key path each came from (for collisions;
    "" for a standard column, which no key takes).

    `base`: a row this one's is joined to at delivery (a track's `tracks` row, under
    its event table's): its columns count as this row's for collisions, without a
    copy of them. `discards` may be shared by the rows of one event."""

    __slots__ = ("_base_sources", "_base_values", "discards", "sources", "table", "values")

    def __init__(
        self, table: str, discards: list[list[str]] | None = None, base: _Columns | None = None
    ) -> None:
        self.table = table
        self.values: Row = {}
        self.sources: dict[str, str] = {}  # column -> the key path it came from
        # [table, column, value, reason]
        self.discards: list[list[str]] = [] if discards is None else discards
        self._base_values = _NO_COLUMNS if base is None else base.values
        self._base_sources = _NO_COLUMNS if base is None else base.sources

    def put(self, column: str, path: str, value: Any) -> None:
        if value is None:
            return
        if not column:
            self.discard(path, value, f"key {path!r} gives no column name")
            return
        if column in LOAD_TIME_COLUMNS:
            self.discard(column, value, f"{path!r} would overwrite the column {column!r}")
            return
        if isinstance(value, list):
            value = orjson.dumps(value).decode()
        holder, held = self.sources.get(column), self.values
        if holder is None:
            holder, held = self._base_sources.get(column), self._base_values
        if holder is None:
            self.values[column] = value
            self.sources[column] = path
            return
        if holder == "":
            self.discard(column, value, f"{path!r} would overwrite the standard column {column!r}")
            return
        if _claim_rank(column, path) < _claim_rank(column, holder):
            loser_value = held[column]
            self.values[column] = value
            self.sources[column] = path
            self.discard(column, loser_value, f"column {column!r} is taken by key {path!r}", holder)
        else:
            self.discard(column, value, f"column {column!r} is taken by key {holder!r}", path)

    def standard(self, column: str, value: Any) -> None:
        """A column of the envelope: it wins over any property of the same name."""
        if value is None:
            return
        self.values[column] = value
        self.sources[column] = ""

    def flatten(self, obj: Mapping[str, Any], prefix: str = "", dotted: str = "") -> None:
        """An object's keys as columns named `prefix` + their snake_case, nested objects
        flattened (`dotted`: the object's key path and a dot, `context.page.`)."""
        values, sources, base = self.values, self.sources, self._base_sources
        names = _NAMES.get(prefix) or _names_under(prefix)
        for key, value in obj.items():
            if value is None:
                continue
            column = names.get(key)
            if column is None:
                column = _new_name(names, prefix, key)
            if isinstance(value, dict) and column:
                self.flatten(value, column + "_", dotted + key + ".")
            elif (
                column in sources
                or column in base
                or column in _NOT_PLAIN
                or isinstance(value, list)
            ):
                self.put(column, dotted + key, value)
            else:  # `put`'s usual case inline: most of `layout_event`'s time
                values[column] = value
                sources[column] = dotted + key

    def discard(self, column: str, value: Any, reason: str, path: str | None = None) -> None:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        self.discards.append([self.table, column or (path or ""), text, reason])


def _claim_rank(column: str, path: str) -> tuple[bool, str]:
    """Lower wins: a key that already is the column name, then code-point order."""
    return (snake_key(path) != column, path)


def snake_key(path: str) -> str:
    """The column a key path would give if it were written as-is: `context.page.url` ->
    `context_page_url` (no case change), to tell `order_id` (itself) from `orderId`."""
    return path.replace(".", "_")


def layout_event(event: Event) -> dict[str, Any]:
    """One event's rows in the warehouse layout: `{"rows": {table: {column: value}},
    "discards": [[table, column, value, reason]]}` (see "The payload" above): its call
    table's row first, then a track's event-table row (what its properties add to the
    `tracks` row) or an identify's `users` row."""
    call = str(event.get("type") or "track")
    table = CALL_TABLES.get(call, TRACKS)
    base = _envelope(table, event)
    context = event.get("context")
    if isinstance(context, dict):
        base.flatten(context, "context_", "context.")
    rows: dict[str, Row] = {table: base.values}
    laid: dict[str, Any] = {"rows": rows}
    if call == "track":
        name = event.get("event")
        if isinstance(name, str) and name:
            base.standard("event", snake_case(name))
            base.standard("event_text", name)
            own_table = event_table(name)
            if own_table:
                # Only what the properties add: the event table's row is `tracks`' row
                # plus these (`TableRows.collect` joins them), which keeps the payload,
                # its JSON in the store and its decoding at delivery about half as large.
                own = _Columns(own_table, base.discards, base)
                properties = event.get("properties")
                if isinstance(properties, dict):
                    own.flatten(properties)
                rows[own_table] = own.values
    elif call in ("identify", "group"):
        traits = event.get("traits")
        if isinstance(traits, dict):
            base.flatten(traits)
        if call == "identify" and event.get("userId") is not None:
            user = _Columns(USERS, base.discards)
            user.standard("id", str(event["userId"]))
            user.standard("received_at", event.get("receivedAt"))
            if isinstance(traits, dict):
                user.flatten(traits)
            rows[USERS] = user.values
    elif call in ("page", "screen"):
        properties = event.get("properties")
        if isinstance(properties, dict):
            base.flatten(properties)
    if base.discards:
        laid["discards"] = base.discards
    return laid


def _payload(event: Event, rows: dict[str, Row], discards: list[list[str]]) -> dict[str, Any]:
    """A payload that names its event (a row whose `id` may be another field's)."""
    laid = {
        "message_id": str(event.get("messageId", "")),
        "received_at": event.get("receivedAt"),
        "rows": rows,
    }
    if discards:
        laid["discards"] = discards
    return laid


def payload_event(payload: Mapping[str, Any]) -> tuple[str, str | None]:
    """A payload's event: its messageId and receivedAt, which `layout_event`'s leave to
    its first row (the call table's `id` and `received_at`)."""
    message_id = payload.get("message_id")
    if message_id is not None:
        return message_id, payload.get("received_at")
    first = next(iter(payload["rows"].values()))
    return first["id"], first.get("received_at")


# The envelope's standard columns after `id`, in the order of the table's columns:
# (column, the event's key, whether stored as text).
_ENVELOPE = (
    ("anonymous_id", "anonymousId", True),
    ("user_id", "userId", True),
    ("received_at", "receivedAt", False),
    ("sent_at", "sentAt", False),
    ("timestamp", "timestamp", False),
    ("original_timestamp", "originalTimestamp", False),
    ("name", "name", True),
    ("category", "category", True),
    ("group_id", "groupId", True),
    ("previous_id", "previousId", True),
)


def _envelope(table: str, event: Event) -> _Columns:
    """A call table's row with its standard columns (what the event has of them)."""
    columns = _Columns(table)
    values = columns.values
    values["id"] = str(event.get("messageId", ""))
    for column, key, text in _ENVELOPE:
        value = event.get(key)
        if value is not None:
            values[column] = str(value) if text and type(value) is not str else value
    columns.sources = dict.fromkeys(values, "")
    return columns


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def layout_mapped(table: str, columns: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """A mapped row (event type `row`): the mapped fields as columns of `table`,
    flattened and named like the rest; `id` is the messageId unless mapped."""
    row = _Columns(snake_case(table))
    row.standard("id", str(columns.get("id", event.get("messageId", ""))))
    row.standard("received_at", event.get("receivedAt"))
    row.flatten({k: v for k, v in columns.items() if k != "id"})
    return _payload(event, {row.table: row.values}, row.discards)


VIOLATIONS_TABLE = "event_violations"


def layout_violations(event: Event, findings: Mapping[str, Any]) -> dict[str, Any]:
    """One event's contract findings as a row of `event_violations`, in Hightouch's
    columns (`payload`, `event_name`, `event_type`, `schema_version`,
    `has_undeclared_schema`, `has_undeclared_fields`, `has_schema_violated`,
    `violations`), plus `outcome` (allowed, blocked or omitted) and `contract`."""
    violations = list(findings.get("violations") or ())
    kinds = {v.get("kind") for v in violations}
    context = event.get("context")
    version = context.get("schemaVersion") if isinstance(context, dict) else None
    row = _Columns(VIOLATIONS_TABLE)
    row.standard("id", str(event.get("messageId", "")))
    row.standard("received_at", event.get("receivedAt"))
    row.standard("user_id", _text(event.get("userId")))
    row.standard("anonymous_id", _text(event.get("anonymousId")))
    row.put("event_name", "event_name", _text(event.get("event") or event.get("name")))
    row.put("event_type", "event_type", _text(event.get("type")))
    row.put("schema_version", "schema_version", _text(version))
    row.put("contract", "contract", next((v.get("contract") for v in violations), None))
    row.put("outcome", "outcome", findings.get("outcome"))
    row.put("has_undeclared_schema", "has_undeclared_schema", "undeclared_event" in kinds)
    row.put("has_undeclared_fields", "has_undeclared_fields", "undeclared_field" in kinds)
    row.put("has_schema_violated", "has_schema_violated", "schema" in kinds)
    messages = [f"{v.get('pointer') or '/'}: {v.get('message')}" for v in violations]
    row.put("violations", "violations", orjson.dumps(messages).decode())
    row.put("payload", "payload", orjson.dumps(event).decode())
    return _payload(event, {VIOLATIONS_TABLE: row.values}, row.discards)


# -- types (delivery side) ----------------------------------------------------------------

_PY_TYPES: dict[type, ColumnType] = {bool: "boolean", int: "bigint", float: "double"}
INT64 = (-(2**63), 2**63 - 1)


def value_type(value: Any) -> ColumnType:
    """The column type a JSON value asks for."""
    kind = _PY_TYPES.get(type(value))
    if kind is not None:
        if kind == "bigint" and not INT64[0] <= value <= INT64[1]:
            return "text"
        return kind
    if type(value) is str and is_timestamp(value):
        return "timestamp"
    return "text"


def is_timestamp(text: str) -> bool:
    """An ISO 8601 date-time (`2026-12-03T10:00:00.123Z`). The pattern checks each
    field's range; a day a month lacks (Feb 30) passes it, the database refuses it,
    and the engine's split isolates that event."""
    return _ISO_DATETIME.fullmatch(text) is not None


def as_text(value: Any) -> str:
    """A value stored in a text column: strings as they are, others as JSON text."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def fits(value_kind: ColumnType, column_kind: ColumnType) -> bool:
    """Whether a value of one type is stored in a column of the other as it is."""
    return (
        value_kind == column_kind
        or column_kind == "text"
        or (value_kind == "bigint" and column_kind == "double")
    )


# -- a batch's load plan --------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaChange:
    """A column to create (with its table when missing) or to widen to `type`."""

    table: str
    column: str
    type: ColumnType
    widen: bool = False


@dataclass
class TableLoad:
    """The rows of one table in one batch: dicts holding some of `columns`, each value
    of its column's type (`types`)."""

    name: str
    columns: list[str]
    types: list[ColumnType]
    rows: list[Row]

    def tuples(self) -> list[tuple[Any, ...]]:
        """The rows as tuples in `columns` order (None where a row has no value), in no
        particular order: first the rows whose keys are `columns` in that order (most,
        in a batch of one source's events), taken as they are without a Python step
        per row (a COPY of 5,000 bench events: 5.4 -> 5.0 us an event), then the others."""
        columns = tuple(self.columns)
        whole = list(map(columns.__eq__, map(tuple, self.rows)))
        rows = list(map(tuple, map(dict.values, compress(self.rows, whole))))
        rows += [tuple(map(row.get, columns)) for row in compress(self.rows, map(not_, whole))]
        return rows


@dataclass
class LoadPlan:
    changes: list[SchemaChange]
    tables: dict[str, TableLoad]
    users: TableLoad | None
    discards: TableLoad | None

    def inserted(self) -> list[TableLoad]:
        """The loads whose rows are inserted as they are: the tables, then `discards`
        (`users` is merged into the rows stored instead)."""
        return [*self.tables.values(), *([self.discards] if self.discards else [])]


@dataclass
class TableRows:
    """A batch's rows by table, with the discards their events already carry."""

    tables: dict[str, list[tuple[str, str | None, Row]]]  # table -> (message_id, received_at, row)
    discards: list[tuple[str, str | None, list[str]]]

    @classmethod
    def collect(cls, payloads: Iterable[Mapping[str, Any]]) -> TableRows:
        tables: dict[str, list[tuple[str, str | None, Row]]] = {}
        discards: list[tuple[str, str | None, list[str]]] = []
        for payload in payloads:
            message_id, received = payload_event(payload)
            rows = payload["rows"]
            # Every other row of a payload with a `tracks` row is an event table's,
            # which holds only what its properties add to it.
            tracks = rows.get(TRACKS) if len(rows) > 1 else None
            for table, row in rows.items():
                if tracks is not None and table != TRACKS:
                    row = {**tracks, **row}
                tables.setdefault(table, []).append((message_id, received, row))
            for discard in payload.get("discards") or ():
                discards.append((message_id, received, discard))
        return cls(tables, discards)


def table_columns(table: str) -> TableSchema:
    """The columns a table is created with, before any property's."""
    if table == DISCARDS:
        return dict(DISCARD_COLUMNS)
    if table == USERS:
        return dict(USER_COLUMNS)
    return {"id": "text", "received_at": "timestamp"}


def table_key(table: str) -> tuple[str, ...]:
    """The columns that make a row unique: what makes a retried batch a no-op."""
    return DISCARD_KEY if table == DISCARDS else ("id",)


def plan_load(
    batch: TableRows, schema: Mapping[str, TableSchema], *, widen_to_text: bool = False
) -> LoadPlan:
    """What to change in the schema, then what to write, for a batch.

    A plan with `changes` is for applying them and planning again against the schema
    the database then has; a plan without is ready to load.

    Column by column: a column whose values are all of the types its column takes
    (the usual case) is taken as it is, checked by one pass over a list of types;
    only a column with a stray value goes value by value (`_column_values`)."""
    changes: list[SchemaChange] = []
    tables: dict[str, TableLoad] = {}
    users: TableLoad | None = None
    patches: list[tuple[list[Row], str, list[Any]]] = []  # rows, column, its new values
    timestamps: set[str] = set()  # date-time strings checked, for the tables that repeat them
    discards: list[tuple[Any, ...]] = [
        (*discard, message_id, received) for message_id, received, discard in batch.discards
    ]
    for table, entries in batch.tables.items():
        known = schema.get(table)
        planned = dict(table_columns(table)) if known is None else dict(known)
        if known is None:
            changes.extend(SchemaChange(table, c, t) for c, t in planned.items())
        entries = _unique_keys(table, entries)
        rows = [row for _, _, row in entries]
        present = _value_types(table, rows)
        types: list[ColumnType] = []
        for column, kinds in present.items():
            target = planned.get(column)
            if target is None:
                planned[column] = target = _new_column_type(column, rows, kinds, timestamps)
                changes.append(SchemaChange(table, column, target))
            if target in _ANY_VALUE and _TAKES[target].issuperset(kinds):
                types.append(target)  # every value fits: no need to look at each
                continue
            column_values = list(map(dict.get, rows, repeat(column)))  # no Python frame per row
            if not _all_fit(column_values, target, timestamps):
                target, replaced = _column_values(
                    table, column, target, column_values, entries, discards, widen_to_text
                )
                if target != planned[column]:
                    planned[column] = target
                    changes.append(SchemaChange(table, column, target, widen=True))
                patches.append((rows, column, replaced))
            types.append(target)
        load = TableLoad(table, list(present), types, rows)
        if table == USERS:
            users = load
        else:
            tables[table] = load
    if discards and DISCARDS not in schema:
        changes.extend(SchemaChange(DISCARDS, c, t) for c, t in DISCARD_COLUMNS.items())
    discard_load = (
        TableLoad(
            DISCARDS,
            list(DISCARD_COLUMNS),
            list(DISCARD_COLUMNS.values()),
            [dict(zip(DISCARD_COLUMNS, d, strict=True)) for d in discards],
        )
        if discards
        else None
    )
    if changes:
        return LoadPlan(_unique(changes), tables, users, discard_load)
    # The plan is final: only now are the rows (the payloads' own dicts) changed.
    for rows, column, replaced in patches:
        for row, value in zip(rows, replaced, strict=True):
            if value is None:
                row.pop(column, None)
            else:
                row[column] = value
    return LoadPlan([], tables, None if users is None else merge_users(users), discard_load)


# -- a batch's load plan from a summary of its values ---------------------------------------

# What a JSON value is, as a column sees it: `timestamp` is a string that is an ISO 8601
# date-time (`_ISO_DATETIME`), `string` any other string, `bignum` an integer beyond
# int64 (JSON has up to uint64), `json` an object or an array (stored as JSON text).
ValueKind = Literal["boolean", "bigint", "double", "timestamp", "string", "bignum", "json"]
VALUE_KINDS: tuple[ValueKind, ...] = (
    "boolean",
    "bigint",
    "double",
    "timestamp",
    "string",
    "bignum",
    "json",
)
# The column type each kind asks for (`value_type`'s answer for such a value).
KIND_TYPES: dict[ValueKind, ColumnType] = {
    "boolean": "boolean",
    "bigint": "bigint",
    "double": "double",
    "timestamp": "timestamp",
    "string": "text",
    "bignum": "text",
    "json": "text",
}


@dataclass(frozen=True)
class ColumnSummary:
    """One column of one table in a batch: how many of its values (nulls and absent
    values aside) are of each kind, and the kind of its first value in the batch's
    order (rows after one row per key, `users` rows all kept; event tables' rows joined
    with their `tracks` rows)."""

    table: str
    column: str
    kinds: Mapping[ValueKind, int]
    first: ValueKind


@dataclass(frozen=True)
class ColumnPlan:
    """How one column of a batch is loaded: every value cast to `type` (an integer to a
    double, anything to text as its JSON text, a string as it is), except the values
    of the `discard` kinds, which are left out of the row and go to `discards`."""

    name: str
    type: ColumnType
    discard: frozenset[ValueKind] = frozenset()

    def reason(self, kind: ValueKind) -> str:
        """The `discards` row's reason for a value of `kind` (as `plan_load` gives it)."""
        return f"incompatible schema conversion from {KIND_TYPES[kind]} to {self.type}"


@dataclass
class SummaryPlan:
    """What to change in the schema, then how to load each table's columns (the table's
    key first, then in the order the summary gave). `discards`: whether the batch
    writes to the `discards` table (carried discards or values of `discard` kinds)."""

    changes: list[SchemaChange]
    tables: dict[str, list[ColumnPlan]]
    discards: bool


def plan_summary(
    summary: Iterable[ColumnSummary],
    schema: Mapping[str, TableSchema],
    *,
    widen_to_text: bool = False,
    carried_discards: bool = False,
) -> SummaryPlan:
    """`plan_load`'s rules for a batch the database holds, from a summary of its values
    (one query) rather than the values themselves: the same schema changes and the
    same column types and discards. `summary` lists each table's columns in the order
    they first appear in the batch; `carried_discards`: the payloads carry discards.

    A plan with `changes` is for applying them and planning again (with the same
    summary) against the schema the database then has; a plan without is ready."""
    changes: list[SchemaChange] = []
    tables: dict[str, list[ColumnPlan]] = {}
    by_table_column: dict[str, dict[str, ColumnSummary]] = {}
    for summarized in summary:
        by_table_column.setdefault(summarized.table, {})[summarized.column] = summarized
    for table, columns in by_table_column.items():
        known = schema.get(table)
        planned = dict(table_columns(table) if known is None else known)
        if known is None:
            changes.extend(SchemaChange(table, c, t) for c, t in planned.items())
        plans: list[ColumnPlan] = []
        names = [*table_key(table), *(c for c in columns if c not in table_key(table))]
        for name in names:
            column = columns.get(name)
            kinds = {k for k, n in column.kinds.items() if n} if column else set()
            target = planned.get(name)
            if target is None:
                assert column is not None  # a key column is always planned
                planned[name] = target = _summary_new_type(name, kinds, column.first)
                changes.append(SchemaChange(table, name, target))
            stray = {k for k in kinds if not _kind_fits(k, target)}
            if stray:
                widened = _widened(target, {KIND_TYPES[k] for k in kinds}, widen_to_text)
                if widened != planned[name]:
                    planned[name] = widened
                    changes.append(SchemaChange(table, name, widened, widen=True))
                target = widened
                stray = {k for k in kinds if not _kind_fits(k, target)}
            plans.append(ColumnPlan(name, target, frozenset(stray)))
        tables[table] = plans
    discards = carried_discards or any(c.discard for plans in tables.values() for c in plans)
    if discards and DISCARDS not in schema:
        changes.extend(SchemaChange(DISCARDS, c, t) for c, t in DISCARD_COLUMNS.items())
    return SummaryPlan(_unique(changes), tables, discards)


def _kind_fits(kind: ValueKind, target: ColumnType) -> bool:
    """Whether a value of `kind` is stored in a column of type `target` (as it is or
    converted without loss: an integer as a double, anything as its text)."""
    return fits(KIND_TYPES[kind], target)


def _summary_new_type(column: str, kinds: set[ValueKind], first: ValueKind) -> ColumnType:
    """`_new_column_type` from a column's kinds and its first value's."""
    types = {KIND_TYPES[k] for k in kinds}
    standard = STANDARD_COLUMNS.get(column)
    if standard is not None and all(fits(t, standard) for t in types):
        return standard
    if types == {"bigint", "double"}:
        return "double"
    return KIND_TYPES[first]


def _widened(target: ColumnType, types: set[ColumnType], widen_to_text: bool) -> ColumnType:
    """`_column_values`' widening of a column with values of other types than its own."""
    if target == "bigint" and "double" in types:
        target = "double"
    if widen_to_text and any(not fits(t, target) for t in types):
        target = "text"
    return target


# The Python types a column of each type takes as they are (None aside).
_TAKES: dict[ColumnType, frozenset[type]] = {
    "boolean": frozenset({bool, type(None)}),
    "bigint": frozenset({int, type(None)}),
    "double": frozenset({float, type(None)}),
    "timestamp": frozenset({str, type(None)}),
    "text": frozenset({str, type(None)}),
}


# Column types whose every value of the right Python type fits (no range, no pattern).
_ANY_VALUE: frozenset[ColumnType] = frozenset({"boolean", "double", "text"})


def _value_types(table: str, rows: Sequence[Row]) -> dict[str, set[type]]:
    """Each column of a table's rows (its key first) and the Python types of its values.

    By the rows' shapes (their keys and their values' types, in order): a batch of
    events from one source has a few dozen shapes among thousands of rows, and making
    a row's shape is two C-level passes, where taking each column's values row by row
    was the largest Python cost of a delivery (measured: see docs/destinations/postgres.md)."""
    shapes = dict.fromkeys((tuple(row), tuple(map(type, row.values()))) for row in rows)
    present: dict[str, set[type]] = {column: set() for column in table_key(table)}
    for keys, kinds in shapes:
        for column, kind in zip(keys, kinds, strict=True):
            present.setdefault(column, set()).add(kind)
    return present  # (a row without a column holds None there, which every column takes)


def _all_fit(values: list[Any], target: ColumnType, timestamps: set[str]) -> bool:
    """Whether every value is of a type `target` takes as it is; a timestamp column's
    strings must be date-times, each distinct one matched once (a replay's
    `received_at` repeats across a batch, an event table's rows repeat their `tracks`
    rows' timestamps), those seen added to `timestamps`."""
    if not _TAKES[target].issuperset(map(type, values)):
        return False
    if target == "timestamp":
        unseen = set(values).difference((None,), timestamps)
        if not all(map(_ISO_DATETIME.fullmatch, unseen)):
            return False
        timestamps |= unseen
        return True
    if target == "bigint":
        present = [v for v in values if v is not None]
        return not present or (INT64[0] <= min(present) and max(present) <= INT64[1])
    return True


def _new_column_type(
    column: str, rows: list[Row], types: set[type], timestamps: set[str]
) -> ColumnType:
    """A new column's type: a standard column's own, else its first value's (a double
    when the batch holds both integers and doubles); `types`: its values' Python types.

    From the types, looking at the values only where they decide: a batch that
    creates a schema has every column new, and typing each string (a date-time or
    not) cost as much as the rest of the plan (5,000 bench events: 10.5 against 3.7 us
    an event)."""
    standard = STANDARD_COLUMNS.get(column)
    if standard == "text":
        return standard
    both_numbers = types - {type(None)} == {int, float}
    if standard is not None or both_numbers:
        values = list(map(dict.get, rows, repeat(column)))
        if standard is not None and _all_fit(values, standard, timestamps):
            return standard
        if both_numbers and _all_fit([v for v in values if type(v) is int], "bigint", timestamps):
            return "double"
    return value_type(next((v for row in rows if (v := row.get(column)) is not None), None))


def _column_values(
    table: str,
    column: str,
    target: ColumnType,
    values: list[Any],
    entries: Sequence[tuple[str, str | None, Row]],
    discards: list[tuple[Any, ...]],
    widen_to_text: bool,
) -> tuple[ColumnType, list[Any]]:
    """A column with values of other types than its own, value by value: converted
    when that loses nothing, the column widened when it may be, else discarded."""
    kinds = [None if v is None else value_type(v) for v in values]
    if target == "bigint" and "double" in kinds:
        target = "double"
    if widen_to_text and any(k is not None and not fits(k, target) for k in kinds):
        target = "text"
    out: list[Any] = []
    for value, kind, (message_id, received, _) in zip(values, kinds, entries, strict=True):
        if kind is None or kind == target:
            out.append(value)
        elif kind == "bigint" and target == "double":
            out.append(float(value))
        elif target == "text":
            out.append(as_text(value))
        else:
            reason = f"incompatible schema conversion from {kind} to {target}"
            discards.append((table, column, as_text(value), reason, message_id, received))
            out.append(None)
    return target, out


def _unique_keys(
    table: str, entries: list[tuple[str, str | None, Row]]
) -> list[tuple[str, str | None, Row]]:
    """A batch's rows with one row per key (an event replayed twice in one batch);
    `users` keeps them all, for `merge_users`."""
    if table == USERS:
        return entries
    if table != DISCARDS:
        ids = set(map(dict.get, [entry[2] for entry in entries], repeat("id")))
        if len(ids) == len(entries):
            return entries
    key = table_key(table)
    unique: dict[tuple[Any, ...], tuple[str, str | None, Row]] = {}
    for entry in entries:
        unique.setdefault(tuple(entry[2].get(c) for c in key), entry)
    return list(unique.values())


def _unique(changes: list[SchemaChange]) -> list[SchemaChange]:
    """One change per column: its last (widest) type; creations before widenings."""
    last: dict[tuple[str, str], SchemaChange] = {}
    for change in changes:
        previous = last.get((change.table, change.column))
        widen = change.widen and (previous is None or previous.widen)
        last[(change.table, change.column)] = SchemaChange(
            change.table, change.column, change.type, widen
        )
    return list(last.values())


def merge_users(load: TableLoad) -> TableLoad:
    """One row per user: each trait's latest non-null value by `received_at`, as the
    `users` table keeps it (the database merges it again with what it holds)."""
    merged: dict[Any, Row] = {}
    for row in sorted(load.rows, key=lambda r: r.get("received_at") or ""):
        current = merged.get(row["id"])
        if current is None:
            merged[row["id"]] = dict(row)
        else:
            current.update(row)
    return TableLoad(load.name, load.columns, load.types, list(merged.values()))


_WIDTH: dict[ColumnType, int] = {"bigint": 1, "double": 2, "text": 3}


def widens(change: SchemaChange, current: ColumnType) -> bool:
    """Whether a widening change still has work to do on a column of type `current`
    (another writer may have widened it as far already)."""
    return change.widen and _WIDTH.get(change.type, 0) > _WIDTH.get(current, 0)


def by_table(changes: Iterable[SchemaChange]) -> dict[str, list[SchemaChange]]:
    grouped: dict[str, list[SchemaChange]] = {}
    for change in changes:
        grouped.setdefault(change.table, []).append(change)
    return grouped


def schema_of(
    columns: Iterable[tuple[str, str, str]], types: Mapping[str, ColumnType]
) -> dict[str, TableSchema]:
    """A database's (table, column, data type) rows as a schema; a type this layout does
    not make (someone changed the table by hand) is taken for text."""
    schema: dict[str, TableSchema] = {}
    for table, column, data_type in columns:
        schema.setdefault(table, {})[column] = types.get(data_type, "text")
    return schema


def merge_schema(schema: dict[str, TableSchema], changes: Iterable[SchemaChange]) -> None:
    """`schema` after `changes` (what a backend that just applied them now has)."""
    for change in changes:
        schema.setdefault(change.table, {})[change.column] = change.type


# -- the backends ---------------------------------------------------------------------------


class SchemaBackend(Protocol):
    """One database's specifics. Called from one thread at a time per connection;
    `evolve` must be safe with another process doing the same at once."""

    def schema(self) -> dict[str, TableSchema]:
        """Every table of the destination and its columns' types, as the database has them."""
        ...

    def evolve(self, changes: Sequence[SchemaChange]) -> dict[str, TableSchema]:
        """Create the missing tables and columns, widen columns; the schema after."""
        ...

    def close(self) -> None: ...


class WarehouseBackend(SchemaBackend, Protocol):
    """A backend that loads rows planned in Python (`plan_load`)."""

    def load(self, plan: LoadPlan) -> None:
        """Write the plan's rows in one transaction: a row whose key is already stored
        is skipped, `users` rows are merged into theirs. Committed on return."""
        ...


class StagedRows(Protocol):
    """A batch held by the database (`StagingBackend.stage`), summarized there."""

    carried_discards: bool  # whether its payloads carry discards

    def summary(self, schema: Mapping[str, TableSchema]) -> list[ColumnSummary]:
        """`plan_summary`'s input. A column `schema` knows whose values its type all
        takes may be summarized as that type's kind (a string as `string` in a text
        column, whether a date-time or not): the plan is the same."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class StagingBackend(SchemaBackend, Protocol):
    """A backend that takes a batch's payloads as they are (their JSON text) and
    loads them by SQL, planned by `plan_summary` from the batch's summary."""

    def stage(self, payloads: Sequence[Any]) -> Any:
        """The payloads in the database (a `StagedRows`); closed by the caller."""
        ...

    def load_staged(self, batch: Any, plan: SummaryPlan) -> int:
        """Write a staged batch as `plan` says, in one transaction, committed on return."""
        ...
