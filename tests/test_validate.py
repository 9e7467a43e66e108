"""`streamctl validate`: exit codes, text and JSON output, sorting, secrets."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from streamctl.cli.main import app
from tests.secret_leaks import SECRET, assert_not_leaked

REPO = Path(__file__).resolve().parent.parent

MAIN = """\
version: 1
sources:
  web:
    type: http
    write_keys: ["${WEB_KEY}"]
destinations:
  out:
    type: file
    config: { path: out/events.ndjson }
  hook:
    type: webhook
    config:
      url: http://127.0.0.1:9/hook
      headers: { Authorization: "Bearer ${HOOK_TOKEN}" }
      tiemout: 5
"""
BROKEN_SYNC = """\
source: web
destination: out
event_types:
  - type: custom
    filter: { field: event, op: matches, value: "(" }
    mappings:
      required:
        user: userId
  - type: purchase
delivery: { max_age: forever }
"""
GOOD_SYNC = """\
source: web
destination: hook
event_types:
  - type: custom
    mappings:
      required: { token: { static: "${HOOK_TOKEN}" } }
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["validate", *args], env=env or {})


def test_the_repository_validates(monkeypatch):
    monkeypatch.chdir(REPO)
    result = invoke()
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "ok: the project is valid\n"
    assert result.stdout == ""


def test_several_mistakes_in_several_files_are_all_reported_in_order(tmp_path):
    write(
        tmp_path, {"streamctl.yaml": MAIN, "syncs/a.yaml": BROKEN_SYNC, "syncs/b.yaml": GOOD_SYNC}
    )
    result = invoke(
        "--project", str(tmp_path), env={"WEB_KEY": "web-key-1", "HOOK_TOKEN": "tok-12345"}
    )
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[:-1] == [
        "streamctl.yaml:15:7: unknown config key 'tiemout' for the webhook destination "
        "(did you mean 'timeout'?); it takes: url, method, headers, array_body, timeout",
        "syncs/a.yaml:5:49: " + lines[1].split(": ", 1)[1],  # worded by the filters module
        "syncs/a.yaml:8:15: event_types[0].mappings.required.user: a mapping value is exactly one of "
        "{field: PATH}, {static: VALUE}, {template: LIQUID}, {array: [...]} or {object: {...}}",
        "syncs/a.yaml:9:11: the file destination has no event type 'purchase'; its event types: custom",
        "syncs/a.yaml:10:22: delivery.max_age: expected a duration such as 500ms, 30s, 5m, 4h or 1d "
        "(or a number of seconds)",
    ]
    assert "regular expression" in lines[1]
    assert lines[-1] == "5 errors, 0 warnings"
    assert result.stdout == ""


def test_json_format_lists_the_same_problems_on_stdout(tmp_path):
    write(
        tmp_path, {"streamctl.yaml": MAIN, "syncs/a.yaml": BROKEN_SYNC, "syncs/b.yaml": GOOD_SYNC}
    )
    env = {"WEB_KEY": "web-key-1", "HOOK_TOKEN": "tok-12345"}
    text = invoke("--project", str(tmp_path), env=env)
    result = invoke("--project", str(tmp_path), "--format", "json", env=env)
    assert result.exit_code == 1
    assert result.stderr == ""
    problems = json.loads(result.stdout)
    rendered = [f"{p['path']}:{p['line']}:{p['column']}: {p['message']}" for p in problems]
    assert rendered == text.stderr.splitlines()[:-1]
    assert {p["severity"] for p in problems} == {"error"}


def test_missing_variables_are_errors_naming_file_line_and_variable(tmp_path):
    write(tmp_path, {"streamctl.yaml": MAIN, "syncs/b.yaml": GOOD_SYNC})
    result = invoke("--project", str(tmp_path), env={"HOOK_TOKEN": "tok-12345"})
    assert result.exit_code == 1
    assert (
        "streamctl.yaml:5:18: environment variable WEB_KEY is not set and has no default"
        in result.stderr.splitlines()
    )


def test_paths_are_relative_to_the_project_whatever_the_working_folder(tmp_path, monkeypatch):
    write(tmp_path / "proj", {"streamctl.yaml": MAIN.replace("tiemout", "timeout")})
    monkeypatch.chdir(tmp_path)
    result = invoke("--project", "proj", env={"WEB_KEY": "k1234", "HOOK_TOKEN": "tok-12345"})
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0].startswith("streamctl.yaml:3:3: warning: source 'web'")


def test_a_folder_without_streamctl_yaml_is_an_error(tmp_path):
    result = invoke("--project", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.startswith("streamctl.yaml:1:1: not a streamctl project")


def test_a_bad_format_is_a_usage_error(tmp_path):
    result = invoke("--project", str(tmp_path), "--format", "xml")
    assert result.exit_code == 2


def test_environment_secrets_never_appear_in_validate_output(tmp_path):
    # The secret is in the messages' raw material: a bad destination type and a bad
    # static value both come from it, and the webhook header is secret by catalog.
    write(
        tmp_path,
        {
            "streamctl.yaml": MAIN + "  leaky:\n    type: '${HOOK_TOKEN}'\n",
            "syncs/b.yaml": GOOD_SYNC + "delivery: { max_age: '${HOOK_TOKEN}' }\n",
        },
    )
    env = {"WEB_KEY": "web-key-1", "HOOK_TOKEN": SECRET}
    for args in ([], ["--format", "json"], ["--strict"]):
        result = invoke("--project", str(tmp_path), *args, env=env)
        assert result.exit_code == 1
        assert "***" in result.stderr + result.stdout
        assert_not_leaked(result, SECRET)


def test_sync_test_files_are_checked_too(tmp_path):
    CliRunner().invoke(app, ["init", str(tmp_path)])
    write(
        tmp_path,
        {
            "tests/orders.yaml": """\
                sync: web-to-file
                tests:
                  - name: an order
                    given: { type: track, event: Order Completed, userId: u1 }
                    expect: { outcme: delivered }
                """
        },
    )
    result = invoke("--project", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "tests/orders.yaml:5:15: unknown key 'outcme' in tests[0].expect (did you mean 'outcome'?)"
    )
