"""The ingest HTTP API (SPEC §4): Segment/RudderStack-compatible tracking endpoints.

    app = create_app(listener)        # a Starlette app; `streamctl run` serves it with uvicorn

| route | does |
| --- | --- |
| `POST /v1/{track,identify,page,screen,group,alias,batch}` | tracking API |
| `POST /v1/{t,i,p,s,g,a,b}` | the browser short forms of the same |
| `POST /webhooks/{source}` | a webhook source (streamctl.sources.webhook) |
| `GET /healthz` | the process answers |
| `GET /readyz` | configuration loaded and the store writable |
| `GET /metrics` | Prometheus exposition (streamctl.monitoring.metrics) |
| `GET /debug/tail` | the live feed as NDJSON, loopback clients only (`streamctl tail`) |

Every request to the tracking API goes: authenticate (HTTP Basic with the write key
as user name, or `writeKey` in the body; the key picks the source) -> read the body
within 500 KB, gunzipping incrementally so a small gzip bomb cannot grow past the
cap -> parse with orjson -> normalise every event (32 KB each, at most 2500 per
batch, a userId or anonymousId each) -> hand them to the group committer and wait
until they are in SQLite -> `{"success": true}`. Refusals answer like Segment's API,
`{"success": false, "code": ..., "message": ...}`: 400 bad JSON or a bad event
(the message names the event), 401 unknown key or bad signature, 413 request too
large, 429 with Retry-After when the store or the queue is saturated, 503 when the
store fails. Nothing is answered 200 and dropped afterwards.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from streamctl.config.model import Project, SourceConfig
from streamctl.errors import EventError, StoreError
from streamctl.events import Event
from streamctl.monitoring import metrics
from streamctl.monitoring.feed import FEED, TailFilter
from streamctl.sources.normalise import (
    MAX_BATCH_EVENTS,
    MAX_REQUEST_BYTES,
    normalise,
)
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

JSON = "application/json"
_OK = Response(b'{"success":true}', media_type=JSON)
# Decoded Authorization headers remembered; bounded, since clients choose the headers.
_AUTH_CACHE_LIMIT = 1024


class Listener(Protocol):
    """What the app needs from the running instance (streamctl.server.Instance)."""

    @property
    def project(self) -> Project: ...

    async def submit(self, source: str, events: list[Event]) -> None:
        """Return once the events are committed; raise Overloaded or StoreError."""

    async def ready(self) -> str | None:
        """None when ready to accept events, else the reason it is not."""


@dataclass(frozen=True)
class SourceDirectory:
    """Write keys and webhook names of one configuration, for lookups per request."""

    by_write_key: Mapping[str, SourceConfig]
    webhooks: Mapping[str, SourceConfig]

    @classmethod
    def of(cls, project: Project) -> SourceDirectory:
        by_key: dict[str, SourceConfig] = {}
        webhooks: dict[str, SourceConfig] = {}
        for source in project.sources.values():
            if source.type == "http":
                by_key.update(dict.fromkeys(source.write_keys, source))
            elif source.type == "webhook":
                webhooks[source.name] = source
        return cls(by_key, webhooks)


class Rejected(Exception):
    """A request refused before its events reach the store; becomes an error response."""

    def __init__(self, status: int, code: str, message: str, source: str = "") -> None:
        self.status = status
        self.code = code
        self.source = source
        super().__init__(message)

    def response(self, headers: Mapping[str, str] | None = None) -> Response:
        body = {"success": False, "code": self.code, "message": str(self)}
        return Response(orjson.dumps(body), self.status, headers, media_type=JSON)


def create_app(listener: Listener) -> Starlette:
    api = IngestApi(listener)
    routes = [
        Route("/v1/{call}", api.track, methods=["POST"]),
        Route("/webhooks/{source}", api.webhook, methods=["POST"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/debug/tail", api.tail, methods=["GET"]),
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["POST", "GET", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Requested-With"],
        max_age=86400,
    )
    return Starlette(routes=routes, middleware=[cors])


class IngestApi:
    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._directory_of: tuple[Project | None, SourceDirectory] = (None, SourceDirectory({}, {}))
        self._auth_cache: dict[str, str | None] = {}

    def directory(self) -> SourceDirectory:
        """The source lookup of the current configuration, rebuilt when a reload swapped it."""
        project = self._listener.project
        cached_project, directory = self._directory_of
        if cached_project is not project:
            directory = SourceDirectory.of(project)
            self._directory_of = (project, directory)
        return directory

    # -- tracking API ---------------------------------------------------------------

    async def track(self, request: Request) -> Response:
        call = request.path_params["call"]
        if call not in CALLS:
            return Rejected(404, "not_found", f"no endpoint /v1/{call}").response()
        source = ""
        try:
            header_key = self._basic_auth_key(request.headers.get("authorization"))
            if header_key is not None:  # refuse a wrong key before reading the body
                source = self._source_for(header_key).name
            payload = parse_json(await read_body(request))
            body_key = payload.pop("writeKey", None)  # never stored with the events
            if header_key is None:
                source = self._source_for(body_key).name
            events = collect_events(payload, CALLS[call])
            metrics.record_received(source, len(events))
            await self._commit(source, events)
        except Rejected as exc:
            metrics.record_rejected(exc.source or source, exc.code)
            return exc.response()
        except Overloaded as exc:
            metrics.record_rejected(source, "overloaded")
            retry_after = {"Retry-After": str(max(1, round(exc.retry_after)))}
            return Rejected(429, "overloaded", "too many events, retry later").response(retry_after)
        return _OK

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
            raise Rejected(401, "auth", f"{reason}: use HTTP Basic or writeKey")
        return source

    # -- webhooks ----------------------------------------------------------------------

    async def webhook(self, request: Request) -> Response:
        name = request.path_params["source"]
        source = self.directory().webhooks.get(name)
        try:
            if source is None:
                raise Rejected(404, "not_found", f"no webhook source {name!r}")
            raw = await read_body(request)
            headers = dict(request.headers.items())  # lower-case names
            try:
                verify_signature(raw, headers, source)
                event = webhook_event(source, raw, headers, headers.get("content-type", ""))
                events = [normalise(event, received_at=datetime.now(UTC))]
            except EventError as exc:
                code = "signature" if exc.status_code == 401 else "invalid"
                raise Rejected(exc.status_code, code, str(exc), name) from None
            metrics.record_received(name, 1)
            await self._commit(name, events)
        except Rejected as exc:
            metrics.record_rejected(exc.source, exc.code)
            return exc.response()
        except Overloaded as exc:
            metrics.record_rejected(name, "overloaded")
            retry_after = {"Retry-After": str(max(1, round(exc.retry_after)))}
            return Rejected(429, "overloaded", "too many events, retry later").response(retry_after)
        return _OK

    # -- operations ----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def readyz(self, request: Request) -> Response:
        problem = await self._listener.ready()
        if problem is None:
            return Response(b'{"status":"ready"}', media_type=JSON)
        return Response(
            orjson.dumps({"status": "not ready", "reason": problem}), 503, media_type=JSON
        )

    async def metrics(self, request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def tail(self, request: Request) -> Response:
        if not _is_loopback(request):
            return Rejected(
                403, "forbidden", "the live feed answers loopback clients only"
            ).response()
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


async def read_body(request: Request, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The request body, gunzipped if so encoded; 413 past `limit` bytes (decompressed)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise Rejected(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise Rejected(
            413, "too_large", f"request body is {length} bytes, over the {limit} byte limit"
        )
    gunzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if gunzip is not None and chunk:
            try:
                # max_length caps what one chunk may inflate to: a bomb stops at the cap.
                chunk = gunzip.decompress(chunk, limit - size + 1)
            except zlib.error as exc:
                raise Rejected(
                    400, "bad_gzip", f"the gzip body does not decompress: {exc}"
                ) from None
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "too_large", f"request body is over the {limit} byte limit")
        parts.append(chunk)
    if gunzip is not None and not gunzip.eof:
        raise Rejected(400, "bad_gzip", "the gzip body is truncated")
    return b"".join(parts)


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


def collect_events(payload: dict[str, Any], call_type: str | None) -> list[Event]:
    """Normalised events of one request: the body itself, or the body's `batch`."""
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
        return [
            normalise(event, received_at=received_at, batch=payload, index=index)
            for index, event in enumerate(batch)
        ]
    except EventError as exc:
        raise Rejected(exc.status_code, "invalid_event", str(exc)) from None


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
