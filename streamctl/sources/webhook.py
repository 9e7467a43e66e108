"""Webhook sources (SPEC §4): any service's POST becomes a `track` event (and so does a
kafka source's message of `format: json`: `body_event`).

    verify_signature(raw_body, headers, source)      # raises EventError(401) if wrong
    event = webhook_event(source, raw_body, headers, content_type)

The event carries the request body under `properties.body` (JSON, form fields, or
the text as is) and its headers under `properties.headers` (lower-case names;
credentials left out: the signature header, Authorization, Cookie and the like, any
header whose name says it carries a credential, and any header whose value holds a
configured secret or write key). `event` is read from the body at the
source's `event_name` path (a field reference, SPEC §2), falling back to the source's name. Webhooks carry no
user identity, so `anonymousId` is `webhook:<source>`; a delivery id header
(`Webhook-Id`, `X-GitHub-Delivery`, ...) becomes the messageId, so a redelivered
webhook is recognised as a duplicate.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import orjson

from streamctl.core.errors import EventError
from streamctl.core.events import Event
from streamctl.core.model import SourceConfig
from streamctl.mappings.paths import Getter, compile_path
from streamctl.sources.redaction import redact_text, texts

# Never stored: they authenticate the sender, and anyone reading events must not reuse them.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-signature",
        "x-hub-signature",
        "x-hub-signature-256",
        "stripe-signature",
        "webhook-signature",
        "x-twilio-signature",
        "x-shopify-hmac-sha256",
    }
)
# Any header whose name holds one of these carries a credential (X-Gitlab-Token,
# X-Slack-Signature, Svix-Signature, X-Api-Key, ...): not stored either.
CREDENTIAL_NAME_PARTS = (
    "auth", "token", "secret", "signature", "cookie", "key", "password", "session", "hmac",
    "credential",
)  # fmt: skip
DELIVERY_ID_HEADERS = ("webhook-id", "x-webhook-id", "x-github-delivery", "x-request-id")
SIGNATURE_PREFIX = "sha256="


def verify_signature(raw_body: bytes, headers: Mapping[str, str], source: SourceConfig) -> None:
    """Check the HMAC-SHA256 of the raw body when the source has a `secret`.

    The header (`signature_header`, default X-Signature) holds the lowercase hex
    digest, optionally prefixed `sha256=`. Missing or wrong: EventError with 401.
    The comparison takes constant time; messages never show the expected digest.
    """
    if not source.secret:
        return
    header = source.signature_header
    given = headers.get(header.lower())
    if not given:
        msg = f"webhook source {source.name!r}: missing signature header {header}"
        raise EventError(msg, status_code=401)
    given = given.strip()
    if given[: len(SIGNATURE_PREFIX)].lower() == SIGNATURE_PREFIX:
        given = given[len(SIGNATURE_PREFIX) :]
    expected = hmac.new(source.secret.encode(), raw_body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.encode("ascii", "replace")):
        msg = f"webhook source {source.name!r}: the {header} signature does not match the body"
        raise EventError(msg, status_code=401)


def webhook_event(
    source: SourceConfig,
    raw_body: bytes,
    headers: Mapping[str, str],
    content_type: str = "",
    secrets: Collection[str] = (),
    body_secrets: tuple[bytes, ...] = (),
) -> Event:
    """The `track` event for one webhook request (not yet normalised).

    `secrets`: every secret of the configuration (webhook secrets, write keys); a
    header whose value holds one is not stored. `body_secrets`: the credentials whose
    text is redacted in the body (before the event name is read from it); any text
    may spell one (JSON escapes, form encoding), so the parsed body is searched."""
    body = redact_text(parse_body(raw_body, content_type), texts(body_secrets))
    event = body_event(source, body, headers=stored_headers(headers, source, secrets))
    delivery_id = next((headers[h] for h in DELIVERY_ID_HEADERS if headers.get(h)), None)
    if delivery_id:
        event["messageId"] = delivery_id
    return event


def body_event(source: SourceConfig, body: Any, **received: Any) -> Event:
    """The `track` event carrying any JSON `body` a source received (a webhook's request,
    a kafka source's message of `format: json`): `event` read at the source's
    `event_name` path, else the source's name; `anonymousId` `TYPE:SOURCE`; the body,
    and what else the source tells about it (`received`: headers, the Kafka record),
    under `properties`."""
    return {
        "type": "track",
        "event": _event_name(source, body),
        "anonymousId": f"{source.type}:{source.name}",
        "properties": {"body": body, **received},
        "context": {"library": {"name": f"streamctl-{source.type}"}, "source": source.name},
    }


def parse_body(raw_body: bytes, content_type: str) -> Any:
    """JSON when it parses, form fields for form posts, otherwise the text itself.

    Text is read in the Content-Type's `charset` (a form or a text body in Latin-1 keeps
    its `é`), UTF-8 when it names none or one Python does not know; undecodable bytes
    become U+FFFD. JSON is UTF-8 (RFC 8259), but a sender declaring another charset
    is read in it."""
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    charset = _charset(parameters)
    if media_type == "application/x-www-form-urlencoded":
        text = raw_body.decode(charset, "replace")
        fields = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="replace")
        return {_storable(name): _storable(value) for name, value in fields}
    if not raw_body.strip():
        return None
    try:
        return orjson.loads(raw_body if charset == "utf-8" else raw_body.decode(charset, "replace"))
    except orjson.JSONDecodeError:
        if media_type.endswith("json"):
            msg = "webhook body is not valid JSON"
            raise EventError(msg) from None
        return _storable(raw_body.decode(charset, "replace"))


def _storable(text: str) -> str:
    """`text` without lone surrogates (`unicode_escape` can decode `\\ud800` to one),
    which no JSON encoder writes: each becomes `?`."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _charset(parameters: str) -> str:
    """The `charset` of a Content-Type's parameters, as Python's codec name; utf-8 when
    absent, unknown, or no text encoding that can replace what it cannot read (`base64`,
    `idna`: decoding with them would fail)."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            try:
                codec = codecs.lookup(value.strip().strip('"')).name
                b"\xff\xfe\x00".decode(codec, "replace")
            except (LookupError, UnicodeError, ValueError):
                break
            return codec
    return "utf-8"


def stored_headers(
    headers: Mapping[str, str], source: SourceConfig, secrets: Collection[str] = ()
) -> dict[str, str]:
    """The headers kept in the event: none that carries a credential."""
    signature = source.signature_header.lower()
    secrets = [s for s in (*secrets, source.secret) if s]
    return {
        name: value
        for name, value in headers.items()
        if name not in SENSITIVE_HEADERS
        and name != signature
        and not any(part in name for part in CREDENTIAL_NAME_PARTS)
        and not any(secret in value for secret in secrets)
    }


def _event_name(source: SourceConfig, body: Any) -> str:
    path = source.event_name_field
    if path and isinstance(body, dict | list):
        value = _getter(path)(body)
        if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
            return str(value)
    return source.name


@lru_cache(maxsize=256)
def _getter(path: str) -> Getter:
    return compile_path(path)
