"""Redaction of secrets in any text streamctl prints."""

from __future__ import annotations

import json

from streamctl.config.secrets import redact, redact_data, secret_strings


def test_every_occurrence_is_masked():
    text = "POST https://hooks.example/abc12345 failed: token abc12345 refused"
    assert redact(text, {"abc12345"}) == "POST https://hooks.example/*** failed: token *** refused"


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole():
    assert redact("key=secret-long-value", {"secret", "secret-long-value"}) == "key=***"


def test_json_escaped_forms_are_masked_too():
    secret = 'pa"ss\\word'
    dumped = json.dumps({"password": secret})
    assert secret not in redact(dumped, {secret})
    assert "ss" not in redact(dumped, {secret}).replace("password", "")


def test_secrets_spelled_with_any_json_escape_are_masked():
    # As APIs echo them: \u escapes of any case (Go escapes <>&, others all but ASCII),
    # PHP's \/, a surrogate pair, and JSON inside a JSON string (doubled backslashes).
    secret = "ab/cd<ef\U0001f511"
    spellings = [
        "\\u0061b\\/cd\\u003Cef\\ud83d\\udd11",
        "".join(f"\\u{ord(char):04x}" for char in "ab/cd<ef") + "\\uD83D\\uDD11",
        "\\\\u0061b\\\\/cd<ef\U0001f511",
    ]
    for spelled in spellings:
        masked = redact(f'{{"detail": "bad key {spelled}."}}', {secret})
        assert masked == '{"detail": "bad key ***."}', spelled
    assert redact("\\u0061B/cd<ef", {"ab/cd<ef"}) == "\\u0061B/cd<ef"  # not the secret


def test_very_short_values_are_not_secrets():
    assert redact("line 1 of 12", {"1", "on"}) == "line 1 of 12"
    assert secret_strings("on") == set()


def test_secret_strings_reads_inside_headers_and_lists():
    value = {"Authorization": "Bearer t0ken-xyz", "X-Retries": 3, "list": ["abcd1234"]}
    assert secret_strings(value) == {"Bearer t0ken-xyz", "abcd1234"}


def test_redact_data_masks_strings_inside_structures():
    data = {"url": "https://x/abcd1234", "n": 1, "items": ["abcd1234", None]}
    assert redact_data(data, {"abcd1234"}) == {
        "url": "https://x/***",
        "n": 1,
        "items": ["***", None],
    }


def test_errors_reaching_the_cli_handler_are_redacted_with_loaded_secrets(tmp_path):
    import typer
    from typer.testing import CliRunner

    from streamctl.cli.main import StreamctlGroup
    from streamctl.config.loader import load_project
    from streamctl.core.errors import DeliveryError
    from tests.secret_leaks import SECRET, assert_not_leaked

    (tmp_path / "streamctl.yaml").write_text(
        "destinations:\n  hook: { type: webhook, config: { url: 'http://127.0.0.1:9/${TOKEN}' } }\n"
    )
    probe = typer.Typer(cls=StreamctlGroup)

    @probe.command()
    def deliver() -> None:
        """Fail the way a careless message would."""
        project = load_project(tmp_path, env={"TOKEN": SECRET})
        url = project.destinations["hook"].config["url"]
        msg = f"POST {url} refused"
        raise DeliveryError(msg)

    @probe.command()
    def other() -> None:
        """A second command, so the group keeps its subcommand names."""

    result = CliRunner().invoke(probe, ["deliver"])
    assert result.exit_code == 1
    assert result.stderr == "error: POST http://127.0.0.1:9/*** refused\n"
    assert_not_leaked(result, SECRET)
