"""`streamctl validate` checks a destination config value against its field's `choices`
(regions), offline, at the value's position: before, only `streamctl run` found out."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.config.loader import load_project

MAIN = """\
version: 1
sources:
  web: { type: http, write_keys: [test-key] }
destinations:
  amp:
    type: amplitude
    config:
      api_key: amp-key-123456
      region: EU
  mix:
    type: mixpanel
    config: { project_token: mix-token-123456, region: "${MIXPANEL_REGION:-uss}" }
"""
SYNCS = {
    "to-amp": """\
        source: web
        destination: amp
        event_types:
          - type: custom
            mappings:
              required: { user_id: { field: userId }, event_type: { field: event } }
        """,
    "to-mix": """\
        source: web
        destination: mix
        event_types:
          - type: custom
            mappings:
              required: { event: { field: event }, distinct_id: { field: userId } }
        """,
}


def write_project(root: Path, main: str) -> Path:
    (root / "streamctl.yaml").write_text(main)
    (root / "syncs").mkdir()
    for name, text in SYNCS.items():
        (root / "syncs" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


def validate(root: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["validate", "--project", str(root), *args], env=env or {})


def test_a_value_outside_the_choices_is_reported_at_the_value_with_a_suggestion(tmp_path):
    result = validate(write_project(tmp_path, MAIN))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "streamctl.yaml:9:15: config key 'region' of the amplitude destination is 'EU'"
        " (did you mean 'eu'?); it takes one of us, eu",
        "streamctl.yaml:12:56: config key 'region' of the mixpanel destination is 'uss'"
        " (did you mean 'us'?); it takes one of us, eu, in",
        "2 errors, 0 warnings",
    ]


def test_json_format_carries_the_same_problem(tmp_path):
    result = validate(write_project(tmp_path, MAIN), "--format", "json")

    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert [(p["line"], p["column"], p["severity"]) for p in problems] == [
        (9, 15, "error"),
        (12, 56, "error"),
    ]
    assert all(p["path"] == "streamctl.yaml" for p in problems)


def test_a_value_far_from_every_choice_lists_them_without_a_guess(tmp_path):
    main = MAIN.replace("region: EU", "region: antarctica")
    result = validate(write_project(tmp_path, main), env={"MIXPANEL_REGION": "in"})

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "streamctl.yaml:9:15: config key 'region' of the amplitude destination is 'antarctica';"
        " it takes one of us, eu",
        "1 error, 0 warnings",
    ]


def test_values_among_the_choices_and_absent_ones_are_valid(tmp_path):
    main = MAIN.replace("      region: EU\n", "")  # amplitude's default region
    root = write_project(tmp_path, main)

    result = validate(root, env={"MIXPANEL_REGION": "eu"})

    assert result.exit_code == 0, result.stderr
    project = load_project(root, env={"MIXPANEL_REGION": "eu"})
    assert project.destinations["mix"].config["region"] == "eu"
    assert "region" not in project.destinations["amp"].config
