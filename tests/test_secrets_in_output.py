"""Secrets on the output paths besides ingest: `errors`, `explain`, `status`, `top`, the
log of `run` and messages that echo a URL. A destination whose URL carries a password
and an API key, whose headers carry a token, answers 500 with a body echoing them; no
command prints any of them, nor the source's write key."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamctl.cli.main import app
from streamctl.config.loader import load_project
from streamctl.config.secrets import redact
from streamctl.delivery.runtime import Runtime
from streamctl.sources.normalise import normalise
from streamctl.store import SqliteStore
from tests.fakes.http import FakeServer, Received, Reply
from tests.listener_harness import ListenerThread
from tests.secret_leaks import assert_not_leaked

WRITE_KEY = "wk_live_Z2x9Secret"
URL_PASSWORD = "pw_Hq7Secret"
API_KEY = "ak_9QwSecret"
TOKEN = "tok_Vb3Secret"
SECRETS = (WRITE_KEY, URL_PASSWORD, API_KEY, TOKEN)


def echo_everything(req: Received) -> Reply:
    """A destination that fails and echoes the credentials it got, as some APIs do."""
    return Reply(
        500,
        {
            "error": "internal",
            "request_url": f"http://crm:{URL_PASSWORD}@127.0.0.1/hook?api_key={API_KEY}",
            "authorization": req.headers.get("Authorization", ""),
            "api_key": API_KEY,
            "detail": f"no source for {escaped(WRITE_KEY)}",
        },
    )


def escaped(text: str) -> str:
    """`text` with every character a JSON \\u escape, as some encoders write it."""
    return "".join(f"\\u{ord(char):04x}" for char in text)


@pytest.fixture(scope="module")
def failed_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("secrets")
    with FakeServer(echo_everything) as server:
        host = server.url.removeprefix("http://")
        (root / "streamctl.yaml").write_text(
            textwrap.dedent(
                f"""\
                version: 1
                store: state.db
                sources:
                  web: {{ type: http, write_keys: ["{WRITE_KEY}"] }}
                destinations:
                  crm:
                    type: webhook
                    config:
                      url: "http://crm:{URL_PASSWORD}@{host}/hook?api_key={API_KEY}"
                      headers: {{ Authorization: "Bearer {TOKEN}" }}
                """
            )
        )
        (root / "syncs").mkdir()
        (root / "syncs" / "to-crm.yaml").write_text(
            textwrap.dedent(
                """\
                source: web
                destination: crm
                delivery: { max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
                event_types:
                  - type: custom
                    mappings: { required: { event: { field: event } } }
                """
            )
        )
        event = normalise(
            {
                "type": "track",
                "event": "Signed Up",
                "userId": "u1",
                "messageId": "m-1",
                "context": {"note": f"key {WRITE_KEY}"},
            }
        )
        project = load_project(root)

        async def deliver() -> None:
            with SqliteStore.for_project(project) as store:
                async with Runtime(project, store) as runtime:
                    await runtime.submit("web", [event])
                    assert await runtime.drain(20)

        asyncio.run(deliver())
        assert server.requests, "the destination was never called"
    return root, "m-1"


@pytest.mark.parametrize(
    "command",
    [
        ["errors"],
        ["errors", "--json"],
        ["errors", "show", "1"],
        ["errors", "show", "1", "--json"],
        ["explain", "m-1"],
        ["explain", "m-1", "--json"],
        ["status"],
        ["status", "--json"],
        ["top", "--once", "--interval", "0.05"],
    ],
    ids=" ".join,
)
def test_no_command_prints_a_credential(failed_project, command):
    root, _ = failed_project
    result = CliRunner().invoke(app, [*command, "--project", str(root)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert_not_leaked(result, *SECRETS)
    # The key as the destination's answer spelled it (doubled backslashes in --json).
    assert escaped(WRITE_KEY)[6:] not in result.stdout.replace("\\\\", "\\")
    if command[:2] in (["explain", "m-1"], ["errors", "show"]) and "--json" not in command:
        assert "***" in result.stdout  # masked where they stood, not dropped unseen


def test_a_usage_error_echoing_a_url_masks_its_credentials(tmp_path):
    (tmp_path / "streamctl.yaml").write_text("version: 1\nsources: {}\n")
    url = f"http://crm:{URL_PASSWORD}@127.0.0.1:9/?token={TOKEN}"
    result = CliRunner().invoke(app, ["tail", "--project", str(tmp_path), "--url", url])
    assert result.exit_code != 0
    assert_not_leaked(result, URL_PASSWORD, TOKEN)


def test_the_log_of_run_masks_secrets_and_url_credentials(tmp_path, failed_project):
    root, _ = failed_project
    with ListenerThread(root) as listener:
        logging.getLogger("streamctl.delivery").error(
            "sending to %s failed with key %s",
            f"http://crm:{URL_PASSWORD}@example.test/hook?api_key={API_KEY}",
            WRITE_KEY,
        )
        listener.running.instance.say(f"streamctl: a note with Authorization: Bearer {TOKEN}")
    log = listener.err.getvalue()
    assert "sending to http://crm:***@example.test/hook?api_key=*** failed with key ***" in log
    for secret in SECRETS:
        assert secret not in log


def test_redaction_knows_credentials_by_where_they_stand():
    text = (
        'GET https://u:p4ss@api.example/v1?x=1&API_KEY=k1&token=t2 {"Authorization": "Bearer b3",'
        " 'X-Api-Key': 'k4', \"writeKey\": \"w5\"}\nStripe-Signature: t=1,v1=abc\n"
        "signature_header: must be a string"
    )
    masked = redact(text, ())
    for credential in ("p4ss", "k1", "t2", "b3", "k4", "w5", "v1=abc"):
        assert credential not in masked
    assert "?x=1&API_KEY=***&token=***" in masked
    assert "signature_header: must be a string" in masked  # a message, not a header
    assert json.loads('{"Authorization": "***"}') == {"Authorization": "***"}
