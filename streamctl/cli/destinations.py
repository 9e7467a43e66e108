"""`streamctl destinations list | show TYPE`: the destination catalog (SPEC §6)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from streamctl.cli.options import json_flag
from streamctl.cli.output import stdout
from streamctl.core.errors import UsageError, suggest
from streamctl.destinations.base import CatalogEntry, EventTypeSpec, FieldSpec
from streamctl.destinations.registry import CATALOG

app = typer.Typer(
    help="The destination catalog: event types, required fields, batch sizes, rate limits.",
)

JsonOption = Annotated[bool, json_flag("Print JSON on stdout.")]


@app.callback(invoke_without_command=True)
def catalog(ctx: typer.Context) -> None:
    """The destination catalog: event types, required fields, batch sizes, rate limits.

    Without a subcommand, the same as `streamctl destinations list`."""
    if ctx.invoked_subcommand is None:
        list_destinations(as_json=False)


@app.command("list")
def list_destinations(as_json: JsonOption = False) -> None:
    """Every destination type streamctl can deliver to."""
    entries = [CATALOG[name].catalog for name in sorted(CATALOG)]
    if as_json:
        typer.echo(json.dumps([entry_json(e) for e in entries], indent=2, ensure_ascii=False))
        return
    table = Table("type", "event types", "batch size", "rate limit", "description")
    for entry in entries:
        table.add_row(
            entry.type,
            ", ".join(t.name for t in entry.event_types),
            _batch(entry),
            _rate(entry.rate_limit),
            entry.description,
        )
    stdout.print(table)


@app.command("show")
def show_destination(
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="A destination type.")],
    as_json: JsonOption = False,
) -> None:
    """One destination type: config keys (secret ones marked), event types and their fields."""
    if type_name not in CATALOG:
        msg = f"unknown destination type {type_name!r}{suggest(type_name, CATALOG)}; known: {', '.join(sorted(CATALOG))}"
        raise UsageError(msg)
    entry = CATALOG[type_name].catalog
    if as_json:
        typer.echo(json.dumps(entry_json(entry), indent=2, ensure_ascii=False))
        return
    stdout.print(f"[bold]{entry.type}[/bold]: {entry.description}")
    if entry.docs:
        stdout.print(f"docs: {entry.docs}", markup=False)
    stdout.print(
        f"batch size: {_batch(entry)}   rate limit: {_rate(entry.rate_limit)}"
        + (f"   identity: {entry.identity}" if entry.identity else ""),
        markup=False,
    )
    stdout.print(_config_table(entry))
    for spec in entry.event_types:
        _print_event_type(spec)


def entry_json(entry: CatalogEntry) -> dict[str, Any]:
    """The `destinations show TYPE --json` document (SPEC §3); never holds a configured value."""
    return {
        "type": entry.type,
        "description": entry.description,
        "docs": entry.docs,
        "event_types": [_event_type_json(spec) for spec in entry.event_types],
        "batch_size": entry.batch_size,
        "max_batch_size": entry.max_batch_size,
        "max_batch_bytes": entry.max_batch_bytes,
        "rate_limit": entry.rate_limit,
        "identity": entry.identity,
        "config": {
            f.name: {
                "type": f.type,
                "required": f.required,
                "secret": f.secret,
                "default": None if f.secret else f.default,
                "description": f.description,
            }
            for f in entry.config
        },
    }


def _event_type_json(spec: EventTypeSpec) -> dict[str, Any]:
    return {
        "type": spec.name,
        "description": spec.description,
        "required": _fields_json(spec.required),
        "optional": _fields_json(spec.optional),
        "open_fields": spec.open_fields,
        "user_fields": spec.user_fields,
        # Only where the section takes a fixed set of keys (the ad platforms' user_data).
        **({"user_keys": list(spec.user_keys)} if spec.user_keys else {}),
        "properties": spec.properties,
        "batch_size": spec.batch_size,
    }


def _fields_json(fields: tuple[FieldSpec, ...]) -> dict[str, str]:
    return {f.name: f.type for f in fields}


def _config_table(entry: CatalogEntry) -> Table:
    table = Table(
        "config key", "type", "required", "secret", "default", "description", title="config"
    )
    for f in entry.config:
        default = "" if f.default is None or f.secret else json.dumps(f.default)
        table.add_row(
            f.name,
            f.type,
            "yes" if f.required else "",
            "yes" if f.secret else "",
            default,
            f.description,
        )
    if not entry.config:
        table.add_row("(none)", "", "", "", "", "")
    return table


def _print_event_type(spec: EventTypeSpec) -> None:
    sections = [s for s, ok in (("user", spec.user_fields), ("properties", spec.properties)) if ok]
    stdout.print(
        f"\n[bold]event type {spec.name}[/bold]"
        + (f": {spec.description}" if spec.description else "")
    )
    notes = "sections: required" + "".join(f", {s}" for s in sections)
    if spec.open_fields:
        notes += "; any field name may be mapped, none is required"
    if spec.batch_size:
        notes += f"; batch size {spec.batch_size}"
    stdout.print(notes, markup=False)
    if spec.user_keys:
        stdout.print(f"user fields: {', '.join(spec.user_keys)}", markup=False)
    if not spec.required and not spec.optional:
        return
    table = Table("field", "type", "required", "description")
    for f in spec.required:
        table.add_row(f.name, f.type, "yes", f.description)
    for f in spec.optional:
        table.add_row(f.name, f.type, "", f.description)
    stdout.print(table)


def _batch(entry: CatalogEntry) -> str:
    if entry.max_batch_size == entry.batch_size:
        return str(entry.batch_size)
    return f"{entry.batch_size} (max {entry.max_batch_size})"


def _rate(rate: float | None) -> str:
    return "none documented" if rate is None else f"{rate:g}/s"
