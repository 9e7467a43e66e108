"""`streamctl explain MESSAGE_ID`: the whole story of one event, stage by stage."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from streamctl.cli.errors import describe_delivery
from streamctl.cli.options import ProjectOption, json_flag
from streamctl.cli.output import stdout
from streamctl.config.loader import load_project
from streamctl.config.secrets import redact
from streamctl.core.errors import StreamctlError
from streamctl.store.backend import open_store

app = typer.Typer()


class NotFound(StreamctlError):
    """No event with that messageId in the store (exit 1)."""


@app.command("explain")
def explain(
    message_id: Annotated[str, typer.Argument(help="The event's messageId.")],
    project_dir: ProjectOption = Path("."),
    as_json: Annotated[bool, json_flag("The story as JSON on stdout.")] = False,
) -> None:
    """Everything that happened to one event: receipt, contract, each sync's function,
    filter and mapping decision, every delivery attempt and response."""
    project = load_project(project_dir)
    with closing(open_store(project, readonly=True)) as store:
        story = store.explain(message_id)
    if not story:
        msg = f"no event with messageId {message_id!r} in {redact(project.store_location, project.secrets)}"
        raise NotFound(msg)
    if as_json:
        text = orjson.dumps(
            {"message_id": message_id, "receipts": story}, option=orjson.OPT_INDENT_2
        )
        typer.echo(redact(text.decode(), project.secrets))
        return
    for line in story_lines(story):
        stdout.print(redact(line, project.secrets), markup=False, highlight=False, soft_wrap=True)


STAGE_WORDS = {
    "blocked": "blocked by the contract",
    "dropped": "dropped by the function",
    "function_error": "the function failed",
    "filtered": "filtered: no event type matched",
    "mapping_error": "mapping error (permanent, not sent)",
    "duplicate": "duplicate",
    "pending": "waiting to be sent",
    "retrying": "retrying",
    "delivered": "delivered",
    "archived": "archived (gave up)",
}


def story_lines(story: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for number, receipt in enumerate(story, start=1):
        head = (
            f"receipt {number}: received on source {receipt['source']} at {receipt['received_at']}"
        )
        if receipt["duplicate"]:
            lines.append(head + " - a duplicate of an earlier receipt within 24 h: not processed")
            continue
        lines.append(head)
        contract = receipt["contract"] or "no contract"
        lines.append(f"  contract: {contract}")
        for v in receipt["violations"]:
            version = f" version {v['version']}" if v["version"] else ""
            lines.append(
                f"    {v['kind']} at {v['pointer'] or '/'}: {v['message']}"
                f" (contract {v['contract']}{version})"
            )
        for delivery in receipt["deliveries"]:
            lines.append(
                f"  sync {delivery['sync']}: {STAGE_WORDS.get(delivery['status'], delivery['status'])}"
            )
            lines.extend(describe_delivery(delivery, indent="    "))
        lines.append("  event: " + orjson.dumps(receipt["payload"]).decode())
    return lines
