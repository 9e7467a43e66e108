"""A batch of payload texts staged in DuckDB, summarized, then loaded by SQL alone.

`duckdb_backend` hands the payloads' JSON text (as the store keeps them) to DuckDB as
they are, one NDJSON file a batch: no Python decoding, no Python row per event. Then,
in one connection of the backend's own (temporary tables are per connection):

1. `json_group_structure` over the file: every table and column in the batch, and
   whether a column holds one JSON type (the usual case) or several;
2. `read_json` with that structure as its columns (one typed parse): a string column
   is read as VARCHAR, an integer one as BIGINT/UBIGINT, a boolean one as BOOLEAN,
   any other (doubles, mixed types, objects) as JSON, one value each;
3. per table, its rows (an event table's row joined with its `tracks` row, one row per
   id, `users` all kept) in a temporary table, and the summary `warehouse.plan_summary`
   plans from: per column the kinds of its values and the first one's. Strings are
   matched against the ISO date-time pattern only where the answer matters (a new
   column, a timestamp column);
4. per table one `INSERT ... SELECT` with a cast per column; a column with values that
   go to `discards` has a `CASE` on each value's kind, and its discards are one
   `INSERT ... SELECT` too; `users` merged (latest non-null trait by `received_at`)
   and upserted.

Measured on 10,000 bench events (docs/destinations/duckdb.md): the Python path this
replaced spent ~18 us an event holding the GIL (decode, collect, plan, encode), and
DuckDB ~15 us more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from streamctl.destinations.warehouse import (
    CALL_TABLES,
    DISCARD_COLUMNS,
    DISCARDS,
    INT64,
    ISO_DATETIME_PATTERN,
    STANDARD_COLUMNS,
    TRACKS,
    USERS,
    ColumnPlan,
    ColumnSummary,
    ColumnType,
    TableSchema,
    ValueKind,
    table_key,
)

INT64_MAX = INT64[1]
SQL_TYPES: dict[ColumnType, str] = {
    "boolean": "BOOLEAN",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "timestamp": "TIMESTAMPTZ",
    "text": "VARCHAR",
}
# How a column is read from the file, by its JSON type in the whole batch
# (`json_group_structure`'s name); any other (DOUBLE, JSON for mixed types, objects)
# is read as JSON.
LEAF_TYPES = {"VARCHAR": "VARCHAR", "BOOLEAN": "BOOLEAN", "BIGINT": "BIGINT", "UBIGINT": "UBIGINT"}
# The kind a column's type takes as it is (a known column whose values all fit).
_TYPE_KINDS: dict[ColumnType, ValueKind] = {
    "boolean": "boolean",
    "bigint": "bigint",
    "double": "double",
    "timestamp": "timestamp",
    "text": "string",
}
_ISO = "'" + ISO_DATETIME_PATTERN.replace("'", "''") + "'"


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote(name: str) -> str:
    """A DuckDB identifier: reserved words, unicode and capitals stay as they are."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Value:
    """One column's value in a staged row: an SQL expression and the type it was read as."""

    sql: str
    leaf: str  # VARCHAR, BOOLEAN, BIGINT, UBIGINT or JSON

    def kind(self, timestamps: bool) -> str:
        """The value's `ValueKind` in SQL; strings told apart from ISO date-times only
        when `timestamps` (else any string is a `string`)."""
        v = self.sql
        string = (
            f"CASE WHEN regexp_full_match(@, {_ISO}) THEN 'timestamp' ELSE 'string' END"
            if timestamps
            else "'string'"
        )
        if self.leaf == "VARCHAR":
            return string.replace("@", v, 1)
        if self.leaf == "BOOLEAN":
            return "'boolean'"
        if self.leaf == "BIGINT":
            return "'bigint'"
        if self.leaf == "UBIGINT":
            return f"CASE WHEN {v} > {INT64_MAX} THEN 'bignum' ELSE 'bigint' END"
        unquoted = string.replace("@", f"({v} ->> '$')", 1)
        return (
            f"CASE json_type({v}) WHEN 'VARCHAR' THEN {unquoted}"
            f" WHEN 'BIGINT' THEN 'bigint'"
            f" WHEN 'UBIGINT' THEN CASE WHEN TRY_CAST({v} AS UBIGINT) > {INT64_MAX} THEN 'bignum' ELSE 'bigint' END"
            f" WHEN 'DOUBLE' THEN 'double' WHEN 'BOOLEAN' THEN 'boolean'"
            f" WHEN 'NULL' THEN NULL ELSE 'json' END"
        )

    def constant_kind(self, timestamps: bool) -> ValueKind | None:
        """The kind of every value when the type it was read as tells it."""
        if self.leaf == "VARCHAR" and not timestamps:
            return "string"
        return {"BOOLEAN": "boolean", "BIGINT": "bigint"}.get(self.leaf)  # type: ignore[return-value]

    def stray(self, target: ColumnType) -> str | None:
        """An SQL condition true for a value a column of type `target` does not take
        as it is (`plan_summary` has more to decide then); None when every value
        this column was read as fits, "true" when none does."""
        v = self.sql
        fitting: dict[str, tuple[ColumnType, ...]] = {
            "VARCHAR": ("text",),
            "BOOLEAN": ("boolean", "text"),
            "BIGINT": ("bigint", "double", "text"),
            "UBIGINT": ("text",),
            "JSON": ("text",),
        }
        if target in fitting[self.leaf]:
            return None
        small = f"TRY_CAST({v} AS UBIGINT) <= {INT64_MAX}"
        if self.leaf == "VARCHAR" and target == "timestamp":
            return f"NOT regexp_full_match({v}, {_ISO})"
        if self.leaf == "UBIGINT" and target in ("bigint", "double"):
            return f"{v} > {INT64_MAX}"
        if self.leaf != "JSON":
            return "true"
        integer = f"(json_type({v}) = 'BIGINT' OR (json_type({v}) = 'UBIGINT' AND {small}))"
        if target == "double":
            return f"NOT (json_type({v}) = 'DOUBLE' OR {integer})"
        if target == "bigint":
            return f"NOT {integer}"
        if target == "boolean":
            return f"json_type({v}) <> 'BOOLEAN'"
        return f"(json_type({v}) <> 'VARCHAR' OR NOT regexp_full_match({v} ->> '$', {_ISO}))"

    def text(self) -> str:
        """The value as `warehouse.as_text` makes it: a string as it is, else its JSON."""
        if self.leaf == "VARCHAR":
            return self.sql
        if self.leaf == "JSON":
            return f"({self.sql} ->> '$')"
        return f"{self.sql}::VARCHAR"

    def cast(self, target: ColumnType) -> str:
        if target == "text":
            return self.text()
        if self.leaf == "JSON" and target == "timestamp":
            return f"({self.sql} ->> '$')::TIMESTAMPTZ"
        return f"{self.sql}::{SQL_TYPES[target]}"


def _struct(fields: Mapping[str, str]) -> str:
    return "STRUCT(" + ", ".join(f"{quote(k)} {t}" for k, t in fields.items()) + ")"


class StagedBatch:
    """A batch read into temporary tables of `con` (see the module docstring)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        folder: Path,
        payloads: Sequence[Any],
        *,
        owns_connection: bool = False,
    ):
        self.con = con
        self.owns_connection = owns_connection
        self.file = folder / f"streamctl-{os.getpid()}-{id(self)}.ndjson"
        self.file.write_bytes(_ndjson(payloads))
        self.raw: dict[str, dict[str, Value]] = {}  # each table's columns in `batch`
        self.tables: dict[str, dict[str, Value]] = {}  # ... in its view (`rows_table`)
        self.unique: set[str] = set()  # the tables whose keys are unique in the batch
        self.sources: dict[str, str] = {}  # each table's rows: a subquery of `batch`
        self._span: tuple[str | None, str | None] | None = None
        self.bases: dict[str, list[str]] = {}  # an event table's base tables (`tracks`)
        self.own: dict[str, set[str]] = {}  # the columns an event table's own rows hold
        self._stage()

    def close(self) -> None:
        """Delete the file and the staged rows (with the connection, when it is the
        batch's own)."""
        self.file.unlink(missing_ok=True)
        if self.owns_connection:
            self.con.close()
        else:
            self.con.execute("DROP TABLE IF EXISTS temp.batch")

    # -- reading the file ---------------------------------------------------------------

    def _stage(self) -> None:
        path = literal(self.file.as_posix())
        structure = self.structure()
        rows = _object(structure.get("rows"))
        # Empty lists only: `["NULL"]`; lists of [table, column, value, reason]: `[["VARCHAR"]]`.
        self.carried_discards = structure.get("discards") not in (None, "NULL", ["NULL"])
        leaves = {
            table: {
                c: LEAF_TYPES.get(t, "JSON") if isinstance(t, str) else "JSON"
                for c, t in cols.items()
            }
            for table, cols in rows.items()
            if isinstance(cols, dict)
        }
        columns = {
            "n": "BIGINT",
            "message_id": "VARCHAR",
            "received_at": "VARCHAR",
            "rows": _struct({t: _struct(c) for t, c in leaves.items()}) if leaves else "JSON",
            "discards": "VARCHAR[][]" if self.carried_discards else "JSON",
        }
        spec = ", ".join(f"{quote(k)}: {literal(v)}" for k, v in columns.items())
        message_id, received_at = _event_columns(leaves)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE batch AS SELECT * REPLACE ({message_id} AS message_id,"
            f" {received_at} AS received_at) FROM read_json("
            f"{path}, format = 'newline_delimited', columns = {{{spec}}})"
        )
        bases = self.bases = self._bases(leaves)
        for table, own in leaves.items():
            self.raw[table] = self._values(table, own, leaves, bases.get(table, []))
            self.own[table] = set(own)
        self._views()

    def structure(self) -> dict[str, Any]:
        """Every key of the file's objects and its JSON type in the batch
        (`json_group_structure`: a nested object as an object, a list as a list of
        its items' structure, a key with several types as `JSON`)."""
        found = self.con.execute(
            "SELECT json_group_structure(json) FROM read_json_objects("
            f"{literal(self.file.as_posix())}, format = 'newline_delimited')"
        ).fetchall()[0][0]
        return orjson.loads(found) if found else {}

    def _bases(self, leaves: Mapping[str, Any]) -> dict[str, list[str]]:
        """Each event table's base table (`tracks`) in this batch: a payload's every
        other row beside a `tracks` row is its event table's (`warehouse.TableRows`)."""
        others = [t for t in leaves if t != TRACKS]
        if TRACKS not in leaves or not others:
            return {}
        joined = self.con.execute(
            "SELECT "
            + ", ".join(
                f"bool_or(rows.{quote(t)} IS NOT NULL AND rows.{quote(TRACKS)} IS NOT NULL)"
                for t in others
            )
            + " FROM batch"
        ).fetchall()[0]
        return {t: [TRACKS] for t, extends in zip(others, joined, strict=True) if extends}

    def _values(
        self,
        table: str,
        own: Mapping[str, str],
        leaves: Mapping[str, Mapping[str, str]],
        bases: Sequence[str],
    ) -> dict[str, Value]:
        """The columns of a table's rows: its own, then (event tables) its base's,
        an own value first (`{**base_row, **own_row}`)."""
        values: dict[str, Value] = {}
        base_columns = {c: b for b in bases for c in leaves.get(b, {}) if c not in values}
        order = [*dict.fromkeys([*base_columns, *own])]
        for column in order:
            sources = []
            if column in own:
                sources.append((f"rows.{quote(table)}.{quote(column)}", own[column]))
            for base in bases:
                if column in leaves.get(base, {}):  # NULL where the payload has no base row
                    sources.append((f"rows.{quote(base)}.{quote(column)}", leaves[base][column]))
            kinds = {leaf for _, leaf in sources}
            if len(sources) == 1:
                values[column] = Value(*sources[0])
            elif len(kinds) == 1:
                values[column] = Value(f"coalesce({', '.join(s for s, _ in sources)})", kinds.pop())
            else:
                parts = [s if leaf == "JSON" else f"to_json({s})" for s, leaf in sources]
                values[column] = Value(f"coalesce({', '.join(parts)})", "JSON")
        return values

    def _views(self) -> None:
        """Each table's rows, one row per key (`users`: all of them), as a subquery
        of `batch` (`rows_table`): a table whose keys are unique in the batch (the
        usual case: each row's id is its event's messageId, and those are unique) is
        read as it is; another keeps each key's first row."""
        duplicates = self._duplicates()
        for table, values in self.raw.items():
            selected = ", ".join(f"{v.sql} AS {quote(c)}" for c, v in values.items())
            one_per_key = ""
            if table in duplicates:
                key = ", ".join(quote(c) for c in table_key(table))
                one_per_key = f" QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY __n) = 1"
            self.sources[table] = (
                f"(SELECT n AS __n, message_id AS __message_id, received_at AS __received_at, {selected}"
                f" FROM batch WHERE rows.{quote(table)} IS NOT NULL{one_per_key})"
            )
            self.tables[table] = {c: Value(quote(c), v.leaf) for c, v in values.items()}
        self.unique = set(self.raw).difference(duplicates)

    def _duplicates(self) -> set[str]:
        """The tables with a key twice in the batch (`users` aside): first whether
        messageIds are unique and each row's id is its messageId, then, for a table
        where not, whether its ids are unique."""
        keyed = {t: v["id"].sql for t, v in self.raw.items() if t != USERS and "id" in v}
        if not keyed:
            return set()
        checks = ", ".join(f"bool_and({id_sql} = message_id)" for id_sql in keyed.values())
        row = self.con.execute(
            f"SELECT count(DISTINCT message_id) = count(*), {checks} FROM batch"
        ).fetchall()[0]
        unique_messages, same_ids = row[0], row[1:]
        doubtful = [
            t
            for t, same in zip(keyed, same_ids, strict=True)
            if not (unique_messages and same is not False)
        ]
        if not doubtful:
            return set()
        counts = ", ".join(f"count(DISTINCT {keyed[t]}) = count({keyed[t]})" for t in doubtful)
        found = self.con.execute(f"SELECT {counts} FROM batch").fetchall()[0]
        return {t for t, unique in zip(doubtful, found, strict=True) if not unique}

    def rows_table(self, table: str) -> str:
        """A subquery of the table's rows: its payload's `__n`, `__message_id` and
        `__received_at` (no column's name starts with `_`: `snake_case` strips it) and
        its columns."""
        return self.sources[table]

    def received_span(self) -> tuple[str | None, str | None]:
        """The batch's earliest and latest `received_at` (every row's is its event's)."""
        if self._span is not None:
            return self._span
        low, high = self.con.execute(
            "SELECT min(TRY_CAST(received_at AS TIMESTAMPTZ))::VARCHAR,"
            " max(TRY_CAST(received_at AS TIMESTAMPTZ))::VARCHAR FROM batch"
        ).fetchall()[0]
        self._span = (low, high)
        return self._span

    # -- the summary ----------------------------------------------------------------------

    def summary(self, schema: Mapping[str, TableSchema]) -> list[ColumnSummary]:
        """Per table and column, the kinds of its values and the first one's, in the
        order the columns first appear (`plan_summary`'s input).

        As `plan_load` does, a known column is first checked for a value its type
        does not take (`Value.stray`: none to check for a string into a text column,
        a pattern match for a timestamp column); only a new column, or one with such
        a value, has its values' kinds counted, in a second query. A known column
        whose values all fit is summarized as its type's kind (the plan is the same)."""
        out: list[ColumnSummary] = []
        checked: dict[tuple[str, str], int] = {}  # (table, column) -> its values that do not fit
        # Base tables first: an event table's column that only its base rows hold
        # (`received_at`, say) was checked there already when of the same type.
        for table in sorted(self.tables, key=lambda t: bool(self.bases.get(t))):
            values = self.tables[table]
            known = schema.get(table, {})
            checks = {}
            strays: dict[str, int] = {}
            for column, value in values.items():
                target = known.get(column)
                stray = None if target is None else value.stray(target)
                if stray is None or stray == "true":
                    continue
                bases = self.bases.get(table, [])
                if (
                    column not in self.own.get(table, ())
                    and all(
                        schema.get(b, {}).get(column) == target and checked.get((b, column)) == 0
                        for b in bases
                    )
                    and bases
                ):
                    strays[column] = 0
                    continue
                checks[column] = f"count(*) FILTER ({value.sql} IS NOT NULL AND {stray})"
            if checks:
                found = self.con.execute(
                    f"SELECT {', '.join(checks.values())} FROM {self.rows_table(table)}"
                ).fetchall()[0]
                strays.update(zip(checks, found, strict=True))
            checked.update({(table, c): n for c, n in strays.items()})
            detailed = [
                c
                for c, v in values.items()
                if c not in known or strays.get(c) or v.stray(known[c]) == "true"
            ]
            counted = self._kinds(table, {c: values[c] for c in detailed}, known)
            found_columns = []
            for column in values:
                if column in counted:
                    found_columns.append(counted[column])
                elif column not in detailed:
                    kind = _TYPE_KINDS[known[column]]
                    found_columns.append((-1, ColumnSummary(table, column, {kind: 1}, kind)))
            out += [s for _, s in sorted(found_columns, key=lambda p: p[0])]
        return out

    def _kinds(
        self, table: str, values: Mapping[str, Value], known: TableSchema
    ) -> dict[str, tuple[int, ColumnSummary]]:
        """Columns' kinds counted, with the first value's and the first row's `n`.

        A new column of strings is matched against the date-time pattern only when
        its first value is a date-time (or it is a standard timestamp column): else
        it is a text column, which takes every string, and whether the others are
        date-times changes nothing (one pattern match per column, not per value)."""
        if not values:
            return {}
        aggregates: list[str] = []
        for column, value in values.items():
            present = f"FILTER ({value.sql} IS NOT NULL)"
            if value.leaf == "VARCHAR" and known.get(column) is None:
                first = f"arg_min({value.sql}, __n) {present}"
                aggregates += [f"count({value.sql})", f"regexp_full_match({first}, {_ISO})"]
            elif value.constant_kind(known.get(column) in (None, "timestamp")) is None:
                kind = value.kind(True)
                aggregates += [f"histogram({kind}) {present}", f"arg_min({kind}, __n) {present}"]
            else:
                aggregates += [f"count({value.sql})", "NULL"]
            aggregates.append(f"min(__n) {present}")
        result = self.con.execute(
            f"SELECT {', '.join(aggregates)} FROM {self.rows_table(table)}"
        ).fetchall()[0]
        out: dict[str, tuple[int, ColumnSummary]] = {}
        dated: dict[str, int] = {}  # new string columns that may be timestamp columns
        for i, (column, value) in enumerate(values.items()):
            counts, first, position = result[3 * i : 3 * i + 3]
            if position is None:
                continue  # no value in any row
            if value.leaf == "VARCHAR" and known.get(column) is None:
                if first or STANDARD_COLUMNS.get(column) == "timestamp":
                    dated[column] = counts
                summary = ColumnSummary(table, column, {"string": counts}, "string")
            elif constant := value.constant_kind(known.get(column) in (None, "timestamp")):
                summary = ColumnSummary(table, column, {constant: counts}, constant)
            else:
                summary = ColumnSummary(table, column, dict(counts), first)
            out[column] = (position, summary)
        if dated:
            self._date_times(table, values, dated, out)
        return out

    def _date_times(
        self,
        table: str,
        values: Mapping[str, Value],
        dated: Mapping[str, int],
        out: dict[str, tuple[int, ColumnSummary]],
    ) -> None:
        """New string columns' values counted as date-times or other strings."""
        aggregates = [
            f"count(*) FILTER (regexp_full_match({values[c].sql}, {_ISO}))"
            f", arg_min(regexp_full_match({values[c].sql}, {_ISO}), __n)"
            f" FILTER ({values[c].sql} IS NOT NULL)"
            for c in dated
        ]
        result = self.con.execute(
            f"SELECT {', '.join(aggregates)} FROM {self.rows_table(table)}"
        ).fetchall()[0]
        for i, (column, count) in enumerate(dated.items()):
            timestamps, first_is_one = result[2 * i : 2 * i + 2]
            kinds: dict[ValueKind, int] = {"timestamp": timestamps, "string": count - timestamps}
            first: ValueKind = "timestamp" if first_is_one else "string"
            out[column] = (out[column][0], ColumnSummary(table, column, kinds, first))

    # -- loading ----------------------------------------------------------------------------

    def select(self, table: str, plans: Sequence[ColumnPlan], *extra: str) -> str:
        """`SELECT` of a table's rows as its columns take them (and `extra` columns)."""
        values = self.tables[table]
        exprs = list(extra)
        for plan in plans:
            value = values[plan.name]
            cast = value.cast(plan.type)
            if plan.discard:
                kinds = ", ".join(map(literal, sorted(plan.discard)))
                cast = f"CASE WHEN {value.kind(True)} IN ({kinds}) THEN NULL ELSE {cast} END"
            exprs.append(f"{cast} AS {quote(plan.name)}")
        return f"SELECT {', '.join(exprs)} FROM {self.rows_table(table)}"

    def discards(self, tables: Mapping[str, Sequence[ColumnPlan]]) -> str | None:
        """`SELECT` of the batch's discards rows: carried ones, then type conflicts."""
        parts = []
        received = "TRY_CAST({} AS TIMESTAMPTZ)"
        if self.carried_discards:
            parts.append(
                "SELECT d[1], d[2], d[3], d[4], message_id,"
                f" {received.format('received_at')}"
                " FROM (SELECT unnest(discards) AS d, message_id, received_at FROM batch)"
            )
        for table, plans in tables.items():
            for plan in plans:
                if not plan.discard:
                    continue
                value = self.tables[table][plan.name]
                kind = value.kind(True)
                kinds = ", ".join(map(literal, sorted(plan.discard)))
                parts.append(
                    f"SELECT {literal(table)}, {literal(plan.name)}, {value.text()},"
                    f" 'incompatible schema conversion from ' || {_kind_type(kind)}"
                    f" || ' to {plan.type}', __message_id,"
                    f" {received.format('__received_at')}"
                    f" FROM {self.rows_table(table)} WHERE {kind} IN ({kinds})"
                )
        if not parts:
            return None
        names = ", ".join(map(quote, DISCARD_COLUMNS))
        return f"SELECT * FROM ({' UNION ALL '.join(parts)}) s({names})"

    def users(self, plans: Sequence[ColumnPlan]) -> str:
        """`users`' rows merged per id: each column's latest non-null value by
        `received_at` (then batch order), as `warehouse.merge_users` does."""
        values = self.tables[USERS]
        sort = f"coalesce({values['received_at'].text()}, '')" if "received_at" in values else "''"
        ranked = self.select(USERS, plans, f"row_number() OVER (ORDER BY {sort}, __n) AS __rank")
        merged = [
            f"arg_max({quote(p.name)}, __rank) FILTER ({quote(p.name)} IS NOT NULL) AS {quote(p.name)}"
            for p in plans
            if p.name != "id"
        ]
        return f"SELECT id, {', '.join(merged)} FROM ({ranked}) GROUP BY id"


def _event_columns(leaves: Mapping[str, Mapping[str, str]]) -> tuple[str, str]:
    """Each payload's messageId and receivedAt in SQL: its own `message_id` and
    `received_at`, else (`layout_event`'s) its call table row's `id` and `received_at`."""
    message_ids, received = ["message_id"], ["received_at"]
    for table in CALL_TABLES.values():
        columns = leaves.get(table, {})
        if "id" in columns:
            message_ids.append(Value(f"rows.{quote(table)}.id", columns["id"]).text())
        if "received_at" in columns:
            received.append(
                Value(f"rows.{quote(table)}.received_at", columns["received_at"]).text()
            )
    return f"coalesce({', '.join(message_ids)})", f"coalesce({', '.join(received)})"


def _object(found: Any) -> dict[str, Any]:
    return found if isinstance(found, dict) else {}


def _kind_type(kind: str) -> str:
    """The column type name of a kind, in SQL (`warehouse.KIND_TYPES`)."""
    return (
        f"CASE {kind} WHEN 'string' THEN 'text' WHEN 'bignum' THEN 'text'"
        f" WHEN 'json' THEN 'text' ELSE {kind} END"
    )


def _ndjson(payloads: Sequence[Any]) -> bytes:
    """The payloads as NDJSON lines, each with its place in the batch (`n`) put in
    front: the texts are not decoded, a dict (a payload that never went through the
    store) is encoded."""
    lines = []
    for n, payload in enumerate(payloads):
        text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
        if not text.startswith("{") or "\n" in text:  # not orjson's: one line it must be
            text = orjson.dumps(orjson.loads(text)).decode()
        lines.append(f'{{"n":{n},{text[1:]}' if text != "{}" else f'{{"n":{n}}}')
    return "\n".join(lines).encode()


__all__ = ["DISCARDS", "StagedBatch"]
