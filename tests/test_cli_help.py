"""Every command and subcommand has help text (the CLI is its own reference)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from streamctl.cli.main import app


def walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    # Duck-typed: Typer may bring its own copy of click, whose classes are not `click.Group`.
    found = [(path, command)]
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            found.extend(walk(sub, (*path, name)))
    return found


COMMANDS = walk(typer.main.get_command(app))
IDS = [" ".join(path) or "streamctl" for path, _ in COMMANDS]


def test_the_tree_has_the_commands_of_the_spec():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"init", "validate", "destinations list", "destinations show"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_command_has_help(path, command):
    assert (command.help or "").strip(), f"`streamctl {' '.join(path)}` has no help text"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    assert "<bool>" not in result.stdout  # flags take no value: no type to show


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("streamctl ")


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_option_has_help(path, command):
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert (param.help or "").strip(), (
                f"`streamctl {' '.join(path)}` {param.opts[0]} has no help"
            )
