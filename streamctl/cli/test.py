"""`streamctl test`: run the project's sync unit tests (tests/*.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from streamctl.cli.options import ProjectOption, sync_flag
from streamctl.cli.output import stderr, stdout
from streamctl.config.secrets import redact
from streamctl.core.errors import UsageError

app = typer.Typer()


@app.command("test")
def test(
    project: ProjectOption = Path("."),
    sync: Annotated[
        list[str] | None, sync_flag("Only the tests of this sync (repeatable).", short=True)
    ] = None,
) -> None:
    """Run the sync unit tests of tests/*.yaml: given events, expected outcome, event type and payload.

    Prints `test NAME ... passed|failed`, each failure with its file:line and a diff.
    Exits 1 when a test fails.
    """
    from streamctl.config.loader import load_project
    from streamctl.sync_tests import load_sync_tests, run_sync_test

    loaded = load_project(project)
    tests = load_sync_tests(loaded)
    if sync:
        unknown = [name for name in sync if name not in {s.name for s in loaded.syncs}]
        if unknown:
            msg = f"unknown sync {unknown[0]!r}"
            raise UsageError(msg)
        tests = [t for t in tests if t.sync in sync]
    if not tests:
        stderr.print("no tests found (write them in tests/*.yaml; see docs/preview-and-test.md)")
        return

    failed = 0
    for case in tests:
        result = run_sync_test(loaded, case)
        if result.passed:
            stdout.print(f"test {escape(case.name)} ... [green]passed[/]", soft_wrap=True)
            continue
        failed += 1
        stdout.print(f"test {escape(case.name)} ... [red]failed[/]", soft_wrap=True)
        for failure in result.failures:
            text = redact(failure, loaded.secrets)
            stdout.print(f"  {escape(case.location)}: {escape(text)}", soft_wrap=True)
        for line in redact(result.diff, loaded.secrets).splitlines():
            style = "red" if line.startswith("-") else "green" if line.startswith("+") else ""
            stdout.print(f"    {escape(line)}", style=style, soft_wrap=True)

    passed = len(tests) - failed
    summary = f"{passed} passed" + (f", {failed} failed" if failed else "")
    stderr.print(summary, style="red" if failed else "green")
    if failed:
        raise typer.Exit(1)
