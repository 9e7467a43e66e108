"""`streamctl destinations list | show TYPE [--json]`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.destinations.registry import CATALOG
from tests.fakes.acme import AcmeDestination


def test_list_shows_every_catalog_type(monkeypatch):
    monkeypatch.setitem(CATALOG, "acme", AcmeDestination)
    result = CliRunner().invoke(app, ["destinations", "list"])
    assert result.exit_code == 0
    for name in ("webhook", "file", "console", "acme"):
        assert name in result.stdout


def test_list_json_is_one_document_per_type():
    result = CliRunner().invoke(app, ["destinations", "list", "--json"])
    types = [entry["type"] for entry in json.loads(result.stdout)]
    assert types == sorted(CATALOG)


def test_show_json_follows_the_spec_shape(monkeypatch):
    monkeypatch.setitem(CATALOG, "acme", AcmeDestination)
    result = CliRunner().invoke(app, ["destinations", "show", "acme", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert {"type", "event_types", "batch_size", "rate_limit", "config"} <= set(doc)
    purchase = doc["event_types"][0]
    assert purchase == {
        "type": "purchase",
        "description": "",
        "required": {"user_id": "string", "price": "number", "currency": "string"},
        "optional": {"quantity": "integer"},
        "open_fields": False,
        "user_fields": False,
        "properties": True,
        "batch_size": None,
    }
    assert (doc["batch_size"], doc["max_batch_size"], doc["rate_limit"]) == (50, 100, None)
    assert doc["config"]["api_key"]["secret"] is True
    assert doc["config"]["base_url"] == {
        "type": "string",
        "required": False,
        "secret": False,
        "default": "https://api.acme.test",
        "description": "",
    }


def test_show_text_marks_secret_config_keys():
    result = CliRunner().invoke(app, ["destinations", "show", "webhook"])
    assert result.exit_code == 0
    header_row = next(line for line in result.stdout.splitlines() if "headers" in line)
    assert "yes" in header_row  # the secret column
    assert "event type custom" in result.stdout


def test_show_unknown_type_is_a_usage_error_with_a_suggestion():
    result = CliRunner().invoke(app, ["destinations", "show", "webhok"])
    assert result.exit_code == 2
    assert "unknown destination type 'webhok' (did you mean 'webhook'?)" in result.stderr
    assert result.stdout == ""


def test_destinations_output_never_holds_configured_secrets(tmp_path, monkeypatch):
    # The catalog describes types, not configured values: even with a project whose
    # secret comes from the environment, nothing of it is printed.
    from tests.secret_leaks import SECRET, assert_not_leaked

    monkeypatch.chdir(tmp_path)
    (tmp_path / "streamctl.yaml").write_text(
        "destinations:\n  hook: { type: webhook, config: { url: 'http://x', headers: { A: '${TOKEN}' } } }\n"
    )
    for args in (["list"], ["list", "--json"], ["show", "webhook"], ["show", "webhook", "--json"]):
        result = CliRunner().invoke(app, ["destinations", *args], env={"TOKEN": SECRET})
        assert result.exit_code == 0
        assert_not_leaked(result, SECRET)


def test_destinations_alone_lists_the_catalog():
    alone = CliRunner().invoke(app, ["destinations"])
    listed = CliRunner().invoke(app, ["destinations", "list"])
    assert alone.exit_code == 0
    assert alone.stdout == listed.stdout
