"""The CLI's error handler for what nobody anticipated: one redacted line and exit 1,
the traceback (redacted, without locals) only with STREAMCTL_DEBUG=1; Ctrl-C exits 130
quietly; Typer's own exits and usage errors are untouched."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import streamctl.cli.preview
from streamctl.cli.main import app
from tests.secret_leaks import SECRET, assert_not_leaked

# A value only a local variable holds: a traceback printing locals would show it.
LOCAL_ONLY = "local-only-value-5f2c9"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "streamctl.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            sources:
              web: { type: http, write_keys: [test-key] }
            destinations:
              hook: { type: webhook, config: { url: "http://127.0.0.1:9/${TOKEN}" } }
            """
        )
    )
    (tmp_path / "syncs").mkdir()
    (tmp_path / "syncs" / "to-hook.yaml").write_text(
        textwrap.dedent(
            """\
            source: web
            destination: hook
            event_types:
              - type: custom
                mappings: { required: { id: { field: messageId } } }
            """
        )
    )
    (tmp_path / "event.json").write_text(json.dumps({"type": "track", "userId": "u1"}))
    return tmp_path


def preview(project: Path, **env: str):
    args = ["preview", "--sync", "to-hook", str(project / "event.json"), "--project", str(project)]
    return CliRunner().invoke(app, args, env={"TOKEN": SECRET, **env})


def fail_with(exc_type: type[BaseException]):
    """A stand-in for the pipeline's preview that fails the way a bug would."""

    def preview_event(project, destinations, event, *, syncs):
        local_credential = LOCAL_ONLY  # noqa: F841 (only a traceback with locals would show it)
        url = project.destinations["hook"].config["url"]
        raise exc_type(f"cannot reach {url}")

    return preview_event


def test_an_unexpected_error_is_one_redacted_line_and_a_hint(project, monkeypatch):
    monkeypatch.setattr(streamctl.cli.preview, "preview_event", fail_with(RuntimeError))

    result = preview(project)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: RuntimeError: cannot reach http://127.0.0.1:9/***",
        "hint: set STREAMCTL_DEBUG=1 for the full traceback (secrets masked)",
    ]
    assert isinstance(result.exception, SystemExit)  # handled, not escaping into Typer
    assert_not_leaked(result, SECRET)


def test_streamctl_debug_adds_the_traceback_redacted_and_without_locals(project, monkeypatch):
    monkeypatch.setattr(streamctl.cli.preview, "preview_event", fail_with(KeyError))

    result = preview(project, STREAMCTL_DEBUG="1")

    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert any("in preview_event" in line for line in lines)  # down to the failing frame
    assert lines[-1] == "error: KeyError: 'cannot reach http://127.0.0.1:9/***'"
    assert "hint:" not in result.stderr
    assert LOCAL_ONLY not in result.stderr
    assert_not_leaked(result, SECRET)


def test_ctrl_c_exits_130_quietly(project, monkeypatch):
    monkeypatch.setattr(streamctl.cli.preview, "preview_event", fail_with(KeyboardInterrupt))

    result = preview(project)

    assert result.exit_code == 130
    assert (result.stdout, result.stderr) == ("", "")


def test_usage_errors_and_typer_exits_keep_their_codes(project, monkeypatch):
    missing_argument = CliRunner().invoke(app, ["preview", "--project", str(project)])
    assert missing_argument.exit_code == 2
    assert "Missing argument" in missing_argument.stderr

    def exit_3(*args, **kwargs):
        raise typer.Exit(3)

    monkeypatch.setattr(streamctl.cli.preview, "preview_event", exit_3)
    result = preview(project)
    assert (result.exit_code, result.stderr) == (3, "")


def test_a_streamctl_usage_error_still_exits_2(project):
    event = str(project / "event.json")
    result = CliRunner().invoke(
        app, ["preview", "--sync", "nope", event, "--project", str(project)], env={"TOKEN": SECRET}
    )
    assert result.exit_code == 2
    assert result.stderr == "error: unknown sync 'nope'; known: to-hook\n"
