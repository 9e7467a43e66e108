"""`streamctl validate`: check every project file offline and report every problem at once."""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from streamctl.cli.options import ProjectOption
from streamctl.cli.output import stderr
from streamctl.config.loader import check_project
from streamctl.config.secrets import redact
from streamctl.core.errors import ConfigError, Problem
from streamctl.core.model import Project
from streamctl.sync_tests import load_sync_tests

app = typer.Typer()


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@app.command("validate")
def validate(
    project: ProjectOption = Path("."),
    output_format: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            help="text: `path:line:col: message` lines on stderr; json: a JSON list on stdout.",
        ),
    ] = OutputFormat.TEXT,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on warnings too (for CI).")
    ] = False,
) -> None:
    """Check streamctl.yaml, syncs, contracts, functions and tests: every problem, sorted by file and line.

    Exits 1 when there is an error (or, with --strict, a warning), 0 otherwise.
    """
    loaded, problems = check_project(project)
    if loaded is not None:
        problems = sorted([*problems, *_sync_test_problems(loaded)])
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    if output_format is OutputFormat.JSON:
        typer.echo(json.dumps([p.as_json() for p in problems], indent=2))
    else:
        for problem in problems:
            stderr.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        stderr.print(_summary(len(errors), len(warnings)), markup=False, highlight=False)
    if errors or (strict and warnings):
        raise typer.Exit(1)


def _sync_test_problems(project: Project) -> list[Problem]:
    """Problems of the `tests/*.yaml` files, which only a loaded project can check."""
    try:
        load_sync_tests(project)
    except ConfigError as exc:
        return [
            dataclasses.replace(p, message=redact(p.message, project.secrets)) for p in exc.problems
        ]
    return []


def _summary(errors: int, warnings: int) -> str:
    if not errors and not warnings:
        return "ok: the project is valid"
    parts = [f"{errors} error{'s' if errors != 1 else ''}"]
    parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return ", ".join(parts)
