"""Options that several commands share, so each flag is spelled once.

Use the `...Option` aliases as parameter types (`project: ProjectOption = Path(".")`).
Where a command words a shared flag for its own output (`--json` of `explain` prints a
story, of `status` a table's rows), annotate with the matching `..._flag(help)` instead:
the flag name and short alias stay the shared ones, only the help differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

PROJECT_HELP = "The project folder (holding streamctl.yaml)."


def project_flag(help: str = PROJECT_HELP) -> Any:
    return typer.Option("--project", "-p", help=help, file_okay=False)


def sync_flag(help: str = "Only this sync. Repeatable.", *, short: bool = False) -> Any:
    """`--sync NAME`, repeatable; `short` adds `-s` (preview and test have it)."""
    names = ("--sync", "-s") if short else ("--sync",)
    return typer.Option(*names, help=help)


def source_flag(help: str = "Only this source. Repeatable.") -> Any:
    return typer.Option("--source", help=help)


def since_flag(
    help: str = "Only since then: a duration back from now (30m, 24h, 7d) or an ISO time.",
) -> Any:
    return typer.Option("--since", help=help)


def json_flag(help: str = "JSON on stdout.") -> Any:
    return typer.Option("--json", help=help)


ProjectOption = Annotated[Path, project_flag()]
SyncOption = Annotated[list[str] | None, sync_flag()]
SourceOption = Annotated[list[str] | None, source_flag()]
SinceOption = Annotated[str | None, since_flag()]
JsonOption = Annotated[bool, json_flag()]
