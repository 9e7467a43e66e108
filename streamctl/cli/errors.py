"""`streamctl errors`: what did not get through, why, and sending it again."""

from __future__ import annotations

import asyncio
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from streamctl.cli.options import ProjectOption, SinceOption, SyncOption, json_flag
from streamctl.cli.output import stderr, stdout, table_console
from streamctl.config.loader import load_project
from streamctl.config.secrets import redact
from streamctl.core.errors import UsageError
from streamctl.core.model import Project
from streamctl.core.units import parse_moment
from streamctl.delivery.retry import requeue, retry_candidates, retry_now
from streamctl.store.backend import open_store
from streamctl.store.queries import ErrorFilter

app = typer.Typer()
errors_app = typer.Typer(
    name="errors",
    help="Failed, retrying and archived events; `show ID`; `retry`.",
    invoke_without_command=True,
)
app.add_typer(errors_app)

JsonLinesOption = Annotated[bool, json_flag("One JSON object per line on stdout.")]


def parse_since(value: str | None) -> float | None:
    """Unix seconds from `--since`: a duration back from now, or an ISO 8601 time."""
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise UsageError(f"--since {exc}") from None


def json_line(data: Any, project: Project) -> str:
    return redact(orjson.dumps(data).decode(), project.secrets)


@errors_app.callback()
def errors(
    ctx: typer.Context,
    project_dir: ProjectOption = Path("."),
    syncs: SyncOption = None,
    statuses: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="retrying, archived, blocked, mapping_error, function_error, rejected (bad"
            " source input), or failed (every permanent failure). Repeatable.",
        ),
    ] = None,
    stages: Annotated[
        list[str] | None,
        typer.Option(
            "--stage",
            help="contract (lists every contract violation too), function, mapping, delivery,"
            " or source (input a source rejected: a bad Kafka message). Repeatable.",
        ),
    ] = None,
    since: SinceOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many, newest first.")
    ] = None,
    as_json: JsonLinesOption = False,
) -> None:
    """List events that were not delivered (yet): newest first."""
    if ctx.invoked_subcommand is not None:
        return
    project = load_project(project_dir)
    filters = ErrorFilter(
        tuple(syncs or ()), tuple(statuses or ()), tuple(stages or ()), parse_since(since), limit
    )
    with closing(open_store(project, readonly=True)) as store:
        rows = store.list_errors(filters)
    if as_json:
        for row in rows:
            typer.echo(json_line(row, project))
        return
    if not rows:
        stderr.print("no errors: nothing failed, retrying or archived", highlight=False)
        return
    console = table_console()
    for line in error_lines(rows, console.width, project.secrets):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


SYNC_WIDTH = 20  # a longer sync name is cut (`errors --sync NAME` takes it whole)
HEADINGS = ("id", "message id", "sync", "status")


def error_lines(rows: list[dict[str, Any]], width: int, secrets: frozenset[str]) -> list[str]:
    """Two lines an error, within `width` columns: the id, the message id (always whole,
    to be copied into `explain`), the sync and the status; then, under the message id,
    the attempts, when, and the error cut to fit (`errors show ID` has it all)."""
    heads = [
        (str(row["id"]), str(row["message_id"] or row.get("origin")), _cut(str(row["sync"] or row.get("source") or ""), SYNC_WIDTH), str(row["status"]))
        for row in rows
    ]  # fmt: skip
    widths = [max(len(head[i]) for head in [HEADINGS, *heads]) for i in range(len(HEADINGS))]
    indent = " " * (widths[0] + 2)
    lines = [f"{len(rows)} errors, newest first (`streamctl errors show ID` for one in full)"]
    lines.append(_aligned(HEADINGS, widths))
    for row, head in zip(rows, heads, strict=True):
        lines.append(redact(_aligned(head, widths), secrets))
        lines.append(_cut(redact(indent + _detail(row), secrets), width))  # cut after masking
    return lines


def _aligned(cells: tuple[str, ...], widths: list[int]) -> str:
    first, *others = cells
    padded = [
        first.rjust(widths[0]),
        *(c.ljust(w) for c, w in zip(others, widths[1:], strict=True)),
    ]
    return "  ".join(padded).rstrip()


def _detail(row: dict[str, Any]) -> str:
    attempts = row["attempts"] or 0
    when = _short_time(row["last_attempt_at"] or row.get("created_at"))
    parts = [
        f"{attempts} attempt{'s' if attempts != 1 else ''}" + (f", last {when}" if when else "")
    ]
    if row["stage"] == "source":  # rejected input: never attempted
        parts = [f"read {when}"]
    if row["status"] == "retrying" and row["next_attempt_at"]:
        parts.append(f"next {_short_time(row['next_attempt_at'])}")
    error = " ".join(str(row["error"] or row["stage"] or "").split())  # one line
    return "; ".join(parts) + (f": {error}" if error else "")


def _short_time(value: Any) -> str:
    """`2026-12-03T13:32:00.414Z` as `2026-12-03 13:32:00`."""
    return "" if value is None else str(value).replace("T", " ")[:19]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


@errors_app.command("show")
def show(
    error_id: Annotated[
        str,
        typer.Argument(help="An id from `streamctl errors` (a number, or v12 for a violation)."),
    ],
    project_dir: ProjectOption = Path("."),
    as_json: Annotated[bool, json_flag("The whole record as JSON on stdout.")] = False,
) -> None:
    """One error in full: the event, the payload, every attempt and its response."""
    project = load_project(project_dir)
    with closing(open_store(project, readonly=True)) as store:
        detail = store.error_detail(error_id)
    if detail is None:
        msg = f"no error with id {error_id!r} (ids come from `streamctl errors`)"
        raise UsageError(msg)
    if as_json:
        typer.echo(
            redact(orjson.dumps(detail, option=orjson.OPT_INDENT_2).decode(), project.secrets)
        )
        return
    for line in describe_record(detail):
        stdout.print(redact(line, project.secrets), markup=False, highlight=False, soft_wrap=True)


def describe_record(detail: dict[str, Any]) -> list[str]:
    """A delivery or violation record as lines of text, for people."""
    lines: list[str] = []
    if detail.get("stage") == "source":
        lines.append(
            f"rejected input {detail['id']} of source {detail['source']} at {detail['at']}"
        )
        lines.append(f"  read at {detail['origin']}: {detail['reason']}")
        lines.append(f"  input: {detail['excerpt']}")
        return lines
    if detail.get("stage") == "contract" and "kind" in detail:
        lines.append(
            f"violation {detail['id']} of contract {detail['contract']} ({detail['outcome']})"
        )
        lines.append(f"  {detail['kind']} at {detail['pointer'] or '/'}: {detail['message']}")
    else:
        lines.extend(describe_delivery(detail, indent=""))
    event = detail.get("event")
    if event is not None:
        lines.append(
            f"event {event['message_id']} received on {event['source']} at {event['received_at']}"
        )
        lines.append(
            "  "
            + orjson.dumps(event["payload"], option=orjson.OPT_INDENT_2)
            .decode()
            .replace("\n", "\n  ")
        )
    return lines


DECIDED = ("dropped", "filtered", "duplicate")  # outcomes chosen on purpose: a reason, no error


def describe_delivery(delivery: dict[str, Any], indent: str = "  ") -> list[str]:
    made = delivery.get("attempts_made", 0)
    head = (
        f"{indent}delivery {delivery['id']}: sync {delivery['sync']}"
        f" -> {delivery.get('destination') or '?'} ({delivery.get('event_type') or 'no event type'}):"
        f" {delivery['status']} at stage {delivery['stage']}"
        f", {made} attempt{'s' if made != 1 else ''}"
    )
    lines = [head]
    if delivery.get("error"):
        # A function leaving an event out, or no event type matching, is a decision
        # the project made, not a failure.
        label = "reason" if delivery["status"] in DECIDED else "error"
        lines.append(f"{indent}  {label}: {delivery['error']}")
    if delivery.get("traceback"):
        lines.append(
            f"{indent}  traceback:\n{indent}    "
            + delivery["traceback"].rstrip().replace("\n", f"\n{indent}    ")
        )
    if delivery.get("next_attempt_at") and delivery["status"] == "retrying":
        lines.append(f"{indent}  next attempt at {delivery['next_attempt_at']}")
    for number, attempt in enumerate(delivery.get("attempts", []), start=1):
        # Destinations that speak no HTTP (file, console) have no status code to show.
        code = "" if attempt["status_code"] is None else f" HTTP {attempt['status_code']}"
        latency = "" if attempt["latency_ms"] is None else f" in {attempt['latency_ms']} ms"
        lines.append(
            f"{indent}  attempt {number} at {attempt['at']}: {attempt['outcome']}{code}{latency}"
        )
        if attempt.get("error"):
            lines.append(f"{indent}    error: {attempt['error']}")
        if attempt.get("retry_after") is not None:
            lines.append(f"{indent}    retry-after: {attempt['retry_after']:g}s")
        if attempt.get("response"):
            lines.append(f"{indent}    response: {attempt['response']}")
    if delivery.get("payload") is not None:
        body = orjson.dumps(delivery["payload"]).decode()
        lines.append(f"{indent}  payload: {body}")
    return lines


@errors_app.command("retry")
def retry(
    project_dir: ProjectOption = Path("."),
    syncs: SyncOption = None,
    since: SinceOption = None,
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="Only this delivery id. Repeatable.")
    ] = None,
    queue_only: Annotated[
        bool,
        typer.Option(
            "--queue-only",
            help="Only put them back in the queue, for a running `streamctl run` (it picks them up within a second).",
        ),
    ] = False,
) -> None:
    """Send archived deliveries again, each only to the sync that failed it.

    Deliveries that succeeded for other syncs are never sent twice. Without
    --queue-only, the deliveries are sent now and the command waits for their
    outcome (stop a running `streamctl run` first, or use --queue-only). Exits 1
    if any ends archived again.
    """
    project = load_project(project_dir)
    filters = ErrorFilter(tuple(syncs or ()), since=parse_since(since))
    with closing(open_store(project)) as store:
        chosen = retry_candidates(store, filters, ids)
        if not chosen:
            stderr.print("nothing to retry: no archived deliveries match", highlight=False)
            return
        if queue_only:
            queued = requeue(store, chosen)
            stderr.print(
                f"requeued {queued.requeued} deliveries of {', '.join(queued.syncs)}",
                highlight=False,
            )
            return
        result = asyncio.run(retry_now(project, store, chosen))
    delivered = result.outcomes.get("delivered", 0)
    stderr.print(
        f"retried {result.requeued} deliveries ({', '.join(result.syncs)}): {delivered} delivered,"
        f" {result.archived_again} archived again",
        highlight=False,
    )
    if result.archived_again:
        raise typer.Exit(1)
