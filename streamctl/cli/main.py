"""The `streamctl` command: one Typer app per command group, joined here.

This is also the one place where errors become exit codes:
0 success; 1 validation, test or delivery failures (and unexpected errors);
2 usage errors; 130 interrupted (Ctrl-C).

An unexpected exception (a bug, or a failure nobody anticipated) prints one redacted
line, never a traceback with locals; `STREAMCTL_DEBUG=1` adds the traceback, redacted.
"""

from __future__ import annotations

import errno
import os
import traceback
from importlib import metadata
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from streamctl.cli import (
    alerts,
    console,
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
    worker,
)
from streamctl.cli.output import stderr
from streamctl.config.secrets import redact_loaded
from streamctl.core.errors import ConfigError, StreamctlError, UsageError

if TYPE_CHECKING:
    # Typer vendors Click; TyperGroup.invoke takes this Context, which has no public name.
    from typer._click import Context

DEBUG_VARIABLE = "STREAMCTL_DEBUG"


class StreamctlGroup(TyperGroup):
    """Turns every exception into a message on stderr and an exit code, for every command;
    shows no value type (Typer's `<bool>`) for flags, which take no value."""

    def get_params(self, ctx: Context) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _hide_flag_types(command, ctx)
        return command

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        # Typer's own signals: --help, usage errors (exit 2), typer.Exit(code), Abort.
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except ConfigError as exc:
            for problem in exc.problems:
                _say(redact_loaded(str(problem)))
            raise typer.Exit(1) from None
        except UsageError as exc:
            _say(f"error: {redact_loaded(str(exc))}")
            raise typer.Exit(2) from None
        except StreamctlError as exc:
            _say(f"error: {redact_loaded(str(exc))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise  # stdout closed by `| head`: Typer exits quietly
            _unexpected(exc)


def _without_flag_types(params: list[Any]) -> list[Any]:
    """An empty metavar on each flag: its help line then shows no `<bool>` (a flag's
    metavar is used for nothing else)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _hide_flag_types(command: Any, ctx: Context) -> None:
    """`_without_flag_types` for a command, or a group and every command under it."""
    _without_flag_types(command.get_params(ctx))
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            _hide_flag_types(command.get_command(ctx, name), ctx)


def _version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("streamctl")
        except metadata.PackageNotFoundError:  # run from a source tree, not installed
            version = "unknown (not installed)"
        typer.echo(f"streamctl {version}")
        raise typer.Exit()


def _say(text: str) -> None:
    stderr.print(text, markup=False, highlight=False)


def _unexpected(exc: Exception) -> NoReturn:
    """One redacted line for an exception nobody anticipated; the traceback on request.

    Typer's pretty traceback is neither redacted nor free of locals, so it never shows."""
    message = redact_loaded(f"{type(exc).__name__}: {exc}")
    if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
        _say(redact_loaded("".join(traceback.format_exception(exc))).rstrip())
        _say(f"error: {message}")
    else:
        _say(f"error: {message}")
        _say(f"hint: set {DEBUG_VARIABLE}=1 for the full traceback (secrets masked)")
    raise typer.Exit(1) from None


app = typer.Typer(
    cls=StreamctlGroup,
    name="streamctl",
    help="Real-time event streaming as code: ingest, contracts, functions, mappings, delivery.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    add_completion=False,
)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Real-time event streaming as code: ingest, contracts, functions, mappings, delivery."""


for module in (
    init, validate, test, preview, run, worker, replay, errors, status, explain, tail, top,
    console,
):  # fmt: skip
    app.add_typer(module.app)
app.add_typer(destinations.app, name="destinations")
app.add_typer(alerts.app, name="alerts")
app.add_typer(store.app, name="store")


def main() -> None:
    app()
