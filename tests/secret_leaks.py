"""Checking that a secret never reaches any output of a command.

    result = runner.invoke(app, [...], env={"TOKEN": SECRET})
    assert_not_leaked(result, SECRET)

Looks in stdout, stderr, the exception (its message and traceback text) and, for
JSON output and `!r` messages, the escaped forms of the secret.
"""

from __future__ import annotations

import json
import traceback

from click.testing import Result

# Distinctive, so a match is never a coincidence; with characters JSON escapes.
SECRET = 'sk_live_7Hq"p\\9ZtLw2024'


def forms(secret: str) -> set[str]:
    return {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]}


def assert_not_leaked(result: Result, *secrets: str) -> None:
    exception_text = ""
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        exception_text = "".join(traceback.format_exception(*result.exc_info))
    for secret in secrets:
        for form in forms(secret):
            assert form not in result.stdout, f"secret in stdout: {result.stdout[:500]}"
            assert form not in result.stderr, f"secret in stderr: {result.stderr[:500]}"
            assert form not in exception_text, f"secret in exception: {exception_text[:500]}"
