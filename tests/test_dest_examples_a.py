"""The example projects examples/{slack,amplitude,mixpanel,braze,hubspot,intercom} validate and deliver.

Each example is replayed, unchanged, with the first 30 events of examples/events.ndjson
into the fake vendor (its `base_url` comes from the environment, as the example's
comments say), which checks every request against the vendor's documentation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from tests.fakes.vendors_a import FakeAmplitude, FakeBraze, FakeMixpanel, FakeSlack, serve
from tests.fakes.vendors_c import FakeHubSpot, FakeIntercom

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SLACK_HOOK = "/services/T0EXAMPLE/B0EXAMPLE/example-secret"


def example_events(tmp_path: Path, count: int) -> Path:
    """The first `count` events of examples/events.ndjson, as a file under tmp_path."""
    lines = (EXAMPLES / "events.ndjson").read_text().splitlines(keepends=True)[:count]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(lines))
    return path


@pytest.fixture
def events_file(tmp_path) -> Path:
    return example_events(tmp_path, 30)


def copy_example(name: str, tmp_path: Path) -> Path:
    project = tmp_path / name
    shutil.copytree(EXAMPLES / name, project, ignore=shutil.ignore_patterns(".streamctl"))
    return project


def run(*args: str):
    return CliRunner().invoke(app, list(args))


CASES = {
    "slack": (
        lambda: FakeSlack({SLACK_HOOK: "ok"}),
        {"SLACK_WEBHOOK_URL": "https://hooks.slack.com" + SLACK_HOOK},
        "SLACK_BASE_URL",
    ),
    "amplitude": (
        lambda: FakeAmplitude("amp-example-key"),
        {"AMPLITUDE_API_KEY": "amp-example-key"},
        "AMPLITUDE_BASE_URL",
    ),
    "mixpanel": (
        lambda: FakeMixpanel(token="mp-example-token", secret="mp-example-secret"),
        {"MIXPANEL_PROJECT_TOKEN": "mp-example-token", "MIXPANEL_API_SECRET": "mp-example-secret"},
        "MIXPANEL_BASE_URL",
    ),
    "braze": (
        lambda: FakeBraze("braze-example-key"),
        {"BRAZE_API_KEY": "braze-example-key"},
        "BRAZE_BASE_URL",
    ),
    "hubspot": (
        lambda: FakeHubSpot("hs-example-token"),
        {"HUBSPOT_ACCESS_TOKEN": "hs-example-token"},
        "HUBSPOT_BASE_URL",
    ),
    "intercom": (
        lambda: FakeIntercom("ic-example-token"),
        {"INTERCOM_ACCESS_TOKEN": "ic-example-token"},
        "INTERCOM_BASE_URL",
    ),
}


def received(name: str, fake) -> int:
    """How many events the fake vendor took in."""
    if name == "slack":
        return len(fake.messages)
    if name == "amplitude":
        return len(fake.ingested)
    if name == "mixpanel":
        return len(fake.ingested) + len(fake.profiles)
    if name in ("hubspot", "intercom"):
        return len(fake.accepted)
    return (
        len(fake.events)
        + len(fake.purchases)
        + len([a for a in fake.attributes if "first_name" in a])
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_validates_and_replays_into_the_vendor(
    name, tmp_path, module_fake_server, events_file, monkeypatch
):
    make_fake, env, base_url_variable = CASES[name]
    fake = make_fake()
    server = serve(module_fake_server, fake)
    for variable, value in {**env, base_url_variable: server.url}.items():
        monkeypatch.setenv(variable, value)
    project = copy_example(name, tmp_path)

    checked = run("validate", "--project", str(project))
    assert checked.exit_code == 0, checked.stderr

    result = run("replay", str(events_file), "--project", str(project), "--json")
    assert result.exit_code == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    (counts,) = summary["syncs"]
    assert set(counts) <= {"sync", "delivered", "filtered"}, (
        counts
    )  # no mapping errors, nothing archived
    assert fake.problems == []
    assert counts["delivered"] == received(name, fake) > 0
    for secret in env.values():
        assert secret not in result.stdout + result.stderr
