"""Secrets: values that must never be printed, and their redaction.

A project's secrets (`Project.secrets`) are every value that came from the
environment through `${VAR}`, every destination config field its catalog marks
`secret`, every webhook source's signing secret and every alert channel credential.
Anything that prints text derived from a project passes it through `redact` first
(and the CLI's error handler passes every message through `redact_loaded`):

    redact("POST https://hooks.example/T0/abc123 failed", {"abc123"})
    # 'POST https://hooks.example/T0/*** failed'

Credentials that are not the project's own are masked by where they stand, whatever
their value: the password of a URL (`https://user:***@host`), a credential query
parameter (`?api_key=***`, `token`, `sig`, ...), and the value of a credential header
or field (`Authorization`, `X-Api-Key`, `Cookie`, `writeKey`, any `*signature*`), as
JSON, as a Python repr or as a `Name: value` header line:

    redact('GET https://u:pw@api.example/v1?api_key=k1 {"Authorization": "Bearer t"}', ())
    # 'GET https://u:***@api.example/v1?api_key=*** {"Authorization": "***"}'

Values shorter than `MIN_SECRET_LENGTH` are not treated as secrets: redacting every
"1" or "on" would garble the output without protecting anything.

A secret that is a URL (Slack's `webhook_url`, an alert channel's `url`) also makes
its credential-bearing parts secrets: a `base_url` override sends the same path to
another host, and the full URL no longer appears in what is printed:

    secret_strings("https://hooks.slack.com/services/T0/B0/abc123")
    # {'https://hooks.slack.com/services/T0/B0/abc123', '/services/T0/B0/abc123'}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
MIN_SECRET_LENGTH = 4
# A secret URL's path or query at least this long is a credential on its own (Slack's
# `/services/T.../B.../token`); shorter ones (`/`, `/hooks`) are too common to mask.
MIN_URL_PART_LENGTH = 16

# Query parameters that carry credentials (Google's `key`, GA4's `api_secret`, signed
# URLs' `sig`/`signature`, RudderStack's `writeKey`), compared without case.
QUERY_CREDENTIALS = (
    "api_key|apikey|api-key|api_secret|key|token|access_token|auth|secret|password|sig"
    "|signature|writekey|write_key|client_secret|code"
)
# Header and field names whose values are credentials, compared without case. Narrower
# than the query's: a payload field named `key` or `token` is usually plain data.
FIELD_CREDENTIALS = (
    r"authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key|api_key|apikey"
    r"|api_secret|client_secret|password|access_token|refresh_token|writekey|write_key"
    r"|routing_key|[\w-]*signature(?:-256)?|[\w-]*hmac[\w-]*"
)
# The same as `Name: value` lines: header names only (with a `-`, or one of these), so
# a message such as `signature_header: must be a string` is left alone.
HEADER_CREDENTIALS = (
    r"authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key"
    r"|[\w-]*-signature(?:-256)?|[\w-]*-hmac[\w-]*"
)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/@:\"'<>]*:)[^\s/@\"'<>]+@", re.I)
_QUERY_VALUE = re.compile(rf"(?P<head>[?&;](?:{QUERY_CREDENTIALS})=)[^&#\s\"'<>\\]+", re.I)
# A quote may itself be escaped: JSON text inside a JSON string (a response body).
_QUOTED_FIELD = re.compile(
    rf"(?P<head>(?P<q>\\?[\"'])(?:{FIELD_CREDENTIALS})(?P=q)\s*:\s*(?P<v>\\?[\"']))"
    r"(?:(?!(?P=v))(?:\\.|[^\\]))*(?P=v)",
    re.I,
)
_HEADER_LINE = re.compile(
    rf"(?P<head>(?:^|(?<=\s))(?:{HEADER_CREDENTIALS}):[ \t]*)(?![\"'*])[^\r\n]+", re.I | re.M
)

# Every secret of every project loaded in this process: the last line of defence for
# text that reaches the user without a Project at hand (the CLI's error handler).
_loaded_secrets: set[str] = set()


def remember_secrets(secrets: Iterable[str]) -> None:
    """Make `redact_loaded` mask these too (the loader calls this for every project)."""
    _loaded_secrets.update(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)


def redact_loaded(text: str) -> str:
    """`text` with the secrets of every project loaded so far masked."""
    return redact(text, frozenset(_loaded_secrets))


def secret_strings(value: Any) -> set[str]:
    """Every string (and number) inside a secret config value: a token, or a dict of headers."""
    if isinstance(value, str):
        return {value, *_url_credentials(value)} if len(value) >= MIN_SECRET_LENGTH else set()
    if isinstance(value, bool) or value is None:
        return set()
    if isinstance(value, int | float):
        return secret_strings(str(value))
    if isinstance(value, dict):
        return set().union(*(secret_strings(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(secret_strings(v) for v in value))
    return set()


def _url_credentials(text: str) -> set[str]:
    """The parts of a secret URL that give access without its host: path, query, password."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:  # not a URL after all (an unbalanced `[` in the host, a bad port)
        return set()
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return set()
    found = {part for part in (parts.path, parts.query) if len(part) >= MIN_URL_PART_LENGTH}
    if parts.query and len(parts.path) + len(parts.query) >= MIN_URL_PART_LENGTH:
        found.add(f"{parts.path}?{parts.query}")
    if password and len(password) >= MIN_SECRET_LENGTH:
        found.add(password)
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (and its JSON- and repr-escaped forms) replaced by `***`,
    and every credential a URL, header or field carries (`redact_credentials`).

    JSON may spell any character as `\\uXXXX` (and `/` as `\\/`): an API's answer
    echoing a key so (Go escapes `<>&`, PHP `/`, some encoders all but ASCII) is
    masked too; that second, slower pattern runs only on text with a backslash."""
    wanted = frozenset(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
    pattern = _pattern(wanted)
    if pattern is not None:
        text = pattern.sub(MASK, text)
        if "\\" in text:
            text = _escaped_pattern(wanted).sub(MASK, text)
    return redact_credentials(text)


def redact_credentials(text: str) -> str:
    """`text` with the credentials masked that are known by where they stand, not by
    their value: URL passwords, credential query parameters, header and field values."""
    if not _MAY_HOLD_CREDENTIALS.search(text):  # the common case: one cheap scan
        return text
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    text = _QUERY_VALUE.sub(rf"\g<head>{MASK}", text)
    text = _QUOTED_FIELD.sub(rf"\g<head>{MASK}\g<v>", text)
    return _HEADER_LINE.sub(rf"\g<head>{MASK}", text)


def _is_credential_name(key: object) -> bool:
    return isinstance(key, str) and _CREDENTIAL_NAME.fullmatch(key) is not None


_CREDENTIAL_NAME = re.compile(FIELD_CREDENTIALS, re.I)
_MAY_HOLD_CREDENTIALS = re.compile(rf"://|[?&;]|{FIELD_CREDENTIALS}", re.I)


def redact_data(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of JSON-like data with secrets redacted inside every string."""
    frozen = frozenset(secrets)
    if isinstance(value, str):
        return redact(value, frozen)
    if isinstance(value, dict):
        return {
            k: MASK if _is_credential_name(k) and v is not None else redact_data(v, frozen)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(v, frozen) for v in value]
    return value


@lru_cache(maxsize=64)
def _pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    forms = set(secrets)
    forms.update(json.dumps(s)[1:-1] for s in secrets)  # as it appears inside JSON output
    forms.update(repr(s)[1:-1] for s in secrets)  # as it appears in a message built with !r
    if not forms:
        return None
    # Longest first, so a secret containing another is masked whole.
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


# The one-character escapes of JSON: the character, and the letter after the backslash.
JSON_SHORT_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "\b": "b",
    "\f": "f",
    "\n": "n",
    "\r": "r",
    "\t": "t",
}


def json_escape_forms(char: str) -> str:
    """A regex matching `char` as written in JSON text: itself, `\\uXXXX` (either case;
    a surrogate pair past U+FFFF) or its short escape; with any number of backslashes,
    so JSON inside a JSON string matches too."""
    units = char.encode("utf-16-be")
    escaped = "".join(
        rf"\\+u(?i:{units[i]:02x}{units[i + 1]:02x})" for i in range(0, len(units), 2)
    )
    forms = [re.escape(char), escaped]
    if char in JSON_SHORT_ESCAPES:
        forms.append(r"\\+" + re.escape(JSON_SHORT_ESCAPES[char]))
    return "(?:" + "|".join(forms) + ")"


@lru_cache(maxsize=64)
def _escaped_pattern(secrets: frozenset[str]) -> re.Pattern[str]:
    """Every secret with each of its characters in any JSON spelling (`json_escape_forms`)."""
    longest_first = sorted(secrets, key=len, reverse=True)
    return re.compile("|".join("".join(map(json_escape_forms, s)) for s in longest_first))
