"""The ingest HTTP API (SPEC §4): Segment/RudderStack-compatible tracking endpoints.

    app = create_app(listener)        # an ASGI app; `streamctl run` serves it with uvicorn

| route | does |
| --- | --- |
| `POST /v1/{track,identify,page,screen,group,alias,batch}` | tracking API |
| `POST /v1/{t,i,p,s,g,a,b}` | the browser short forms of the same |
| `POST /beacon/v1/{batch,...}` | the same from `navigator.sendBeacon` (RudderStack's `useBeacon`), 64 KB |
| `POST /webhooks/{source}` | a webhook source (streamctl.sources.webhook) |
| `GET /healthz` | the process answers |
| `GET /readyz` | configuration loaded and the store writable |
| `GET /metrics` | Prometheus exposition (streamctl.monitoring.metrics) |
| `GET /debug/tail` | the live feed as NDJSON, loopback clients only (`streamctl tail`) |

Every request to the tracking API goes: authenticate (HTTP Basic with the write key
as user name, `?writeKey=` in the URL, or `writeKey` in the body; the key picks the
source) -> read the body within 500 KB (64 KB for beacons), gunzipping incrementally
so a small gzip bomb cannot grow past the cap -> parse with orjson -> strip every
write key from it (`writeKey` at the top and in each batch event; any other place the
text of a write key, a webhook secret or a destination's secret config field appears,
however JSON escapes it, is redacted) -> normalise every event (32 KB each as
stored, at most 2500 per batch, a userId or anonymousId each) -> hand them to the
group committer and wait until they are in SQLite -> `{"success": true}`. Refusals
answer like Segment's API, `{"success": false, "code": ..., "message": ...}`: 400 bad
JSON or a bad event (the message names the event and field), 401 unknown key or bad
signature, 413 request too large, 429 with Retry-After when the store or the queue is
saturated, 503 when the store fails or too many requests are in flight. Nothing is
answered 200 and dropped afterwards. Errors answered below this app (malformed HTTP,
header limits, read timeouts) have the same JSON shape: streamctl.sources.http_protocol.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from streamctl.config.secrets import MIN_SECRET_LENGTH, secret_strings
from streamctl.core.errors import EventError, StoreError
from streamctl.core.events import Event
from streamctl.core.model import Project, SourceConfig
from streamctl.destinations.registry import CATALOG
from streamctl.monitoring import metrics
from streamctl.monitoring.feed import FEED, TailFilter
from streamctl.sources.normalise import (
    MAX_BATCH_EVENTS,
    MAX_REQUEST_BYTES,
    BatchShared,
    normalise,
)
from streamctl.sources.redaction import strip_write_keys
from streamctl.sources.webhook import verify_signature, webhook_event
from streamctl.store.queue import Overloaded

# Path segment after /v1/ -> the call type it implies (None: a batch).
CALLS: dict[str, str | None] = {
    "track": "track", "t": "track",
    "identify": "identify", "i": "identify",
    "page": "page", "p": "page",
    "screen": "screen", "s": "screen",
    "group": "group", "g": "group",
    "alias": "alias", "a": "alias",
    "batch": None, "b": None,
}  # fmt: skip

log = logging.getLogger(__name__)

JSON = "application/json"
# navigator.sendBeacon bodies are at most 64 KB (the browsers' quota per page).
MAX_BEACON_BYTES = 64 * 1024
OK_BODY = b'{"success":true}'
_OK_HEADERS = ((b"content-type", b"application/json"), (b"content-length", b"16"))
PREFLIGHT_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Requested-With"
# Decoded Authorization headers remembered; bounded, since clients choose the headers.
_AUTH_CACHE_LIMIT = 1024


class Listener(Protocol):
    """What the app needs from the running instance (streamctl.server.Instance)."""

    @property
    def project(self) -> Project: ...

    async def submit(self, source: str, events: list[Event]) -> None:
        """Return once the events are committed; raise Overloaded or StoreError."""

    def check_room(self) -> None:
        """Raise Overloaded when no more events would be taken now (before parsing)."""

    async def ready(self) -> str | None:
        """None when ready to accept events, else the reason it is not."""


@dataclass(frozen=True)
class SourceDirectory:
    """Write keys and webhook names of one configuration, for lookups per request."""

    by_write_key: Mapping[str, SourceConfig]
    webhooks: Mapping[str, SourceConfig]
    # Write keys and the project's secrets (webhook secrets, credentials): no webhook
    # header holding one is stored.
    secrets: frozenset[str] = frozenset()
    # Credentials whose text is redacted wherever it stands in a body (write keys,
    # webhook secrets, destinations' secret config fields), as bytes for raw bodies.
    body_secrets: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, project: Project) -> SourceDirectory:
        by_key: dict[str, SourceConfig] = {}
        webhooks: dict[str, SourceConfig] = {}
        for source in project.sources.values():
            if source.type == "http":
                by_key.update(dict.fromkeys(source.write_keys, source))
            elif source.type == "webhook":
                webhooks[source.name] = source
        secrets = project.secrets | {key for key in by_key if len(key) >= MIN_SECRET_LENGTH}
        credentials = {key for key in by_key if key}
        credentials |= secret_strings([source.secret for source in webhooks.values()])
        for destination in project.destinations.values():
            entry = CATALOG.get(destination.type)
            secret = entry.catalog.secret_fields if entry else frozenset()
            credentials |= secret_strings([v for k, v in destination.config.items() if k in secret])
        return cls(by_key, webhooks, secrets, tuple(c.encode() for c in sorted(credentials)))


class Rejected(Exception):
    """A request refused before its events reach the store; becomes an error response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        source: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.source = source
        self.headers = dict(headers or {})
        super().__init__(message)

    def body(self) -> bytes:
        return orjson.dumps({"success": False, "code": self.code, "message": str(self)})


def create_app(listener: Listener, *, max_in_flight: int | None = None) -> IngestApp:
    return IngestApp(listener, max_in_flight=max_in_flight)


class IngestApp:
    """The ASGI app: ingest routes by hand, the operations endpoints through Starlette.

    The tracking API is the hot path (thousands of requests a second on one core), so
    it reads the ASGI scope directly: no routing table, no middleware stack, no
    request object. CORS is answered here too: `Access-Control-Allow-Origin: *` on
    every ingest response to a browser, and preflight OPTIONS requests answered with
    the methods and headers a tracking snippet sends.

    At most `max_in_flight` ingest requests are handled at once (each may hold a
    500 KB body); past that one is answered 503 before its body is read. The
    operations endpoints are not counted: /healthz answers whatever the load.
    """

    def __init__(self, listener: Listener, *, max_in_flight: int | None = None) -> None:
        self._listener = listener
        self._directory_of: tuple[Project | None, SourceDirectory] = (None, SourceDirectory({}, {}))
        self._auth_cache: dict[str, str | None] = {}
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self.operations = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                Route("/debug/tail", self.tail, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _json_http_error, Exception: _json_server_error},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(("/v1/", "/beacon/v1/", "/webhooks/")):
                return await self._ingest(scope, receive, send)
        await self.operations(scope, receive, send)

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        request = Incoming(scope, receive)
        if scope["method"] != "POST":
            return await self._preflight_or_405(request, scope["method"], send)
        if self._max_in_flight is not None and self._in_flight >= self._max_in_flight:
            busy = Rejected(503, "busy", "too many requests in flight, retry later")
            busy.headers["Retry-After"] = "1"
            return await reply(send, request, busy)
        self._in_flight += 1
        try:
            if path.startswith("/v1/"):
                await self.track(request, path[4:], send)
            elif path.startswith("/beacon/v1/"):
                await self.track(request, path[11:], send, limit=MAX_BEACON_BYTES, beacon=True)
            else:
                await self.webhook(request, path[10:], send)
        except Exception:  # a bug, not bad input: logged, and still a JSON answer
            log.exception("ingest request to %s failed", path)
            failed = Rejected(500, "internal", "the request failed inside streamctl; see its log")
            await reply(send, request, failed)
        finally:
            self._in_flight -= 1

    def directory(self) -> SourceDirectory:
        """The source lookup of the current configuration, rebuilt when a reload swapped it."""
        project = self._listener.project
        cached_project, directory = self._directory_of
        if cached_project is not project:
            directory = SourceDirectory.of(project)
            self._directory_of = (project, directory)
        return directory

    # -- tracking API ---------------------------------------------------------------

    async def track(
        self,
        request: Incoming,
        call: str,
        send: Send,
        *,
        limit: int = MAX_REQUEST_BYTES,
        beacon: bool = False,
    ) -> None:
        if call not in CALLS:
            prefix = "/beacon/v1/" if beacon else "/v1/"
            return await reply(
                send, request, Rejected(404, "not_found", f"no endpoint {prefix}{call}")
            )
        source = ""
        try:
            given_key = self._basic_auth_key(request.headers.get("authorization"))
            if given_key is None and request.query_string:
                given_key = query_write_key(request.query_string)
            if given_key is not None:  # refuse a wrong key before reading the body
                source = self._source_for(given_key).name
            self._listener.check_room()  # and a full queue before parsing it
            body = await request.body(limit)
            payload = parse_json(body)
            body_key = strip_write_keys(payload, body, self.directory().body_secrets)
            if given_key is None:
                source = self._source_for(body_key).name
            events = collect_events(payload, CALLS[call], body_size=len(body), limit=limit)
            metrics.record_received(source, len(events))
            await self._commit(source, events)
        except Rejected as exc:
            metrics.record_rejected(exc.source or source, exc.code)
            return await reply(send, request, exc)
        except Overloaded as exc:
            metrics.record_rejected(source, "overloaded")
            return await reply(send, request, overloaded(exc))
        await reply(send, request)

    async def _commit(self, source: str, events: list[Event]) -> None:
        started = time.perf_counter()
        try:
            await self._listener.submit(source, events)
        except StoreError as exc:
            raise Rejected(503, "store_unavailable", f"events not stored: {exc}", source) from exc
        metrics.record_accepted(source, len(events), time.perf_counter() - started)

    def _basic_auth_key(self, header: str | None) -> str | None:
        """The write key of an `Authorization: Basic` header ('' when unusable)."""
        if header is None:
            return None
        cache = self._auth_cache
        key = cache.get(header)
        if key is None:
            key = decode_basic_auth(header)
            if len(cache) >= _AUTH_CACHE_LIMIT:
                cache.clear()
            cache[header] = key
        return key

    def _source_for(self, key: object) -> SourceConfig:
        source = self.directory().by_write_key.get(key) if isinstance(key, str) else None
        if source is None:
            reason = "no write key" if key is None else "unknown write key"
            raise Rejected(401, "auth", f"{reason}: use HTTP Basic, ?writeKey= or writeKey")
        return source

    # -- webhooks ----------------------------------------------------------------------

    async def webhook(self, request: Incoming, name: str, send: Send) -> None:
        source = self.directory().webhooks.get(name)
        try:
            if source is None:
                raise Rejected(404, "not_found", f"no webhook source {name!r}")
            self._listener.check_room()  # before reading and verifying the body
            raw = await request.body()
            headers = request.headers
            try:
                verify_signature(raw, headers, source)
                content_type = headers.get("content-type", "")
                directory = self.directory()
                event = webhook_event(
                    source, raw, headers, content_type, directory.secrets, directory.body_secrets
                )
                events = [normalise(event, received_at=datetime.now(UTC))]
            except EventError as exc:
                code = "signature" if exc.status_code == 401 else "invalid"
                raise Rejected(exc.status_code, code, str(exc), name) from None
            metrics.record_received(name, 1)
            await self._commit(name, events)
        except Rejected as exc:
            metrics.record_rejected(exc.source, exc.code)
            return await reply(send, request, exc)
        except Overloaded as exc:
            metrics.record_rejected(name, "overloaded")
            return await reply(send, request, overloaded(exc))
        await reply(send, request)

    # -- browsers ------------------------------------------------------------------------

    async def _preflight_or_405(self, request: Incoming, method: str, send: Send) -> None:
        asked_method = request.headers.get("access-control-request-method")
        if method != "OPTIONS" or asked_method is None:
            return await reply(send, request, Rejected(405, "method", "use POST"))
        asked_headers = _echoable(request.headers.get("access-control-request-headers", ""))
        headers = [
            *_allow_origin(request),
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", asked_headers or PREFLIGHT_HEADERS.encode()),
            (b"access-control-max-age", b"86400"),
            (b"content-length", b"0"),
            (b"vary", b"Origin"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    # -- operations ----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def readyz(self, request: Request) -> Response:
        problem = await self._listener.ready()
        if problem is None:
            return Response(b'{"status":"ready"}', media_type=JSON)
        body = orjson.dumps({"status": "not ready", "reason": problem})
        return Response(body, 503, media_type=JSON)

    async def metrics(self, request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def tail(self, request: Request) -> Response:
        if not _is_loopback(request):
            body = {"success": False, "code": "forbidden", "message": "loopback clients only"}
            return Response(orjson.dumps(body), 403, media_type=JSON)
        project = self._listener.project
        wanted = TailFilter(
            sources=frozenset(request.query_params.getlist("source")),
            syncs=frozenset(request.query_params.getlist("sync")),
            sync_sources={sync.name: sync.source for sync in project.syncs},
        )
        subscription = FEED.subscribe(wanted)

        async def lines() -> AsyncIterator[bytes]:
            yield orjson.dumps({"kind": "hello", "sources": sorted(project.sources)}) + b"\n"
            async for record in subscription:
                yield orjson.dumps(record, default=str) + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")


class Incoming:
    """What the ingest endpoints read of an ASGI request; header names are lower-case."""

    __slots__ = ("beacon", "headers", "query_string", "receive")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.receive = receive
        self.query_string: bytes = scope.get("query_string", b"")
        # sendBeacon always sends credentials: CORS must then name the origin, not `*`.
        self.beacon = scope["path"].startswith("/beacon/")
        self.headers: dict[str, str] = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }

    async def body(self, limit: int = MAX_REQUEST_BYTES) -> bytes:
        return await read_body(self.headers, self.receive, limit)


async def reply(send: Send, request: Incoming, rejected: Rejected | None = None) -> None:
    """`{"success": true}`, or the refusal; with CORS headers when a browser asks."""
    if rejected is None:
        status, body, headers = 200, OK_BODY, list(_OK_HEADERS)
    else:
        status, body = rejected.status, rejected.body()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in rejected.headers.items()]
    if "origin" in request.headers:
        headers += _allow_origin(request)
        if request.beacon:
            headers.append((b"vary", b"Origin"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _allow_origin(request: Incoming) -> list[tuple[bytes, bytes]]:
    if not request.beacon:
        return [(b"access-control-allow-origin", b"*")]
    origin = _echoable(request.headers.get("origin", "")) or b"*"
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-credentials", b"true"),
    ]


def _echoable(value: str) -> bytes:
    """A request header's value fit to send back in a response header ('' if it is not:
    uvicorn refuses control characters in response headers, and that would be a 500)."""
    return value.encode("latin-1") if value.isprintable() else b""


def overloaded(exc: Overloaded) -> Rejected:
    retry_after = str(max(1, math.ceil(exc.retry_after)))
    return Rejected(
        429, "overloaded", "too many events, retry later", headers={"Retry-After": retry_after}
    )


# -- request parsing, shared by the tracking API and webhooks ---------------------------


def decode_basic_auth(header: str) -> str:
    """`Basic base64(key:)` -> key; '' when the header is not usable Basic auth."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[0]


async def read_body(
    headers: Mapping[str, str], receive: Receive, limit: int = MAX_REQUEST_BYTES
) -> bytes:
    """The request body, gunzipped if so encoded; 413 past `limit` bytes (decompressed)."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        msg = f"Content-Encoding {encoding!r} is not supported; use gzip"
        raise Rejected(415, "unsupported_encoding", msg)
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        msg = f"request body is {length} bytes, over the {limit} byte limit"
        raise Rejected(413, "too_large", msg)
    gunzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Rejected(400, "disconnected", "the client went away before sending the body")
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if gunzip is not None and chunk:
            try:
                # max_length caps what one chunk may inflate to: a bomb stops at the cap.
                chunk = gunzip.decompress(chunk, limit - size + 1)
            except zlib.error as exc:
                msg = f"the gzip body does not decompress: {exc}"
                raise Rejected(400, "bad_gzip", msg) from None
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "too_large", f"request body is over the {limit} byte limit")
        parts.append(chunk)
    if gunzip is not None and not gunzip.eof:
        raise Rejected(400, "bad_gzip", "the gzip body is truncated")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def query_write_key(query_string: bytes) -> str | None:
    """`writeKey` of the URL's query (`/beacon/v1/batch?writeKey=KEY`), None without one."""
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "writeKey":
            return value
    return None


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise Rejected(
            400, "invalid_json", f"the body must be a JSON object, got {type(payload).__name__}"
        )
    return payload


def collect_events(
    payload: dict[str, Any],
    call_type: str | None,
    *,
    body_size: int = 0,
    limit: int = MAX_REQUEST_BYTES,
) -> list[Event]:
    """Normalised events of one request: the body itself, or the body's `batch`.

    A batch is measured as stored: its `context` and `integrations` are copied into
    every event, so they count once per event against the request limit (`body_size`
    of `limit`); 2,500 events sharing 60 KB of context are 150 MB stored, not 250 KB.
    """
    received_at = datetime.now(UTC)
    try:
        if call_type is not None:
            return [normalise(payload, received_at=received_at, call_type=call_type)]
        batch = payload.get("batch")
        if not isinstance(batch, list):
            raise Rejected(400, "invalid_batch", "a batch body needs a 'batch' array of events")
        if len(batch) > MAX_BATCH_EVENTS:
            msg = f"the batch has {len(batch)} events, over the {MAX_BATCH_EVENTS} event limit"
            raise Rejected(400, "too_many_events", msg)
        shared = BatchShared.of(payload)
        stored_size = body_size + shared.size * (len(batch) - 1)
        if shared.size and stored_size > limit:
            msg = (
                f"the batch is {stored_size} bytes as stored (its {shared.size} bytes of "
                f"context and integrations merged into each of its {len(batch)} events), "
                f"over the {limit} byte limit"
            )
            raise Rejected(413, "too_large", msg)
        return [
            normalise(event, received_at=received_at, batch=shared, index=index)
            for index, event in enumerate(batch)
        ]
    except EventError as exc:
        raise Rejected(exc.status_code, "invalid_event", str(exc)) from None


async def _json_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 (and any HTTPException) in the ingest error shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method"}.get(exc.status_code, "http_error")
    body = orjson.dumps({"success": False, "code": code, "message": exc.detail})
    return Response(body, exc.status_code, headers=exc.headers, media_type=JSON)


async def _json_server_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    body = {"success": False, "code": "internal", "message": "the request failed; see the log"}
    return Response(orjson.dumps(body), 500, media_type=JSON)


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
