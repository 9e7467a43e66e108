"""The catalog of every vendor destination as `validate` and `destinations` use it.

For every event type with required fields: a sync that leaves one unmapped, or maps a
static value of the wrong JSON type, is refused by `streamctl validate` with the
field's name; a sync mapping them all with the right types validates. `destinations
list` shows every catalog type; `show TYPE --json` gives event types and fields.
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

# A minimal valid config per vendor destination (webhook, file, console and kafka have
# no required fields in any event type, so no case here).
CONFIGS = {
    "slack": {"webhook_url": "https://hooks.slack.com/services/T/B/x"},
    "amplitude": {"api_key": "k"},
    "mixpanel": {"project_token": "t"},
    "braze": {"api_key": "k", "endpoint": "https://rest.iad-01.braze.com"},
    "ga4": {"measurement_id": "G-1", "api_secret": "s"},
    "iterable": {"api_key": "k"},
    "customerio": {"site_id": "s", "api_key": "k"},
    "segment": {"write_key": "w"},
    "meta": {"pixel_id": "1", "access_token": "t"},
    "tiktok": {"event_source_id": "P", "access_token": "t"},
    "snapchat": {"pixel_id": "p", "access_token": "t"},
    "pinterest": {"ad_account_id": "1", "access_token": "t"},
    "reddit": {"account_id": "t2_a", "access_token": "t"},
    "hubspot": {"access_token": "t"},
    "intercom": {"access_token": "t"},
    "linkedin": {"access_token": "t"},
    "postgres": {"url": "postgresql://localhost/analytics"},
    "duckdb": {"path": "warehouse.duckdb"},
    "parquet": {"path": "lake"},
}
VENDORS = tuple(CONFIGS)
STORAGE = ("postgres", "duckdb", "parquet")  # no HTTP: no base_url; `event` takes any event
HTTP_VENDORS = tuple(v for v in VENDORS if v not in STORAGE)
ALL_TYPES = {"webhook", "file", "console", "kafka", *VENDORS}
GOOD = {
    "string": "text",
    "number": 1.5,
    "integer": 2,
    "boolean": True,
    "object": {"a": 1},
    "array": [1],
    "any": "x",
}
WRONG = {
    "string": 12,
    "number": "abc",
    "integer": "abc",
    "boolean": "yes",
    "object": "abc",
    "array": "abc",
}

CASES = [
    (type_name, spec.name)
    for type_name in VENDORS
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


def validate(root: Path):
    return CliRunner().invoke(app, ["validate", "--project", str(root), "--format", "json"])


def complete(type_name: str, event_type: str) -> dict:
    spec = CATALOG[type_name].catalog.event_type(event_type)
    assert spec is not None
    return {f.name: GOOD[f.type] for f in spec.required}


def test_every_vendor_type_of_the_catalog_is_covered():
    assert set(CATALOG) == ALL_TYPES
    assert {type_name for type_name, _ in CASES} == set(VENDORS)


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
    assert spec is not None
    typed = [f for f in spec.required if f.type in WRONG]
    assert typed, "every required field of the vendor destinations has a JSON type"
    wrong = {**complete(type_name, event_type), **{f.name: WRONG[f.type] for f in typed}}
    result = validate(project(tmp_path, type_name, event_type, wrong))
    assert result.exit_code == 1
    messages = " ".join(p["message"] for p in json.loads(result.stdout))
    for field in typed:
        assert repr(field.name) in messages


@pytest.mark.parametrize("type_name", HTTP_VENDORS)
def test_destinations_show_json_lists_event_types_required_fields_and_config(type_name):
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


def test_destinations_list_shows_every_catalog_type():
    result = CliRunner().invoke(app, ["destinations", "list"])
    assert result.exit_code == 0, result.stderr
    for type_name in ALL_TYPES:
        assert type_name in result.stdout


@pytest.mark.parametrize(("type_name", "region"), [("amplitude", "EU"), ("mixpanel", "de")])
def test_an_unknown_region_stops_the_destination_with_its_location(type_name, region):
    from streamctl.core.errors import ConfigError
    from streamctl.core.model import DestinationConfig, Location
    from streamctl.destinations.registry import create

    config = DestinationConfig(
        "dest",
        type_name,
        {**CONFIGS[type_name], "region": region},
        Location("streamctl.yaml", 7, 3),
    )
    with pytest.raises(ConfigError) as caught:
        create(config)
    assert str(caught.value).startswith(
        "streamctl.yaml:7:3: destination 'dest': config key 'region'"
    )
    assert (
        create(DestinationConfig("dest", type_name, {**CONFIGS[type_name], "region": "eu"})).name
        == "dest"
    )
