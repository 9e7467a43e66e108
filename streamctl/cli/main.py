"""The `streamctl` command: one Typer app per command group, joined here.

This is also the one place where errors become exit codes:
0 success; 1 validation, test or delivery failures; 2 usage errors.
"""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from streamctl.cli import (
    alerts,
    destinations,
    errors,
    explain,
    init,
    preview,
    replay,
    run,
    status,
    store,
    tail,
    test,
    top,
    validate,
)
from streamctl.cli.output import stderr
from streamctl.config.secrets import redact_loaded
from streamctl.errors import ConfigError, StreamctlError, UsageError


class StreamctlGroup(TyperGroup):
    """Turns StreamctlError into a message on stderr and an exit code, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems:
                stderr.print(str(problem), markup=False, highlight=False)
            raise typer.Exit(1) from None
        except UsageError as exc:
            stderr.print(f"error: {redact_loaded(str(exc))}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        except StreamctlError as exc:
            stderr.print(f"error: {redact_loaded(str(exc))}", markup=False, highlight=False)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=StreamctlGroup,
    name="streamctl",
    help="Real-time event streaming as code: ingest, contracts, functions, mappings, delivery.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    add_completion=False,
)

for module in (init, validate, test, preview, run, replay, errors, status, explain, tail, top):
    app.add_typer(module.app)
app.add_typer(destinations.app, name="destinations")
app.add_typer(alerts.app, name="alerts")
app.add_typer(store.app, name="store")


def main() -> None:
    app()
