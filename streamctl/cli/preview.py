"""`streamctl preview`: one event through the pipeline, every stage shown, nothing delivered."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.highlighter import JSONHighlighter
from rich.markup import escape
from rich.text import Text

from streamctl.cli.options import ProjectOption, json_flag, source_flag, sync_flag
from streamctl.cli.output import stdout
from streamctl.core.errors import EventError, UsageError
from streamctl.pipeline.preview import PreviewReport, preview_event

app = typer.Typer()

_JSON_HIGHLIGHTER = JSONHighlighter()

OUTCOME_STYLE = {
    "delivered": "green",
    "allowed": "green",
    "omitted": "yellow",
    "filtered": "yellow",
    "dropped": "yellow",
    "blocked": "red",
    "mapping_error": "red",
    "function_error": "red",
}


@app.command("preview")
def preview(
    event_file: Annotated[
        str,
        typer.Argument(metavar="EVENT.json", help="A JSON file holding one event, or - for stdin."),
    ],
    sync: Annotated[
        list[str] | None,
        sync_flag("The sync to run (repeatable). Default: every sync of --source.", short=True),
    ] = None,
    source: Annotated[
        str | None, source_flag("Run every sync of this source (when no --sync is given).")
    ] = None,
    project: ProjectOption = Path("."),
    as_json: Annotated[
        bool, json_flag("One JSON object on stdout (docs/preview-and-test.md).")
    ] = False,
) -> None:
    """Run one event through the pipeline and show every stage's decision and the request
    that would be sent. Nothing is delivered.

    Example: streamctl preview --sync purchases-to-braze examples/order.json
    """
    from streamctl.config.loader import load_project
    from streamctl.testing import destinations_of

    event = _read_event(event_file)
    loaded = load_project(project)
    syncs = _chosen_syncs(loaded, sync or [], source)
    destinations = destinations_of(loaded, {loaded.sync(name).destination for name in syncs})
    report = preview_event(loaded, destinations, event, syncs=syncs)
    if as_json:
        typer.echo(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        _render(report)


def _read_event(name: str) -> dict[str, Any]:
    try:
        raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        msg = f"cannot read {name}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    where = "stdin" if name == "-" else name
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"{where}: invalid JSON: {exc}"
        raise EventError(msg) from None
    if not isinstance(event, dict):
        msg = f"{where}: expected one event (a JSON object), got {type(event).__name__}"
        raise EventError(msg)
    return event


def _chosen_syncs(project: Any, syncs: list[str], source: str | None) -> list[str]:
    known = {s.name for s in project.syncs}
    for name in syncs:
        if name not in known:
            msg = f"unknown sync {name!r}; known: {', '.join(sorted(known)) or 'none'}"
            raise UsageError(msg)
    if syncs:
        sources = {project.sync(name).source for name in syncs}
        if len(sources) > 1:
            msg = f"the syncs read different sources ({', '.join(sorted(sources))}): preview them separately"
            raise UsageError(msg)
        return syncs
    if source is None:
        raise UsageError("name a sync with --sync (or every sync of a source with --source)")
    chosen = [s.name for s in project.syncs_for_source(source)]
    if not chosen:
        msg = f"no sync reads source {source!r}"
        raise UsageError(msg)
    return chosen


# -- the readable view ---------------------------------------------------------------


def _render(report: PreviewReport) -> None:
    data = report.as_json()  # redacted: everything printed comes from here
    event = data["event"]
    name = event.get("event") or event.get("name") or ""
    who = event.get("userId") or event.get("anonymousId")
    _say(
        f"[bold]event[/] {escape(str(data['message_id']))}  {event['type']} "
        f"{escape(repr(name)) if name else ''}  user {escape(str(who))}"
    )
    contract = data["contract"]
    label = f"contract {contract['name']}" if contract["name"] else "contract (none)"
    _say(f"[bold]{escape(label)}[/]: {_styled(contract['outcome'])}")
    for violation in contract["violations"]:
        _say(
            f"  {violation['kind']} {escape(violation['pointer'] or '/')}: {escape(violation['message'])}"
        )
    for sync_data in data["syncs"]:
        _render_sync(sync_data)


def _render_sync(data: dict[str, Any]) -> None:
    _say()
    _say(
        f"[bold]sync {escape(data['sync'])}[/] -> {escape(data['destination'])}: {_styled(data['outcome'])}"
    )
    function = data["function"]
    if function["path"]:
        count = len(function["events"])
        _say(
            f"  function {escape(function['path'])}: {_styled(function['outcome'])} ({count} event{'s' * (count != 1)} out)"
        )
    for decision in data["decisions"]:
        if decision["status"] == "pending":
            continue
        what = f" {decision['event_type']}" if decision["event_type"] else ""
        _say(f"  {_styled(decision['status'])}{escape(what)}: {escape(decision['error'] or '')}")
        if decision["traceback"]:
            _say(escape(decision["traceback"].rstrip()), style="dim")
    for delivery in data["deliveries"]:
        _say(
            f"  event type [bold]{escape(delivery['event_type'])}[/]  (message {escape(delivery['message_id'])})"
        )
        _say("  payload:")
        _say(_json(delivery["payload"]))
        request = delivery["request"]
        if request is None:
            _say(f"  request: [red]{escape(delivery['error'] or '')}[/]")
            continue
        _say(f"  request that would be sent: {request['method']} {escape(request['url'])}")
        for header, value in request["headers"].items():
            _say(f"    {escape(header)}: {escape(str(value))}")
        _say(
            _json(request["body"])
            if not isinstance(request["body"], str)
            else escape(request["body"])
        )


# What a preview says instead of an outcome it only foresees (`--json` keeps the outcome).
PREVIEW_WORDS = {"delivered": "would be sent (nothing is sent by a preview)"}


def _styled(outcome: str) -> str:
    style = OUTCOME_STYLE.get(outcome, "bold")
    return f"[{style}]{PREVIEW_WORDS.get(outcome, outcome)}[/]"


def _json(value: Any) -> Text:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return _JSON_HIGHLIGHTER(Text(textwrap.indent(text, "    ")))


def _say(*objects: Any, **options: Any) -> None:
    """Print on stdout without cropping or re-wrapping: payloads must stay whole and copyable."""
    stdout.print(*objects, soft_wrap=True, **options)
