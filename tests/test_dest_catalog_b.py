"""The catalog of ga4, iterable, customerio and segment as `validate` and `destinations` use it.

For every event type with required fields: a sync leaving one unmapped, or mapping a
static value of the wrong JSON type, is refused by `streamctl validate` naming the
field; a sync mapping them all with the right types validates. `destinations list`
shows the eleven catalog types; `show TYPE --json` gives event types and fields.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.destinations.registry import CATALOG
from tests.test_dest_catalog_a import GOOD, WRONG, validate

MINE = ("ga4", "iterable", "customerio", "segment")
CONFIGS = {
    "ga4": {"measurement_id": "G-1", "api_secret": "s"},
    "iterable": {"api_key": "k"},
    "customerio": {"site_id": "s", "api_key": "k"},
    "segment": {"write_key": "w"},
}
ALL_TYPES = {
    "webhook", "file", "console", "slack", "amplitude", "mixpanel", "braze",
    "ga4", "iterable", "customerio", "segment",
}  # fmt: skip

CASES = [
    (type_name, spec.name)
    for type_name in MINE
    for spec in CATALOG[type_name].catalog.event_types
    if spec.required
]


def project(root: Path, type_name: str, event_type: str, required: dict) -> Path:
    (root / "syncs").mkdir(parents=True)
    (root / "streamctl.yaml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            sources:
              web: {{ type: http, write_keys: [k] }}
            destinations:
              dest: {{ type: {type_name}, config: {json.dumps(CONFIGS[type_name])} }}
            """
        )
    )
    mappings = {"required": {k: {"static": v} for k, v in required.items()}}
    sync = {
        "source": "web",
        "destination": "dest",
        "event_types": [{"type": event_type, "mappings": mappings}],
    }
    (root / "syncs" / "s.yaml").write_text(yaml.safe_dump(sync))
    return root


def complete(type_name: str, event_type: str) -> dict:
    spec = CATALOG[type_name].catalog.event_type(event_type)
    assert spec is not None
    return {f.name: GOOD[f.type] for f in spec.required}


@pytest.mark.parametrize(("type_name", "event_type"), CASES)
def test_all_required_fields_mapped_validates(tmp_path, type_name, event_type):
    result = validate(project(tmp_path, type_name, event_type, complete(type_name, event_type)))
    assert result.exit_code == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("type_name", "event_type"), CASES)
def test_each_unmapped_required_field_is_reported(tmp_path, type_name, event_type):
    required = complete(type_name, event_type)
    for index, name in enumerate(required):
        partial = {k: v for k, v in required.items() if k != name}
        result = validate(project(tmp_path / str(index), type_name, event_type, partial))
        assert result.exit_code == 1
        messages = [p["message"] for p in json.loads(result.stdout)]
        assert any(repr(name) in m and "not mapped" in m for m in messages), messages


@pytest.mark.parametrize(("type_name", "event_type"), CASES)
def test_static_values_of_the_wrong_type_are_reported(tmp_path, type_name, event_type):
    spec = CATALOG[type_name].catalog.event_type(event_type)
    wrong = {**complete(type_name, event_type), **{f.name: WRONG[f.type] for f in spec.required}}
    result = validate(project(tmp_path, type_name, event_type, wrong))
    assert result.exit_code == 1
    messages = " ".join(p["message"] for p in json.loads(result.stdout))
    for field in spec.required:
        assert repr(field.name) in messages


@pytest.mark.parametrize("type_name", MINE)
def test_destinations_show_json_lists_event_types_required_fields_and_secrets(type_name):
    result = CliRunner().invoke(app, ["destinations", "show", type_name, "--json"])
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    entry = CATALOG[type_name].catalog
    assert shown["type"] == type_name
    assert [t["type"] for t in shown["event_types"]] == [t.name for t in entry.event_types]
    for shown_type, spec in zip(shown["event_types"], entry.event_types, strict=True):
        assert shown_type["required"] == {f.name: f.type for f in spec.required}
        assert shown_type["optional"] == {f.name: f.type for f in spec.optional}
    assert "custom" in [t["type"] for t in shown["event_types"]]
    assert entry.docs.startswith("https://")
    assert "base_url" in json.dumps(shown["config"])


def test_destinations_list_shows_the_eleven_catalog_types():
    result = CliRunner().invoke(app, ["destinations", "list"])
    assert result.exit_code == 0, result.stderr
    assert set(CATALOG) == ALL_TYPES
    for type_name in ALL_TYPES:
        assert type_name in result.stdout
