"""Secrets that used to slip through: URL-valued secrets behind a `base_url`, alert
channel credentials, and secrets of entries that fail validation."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.config.loader import check_project, load_project
from streamctl.config.secrets import redact, secret_strings
from tests.fakes.vendors_a import FakeSlack, serve
from tests.secret_leaks import assert_not_leaked

SLACK_TOKEN = "xoxT0kenHardening4242"
SLACK_PATH = f"/services/T0HARD/B0HARD/{SLACK_TOKEN}"
SLACK_URL = f"https://hooks.slack.com{SLACK_PATH}"

ORDER = {
    "type": "track",
    "event": "Order Completed",
    "messageId": "msg-1",
    "userId": "user-1",
    "properties": {"order_id": "o-1"},
}


def write_project(root: Path, main: str, syncs: dict[str, str] | None = None) -> Path:
    (root / "streamctl.yaml").write_text(textwrap.dedent(main))
    if syncs:
        (root / "syncs").mkdir()
        for name, text in syncs.items():
            (root / "syncs" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


# -- URL-valued secrets ---------------------------------------------------------------


def test_preview_masks_the_slack_webhook_path_behind_a_base_url(tmp_path, module_fake_server):
    server = serve(module_fake_server, FakeSlack({SLACK_PATH: "ok"}))
    write_project(
        tmp_path,
        f"""\
        version: 1
        sources:
          web: {{ type: http, write_keys: [test-key] }}
        destinations:
          orders-channel:
            type: slack
            config: {{ webhook_url: "{SLACK_URL}", base_url: "{server.url}" }}
        """,
        {
            "orders": """\
            source: web
            destination: orders-channel
            event_types:
              - type: message
                mappings:
                  required:
                    text: { template: "Order {{ row.properties.order_id }}" }
            """
        },
    )
    (tmp_path / "order.json").write_text(json.dumps(ORDER))

    result = CliRunner().invoke(
        app,
        [
            "preview",
            "--sync",
            "orders",
            str(tmp_path / "order.json"),
            "--project",
            str(tmp_path),
            "--json",
        ],
    )

    assert result.exit_code == 0, result.stderr
    (delivery,) = json.loads(result.stdout)["syncs"][0]["deliveries"]
    # The request goes to the test server, with the webhook's secret path masked.
    assert delivery["request"]["url"] == f"{server.url}***"
    assert delivery["request"]["body"] == {"text": "Order o-1"}
    assert_not_leaked(result, SLACK_PATH, SLACK_TOKEN)


def test_a_secret_url_makes_its_path_query_and_password_secrets_too():
    url = "https://bot:hunter2-pass@alerts.example/hooks/team-42/receive?token=abcdef0123456789"
    assert secret_strings(url) == {
        url,
        "/hooks/team-42/receive",
        "token=abcdef0123456789",
        "/hooks/team-42/receive?token=abcdef0123456789",
        "hunter2-pass",
    }
    shown = "POST http://127.0.0.1:8/hooks/team-42/receive?token=abcdef0123456789 failed"
    assert redact(shown, secret_strings(url)) == "POST http://127.0.0.1:8*** failed"


def test_short_url_paths_and_non_urls_stay_whole_secrets_only():
    # `/hooks` or `/` say nothing on their own: masking them would garble every URL.
    assert secret_strings("https://example.com/hooks") == {"https://example.com/hooks"}
    assert secret_strings("https://example.com/") == {"https://example.com/"}
    assert secret_strings("Bearer /a/very/long/path/like/token") == {
        "Bearer /a/very/long/path/like/token"
    }
    assert secret_strings("http://[::1/broken") == {"http://[::1/broken"}


def test_an_environment_value_that_is_a_url_masks_its_path_too(tmp_path):
    # The environment value lands in a field that is not secret (the webhook destination's
    # url): it is a secret because it came from the environment, path included.
    write_project(
        tmp_path,
        """\
        version: 1
        destinations:
          hook: { type: webhook, config: { url: "${HOOK_URL}" } }
        """,
    )
    secrets = load_project(
        tmp_path, env={"HOOK_URL": "https://in.example/ingest/k3y-0123456789"}
    ).secrets
    assert {"https://in.example/ingest/k3y-0123456789", "/ingest/k3y-0123456789"} <= secrets


# -- alert channel credentials --------------------------------------------------------

CHANNELS = """\
version: 1
alerts:
  channels:
    team-slack: { type: slack, webhook_url: "https://hooks.slack.com/services/T1/B1/slack-cred-1" }
    team-hook:
      type: webhook
      url: "https://alerts.example/receive/hook-cred-2"
      headers: { Authorization: "Bearer hook-header-3" }
    pager: { type: pagerduty, routing_key: "pd-routing-key-4" }
    mail:
      type: email
      host: smtp.example
      username: alerts
      password: "mail-password-5"
      from: alerts@example.com
      to: [oncall@example.com]
"""


def test_every_alert_channel_credential_is_a_project_secret(tmp_path):
    secrets = load_project(write_project(tmp_path, CHANNELS), env={}).secrets
    assert {
        "https://hooks.slack.com/services/T1/B1/slack-cred-1",
        "/services/T1/B1/slack-cred-1",
        "https://alerts.example/receive/hook-cred-2",  # the webhook channel's url
        "/receive/hook-cred-2",
        "Bearer hook-header-3",
        "pd-routing-key-4",
        "mail-password-5",
    } <= secrets
    # Not credentials: they stay readable in messages.
    assert {"alerts", "smtp.example", "alerts@example.com"}.isdisjoint(secrets)


def test_secrets_of_a_channel_with_a_problem_are_still_masked(tmp_path):
    # The channel is invalid (a typo'd key), yet its URL and its neighbour's key are
    # masked in every message, including the one about a rule naming the URL.
    main = """\
    version: 1
    alerts:
      channels:
        hook: { type: webhook, url: "https://alerts.example/receive/hook-cred-2", tiemout: 5 }
        pager: { type: pagerduty, routing_key: "pd-routing-key-4" }
      rules:
        - { name: x, sync: "https://alerts.example/receive/hook-cred-2", when: failures, above: 1 }
        - { name: y, sync: "pd-routing-key-4", when: failures, above: 1 }
    """
    project, problems = check_project(write_project(tmp_path, main), env={})
    assert project is None
    text = "\n".join(p.message for p in problems)
    assert "unknown key 'tiemout'" in text
    assert "unknown sync '***'" in text
    assert "hook-cred-2" not in text and "pd-routing-key-4" not in text


def test_secrets_of_a_destination_with_a_problem_are_still_masked(tmp_path):
    main = """\
    version: 1
    destinations:
      braze: { type: braze, descripton: typo, config: { api_key: braze-key-0123, endpoint: "https://rest.iad-01.braze.com" } }
    alerts:
      rules:
        - { name: x, sync: braze-key-0123, when: failures, above: 1 }
    """
    project, problems = check_project(write_project(tmp_path, main), env={})
    assert project is None
    text = "\n".join(p.message for p in problems)
    assert "unknown key 'descripton'" in text
    assert "braze-key-0123" not in text
