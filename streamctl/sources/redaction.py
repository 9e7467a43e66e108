"""Credentials out of request bodies, before anything is stored.

    top_key = strip_write_keys(payload, raw_body, directory.body_secrets)   # tracking API
    body = redact_text(parse_body(raw, content_type), texts(body_secrets))  # webhooks

A write key is removed where SDKs put it (`writeKey`); the text of any credential
(write keys, webhook secrets, destinations' secret config fields) elsewhere in a
body becomes `[redacted]`, found in the parsed strings, so however JSON escaped it
(`\\u0062ench-key` is `bench-key`). A body without a credential's text and without
an escape that could spell one costs a substring search per credential.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from streamctl.config.secrets import JSON_SHORT_ESCAPES

REDACTED = "[redacted]"


def strip_write_keys(payload: dict[str, Any], body: bytes, secrets: tuple[bytes, ...]) -> Any:
    """Remove every write key from a parsed body; returns the top-level `writeKey`.

    `writeKey` is removed at the top and from each event of a `batch` (Segment's
    analytics-next puts it in both). A credential's text (`secrets`: write keys, webhook
    secrets, destination keys) anywhere else in the body (a property, a context field,
    a key) is replaced by `[redacted]`. The raw body is searched first, so a body without
    one costs a substring search per credential; a body with JSON escapes that could
    spell one (`\\u0062ench-key` is `bench-key`) is searched once parsed.
    """
    top_key = payload.pop("writeKey", None)
    stripped = [top_key]
    batch = payload.get("batch")
    if isinstance(batch, list):
        for event in batch:
            if isinstance(event, dict) and "writeKey" in event:
                stripped.append(event.pop("writeKey"))
    if _may_spell_escaped(body, secrets) or any(
        body.count(secret) > sum(isinstance(v, str) and v.encode() == secret for v in stripped)
        for secret in secrets
    ):
        redact_text(payload, texts(secrets))
    return top_key


# Each character JSON has a short escape for, as a byte, and that escape (`\\u` is any).
_SHORT_ESCAPES = {ord(c): ("\\" + e).encode() for c, e in JSON_SHORT_ESCAPES.items()}


def _may_spell_escaped(body: bytes, secrets: tuple[bytes, ...]) -> bool:
    """Whether a JSON escape in `body` could spell a character of a credential."""
    if b"\\" not in body:  # the common case: no escape at all
        return False
    if b"\\u" in body:
        return True
    return any(
        _SHORT_ESCAPES[char] in body
        for secret in secrets
        for char in secret
        if char in _SHORT_ESCAPES
    )


@lru_cache(maxsize=16)
def texts(secrets: tuple[bytes, ...]) -> frozenset[str]:
    return frozenset(secret.decode() for secret in secrets)


def redact_text(value: Any, secrets: frozenset[str]) -> Any:
    """Replace each secret in the strings (values and keys) of a JSON value, in place;
    returns the value (a new one when it is a string).

    Iterative: a body may nest 1,000 levels deep, past Python's recursion limit.
    """

    def clean(text: str) -> str:
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    if isinstance(value, str):
        return clean(value)
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for name in list(node):
                item = node[name]
                if isinstance(item, str):
                    item = clean(item)
                elif isinstance(item, dict | list):
                    stack.append(item)
                cleaned = clean(name)
                if cleaned != name:
                    del node[name]
                node[cleaned] = item
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = clean(item)
                elif isinstance(item, dict | list):
                    stack.append(item)
    return value
