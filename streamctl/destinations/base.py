"""The destination interface: a catalog entry plus request building and response classification.

A destination is one module in this package with one `Destination` subclass that
declares its `catalog` (config fields, event types and their fields, batch limits,
rate limits) and turns mapped payloads into HTTP requests and HTTP responses into
per-item outcomes. Adding one is one new file and one line in `registry.py`.

The delivery engine calls, per batch of one sync and one event type:

    payloads = [dest.build_payload(event_type, mapped, event) for ...]   # at mapping time
    result   = await dest.send(client, event_type, payloads)             # BatchResult

`send` has a default for HTTP APIs (`build_request` -> httpx -> `classify`); local
destinations (file, console) override `send` itself.
"""

from __future__ import annotations

import email.utils
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

import httpx
import orjson

# Re-exported: destination modules have always imported them from here.
from streamctl.core.events import Event
from streamctl.core.events import MappedEvent as MappedEvent
from streamctl.core.events import Payload as Payload

JSONType = Literal["string", "number", "integer", "boolean", "object", "array", "any"]


@dataclass(frozen=True)
class FieldSpec:
    """A destination field: its name, JSON type and what it means."""

    name: str
    type: JSONType = "any"
    description: str = ""


@dataclass(frozen=True)
class EventTypeSpec:
    """An event type of a destination and the fields of its mapping's `required` section."""

    name: str
    description: str = ""
    required: tuple[FieldSpec, ...] = ()
    optional: tuple[FieldSpec, ...] = ()
    open_fields: bool = False  # any field name may be mapped (webhook, file, console)
    user_fields: bool = True  # accepts a `user` section
    # The only keys the `user` section may map (an ad platform's user_data keys); empty:
    # any key. `validate` refuses others with the file and line.
    user_keys: tuple[str, ...] = ()
    properties: bool = True  # accepts a `properties` section
    batch_size: int | None = None  # overrides CatalogEntry.batch_size for this type

    def field(self, name: str) -> FieldSpec | None:
        for spec in (*self.required, *self.optional):
            if spec.name == name:
                return spec
        return None


@dataclass(frozen=True)
class ConfigField:
    name: str
    type: JSONType = "string"
    required: bool = False
    secret: bool = False  # never printed: validate, preview, errors, logs, exceptions
    default: Any = None
    description: str = ""
    project_path: bool = (
        False  # a file path: the loader resolves a relative one against the project root
    )
    choices: tuple[str, ...] = ()  # the only values accepted (e.g. regions); empty: any value


@dataclass(frozen=True)
class CatalogEntry:
    """What `streamctl destinations show TYPE` prints, and what `validate` checks syncs against."""

    type: str
    description: str
    docs: str  # the vendor documentation this module follows
    config: tuple[ConfigField, ...]
    event_types: tuple[EventTypeSpec, ...]
    batch_size: int = 1  # events per request by default
    max_batch_size: int = 1  # the most the API accepts in one request
    max_batch_bytes: int | None = None
    rate_limit: float | None = (
        None  # events per second (the vendor limit converted), None: unlimited
    )
    identity: str = ""  # e.g. "user_id or device_id"

    def event_type(self, name: str) -> EventTypeSpec | None:
        for spec in self.event_types:
            if spec.name == name:
                return spec
        return None

    @property
    def secret_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in self.config if f.secret)


@dataclass(frozen=True)
class HttpRequest:
    """A request as it will be sent; `preview` shows it, `send` sends it."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None  # a JSON body (serialised with orjson)
    content: bytes | None = None  # a non-JSON body (form-encoded, ...)
    # HTTP Basic credentials (user, password). httpx builds the Authorization header when
    # sending, so a preview shows these (which redaction masks), never their base64 form.
    auth: tuple[str, str] | None = None

    def body(self) -> bytes:
        if self.content is not None:
            return self.content
        return b"" if self.json is None else orjson.dumps(self.json)


class ItemStatus(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # try again later (connection error, timeout, 408, 423, 429, 5xx)
    FAILED = "failed"  # permanent: archive with the response


@dataclass(frozen=True)
class ItemResult:
    """The outcome of sending one payload."""

    status: ItemStatus
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from Retry-After or a vendor header
    response: str | None = None  # an excerpt of the response body
    # Whom a throttled RETRY (a 429) is about, and so what waits `retry_after`:
    # "destination" (the default): the API asked the whole client to slow down (a 429
    #   with Retry-After on the response): the sync's lane pauses every delivery for
    #   that long and lowers its rate and concurrency.
    # "item": only this event's user or device is over its limit (Amplitude's
    #   `throttled_users` / `throttled_devices`): this delivery waits `retry_after`,
    #   later events of the same user wait behind it (ordering: per_user), and every
    #   other delivery of the lane keeps going at the same rate.
    throttle_scope: Literal["destination", "item"] = "destination"


@dataclass(frozen=True)
class BatchResult:
    """Per-payload outcomes, in the order the payloads were given.

    `split` asks the engine to bisect the batch and resend the halves: the API refused
    the whole request for something that may be one bad item (a 400 on a batch without
    per-item errors), so good events still go through.
    """

    items: tuple[ItemResult, ...]
    split: bool = False

    @classmethod
    def same(cls, n: int, item: ItemResult, split: bool = False) -> BatchResult:
        return cls((item,) * n, split=split and n > 1)


@functools.lru_cache(maxsize=256)
def parsed_url(url: str) -> httpx.URL:
    """`url` parsed once: httpx parses a URL given as text on every request (about a
    tenth of a millisecond of CPU), and a destination sends to the same few."""
    return httpx.URL(url)


RESPONSE_EXCERPT = 2000
RETRYABLE_STATUS = frozenset({408, 423, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def excerpt(response: httpx.Response) -> str:
    return response.text[:RESPONSE_EXCERPT]


async def exchange(
    client: httpx.AsyncClient, request: HttpRequest, timeout: float
) -> httpx.Response | ItemResult:
    """Send one request: the response, or a RETRY outcome when none came (timeout, connection)."""
    try:
        return await client.request(
            request.method,
            parsed_url(request.url),
            headers=dict(request.headers),
            content=request.body() or None,
            auth=request.auth,
            timeout=timeout,
        )
    except httpx.TimeoutException as exc:
        return ItemResult(ItemStatus.RETRY, error=f"timeout: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return ItemResult(ItemStatus.RETRY, error=f"connection error: {exc!r}")


class Destination(ABC):
    """One configured destination (a `destinations:` entry of streamctl.yaml)."""

    catalog: ClassVar[CatalogEntry]
    # True when build_request and send only serialise the payloads into the body
    # (orjson.dumps), never read them: the engine then hands over stored payloads as
    # `orjson.Fragment`s of their JSON, sparing a decode and re-encode of every event.
    embeds_payloads: ClassVar[bool] = False
    # True when `send` takes stored payloads as their JSON text (`str`) and decodes them
    # itself, off the event loop, or hands the text to a database (the storage ones).
    takes_payload_text: ClassVar[bool] = False

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        defaults = {f.name: f.default for f in self.catalog.config if f.default is not None}
        self.config: Mapping[str, Any] = {**defaults, **config}

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        """One event's payload. The default is the generic layout of SPEC §6:
        required fields at the top, `user` and `properties` nested when mapped."""
        payload: Payload = dict(mapped.required)
        if mapped.user:
            payload["user"] = mapped.user
        if mapped.properties:
            payload["properties"] = mapped.properties
        return payload

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        """A vendor limit the payload breaks (name length, parameter count), or None.
        A problem here is a `mapping_error`: permanent, never sent."""
        return None

    def batch_size(self, event_type: str) -> int:
        spec = self.catalog.event_type(event_type)
        return (spec.batch_size if spec and spec.batch_size else None) or self.catalog.batch_size

    # -- sending -----------------------------------------------------------------

    @abstractmethod
    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        """The one request that carries these payloads."""

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        """Per-payload outcomes of a response. The default reads the status code only;
        vendors with per-item errors override it."""
        n = len(payloads)
        code = response.status_code
        if 200 <= code < 300:
            return BatchResult.same(n, ItemResult(ItemStatus.DELIVERED, code))
        item = ItemResult(
            ItemStatus.RETRY if is_retryable_status(code) else ItemStatus.FAILED,
            code,
            error=f"HTTP {code}",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            response=excerpt(response),
        )
        return BatchResult.same(n, item, split=item.status is ItemStatus.FAILED)

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        answer = await exchange(client, self.build_request(event_type, payloads), timeout)
        if isinstance(answer, ItemResult):
            return BatchResult.same(len(payloads), answer)
        return self.classify(answer, payloads)

    async def aclose(self) -> None:  # noqa: B027 - optional hook; most destinations hold nothing
        """Release what the destination holds open (files)."""
