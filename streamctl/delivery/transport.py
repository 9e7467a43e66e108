"""A lean HTTP/1.1 keep-alive transport for httpx, on asyncio streams: delivery's hot path.

Through httpx's default transport (httpcore over h11) a 25 KB JSON POST costs about
1.2 ms of CPU; replay sends one request per 100 events from one process, so that
process's CPU is what limits it. `LeanTransport` speaks the HTTP/1.1 that delivery
needs for about 0.35 ms a request, httpx's client layer included
(benchmarks/transport.py), under the same httpx API: destinations still call
`client.request(...)`, get an `httpx.Response` and see httpx's errors.

    client = httpx.AsyncClient(transport=LeanTransport(), timeout=30.0)

What it does:
- a pool of keep-alive connections per origin (scheme, host, port), capped by
  `httpx.Limits` applied **per origin**: a slow destination cannot take the
  connections of the others; at the cap a request waits (`pool` timeout);
- TLS with `httpx.create_ssl_context()` (certifi, `SSL_CERT_FILE`/`SSL_CERT_DIR`,
  as httpx does), the host name checked and sent as SNI;
- bodies framed by Content-Length, `Transfer-Encoding: chunked`, or the end of the
  connection; none for HEAD, 1xx, 204 and 304; at most `max_response_body` bytes;
- a connection back in the pool only after a complete response without
  `Connection: close`; an idle connection that the server closed (or that holds
  bytes nobody asked for) is dropped before use; a request that finds a reused
  connection dead before any byte of the answer is sent once more on a fresh one
  (what urllib3 and Go do for stale keep-alive connections);
- httpx's timeouts and errors: ConnectTimeout, ReadTimeout, WriteTimeout,
  PoolTimeout, ConnectError, ReadError, WriteError, RemoteProtocolError.

What it does not do: proxies (`default_client` keeps httpx's own transport when the
environment names one), HTTP/2, `Expect: 100-continue`, protocol upgrades, and
streaming: a request body is read whole before sending, a response body whole
before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Iterable

import httpx

Origin = tuple[str, str, int]  # scheme, host, port

DEFAULT_PORTS = {"http": 80, "https": 443}
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
MAX_RESPONSE_BODY = 16 * 1024 * 1024
MAX_RESPONSE_HEAD = 64 * 1024  # status line and headers, as h11 allows
READ_CHUNK = 64 * 1024  # each read of a large body gets its own read timeout, as in httpx
MAX_INTERIM_RESPONSES = 10  # 1xx answers skipped before the real one
BODYLESS_METHODS = frozenset({"HEAD"})
BODYLESS_STATUSES = frozenset({204, 304})

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE = re.compile(rb"[\r\n\0]")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?", re.DOTALL)
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class ResponseTooLarge(httpx.TransportError):
    """A response body over the transport's `max_response_body`: not read, not kept."""


class _StaleConnection(Exception):
    """A reused connection died before any byte of the answer: the server had closed it."""


class _Connection:
    __slots__ = ("idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float | None) -> bool:
        """Whether an idle connection can carry the next request."""
        if expiry is not None and now - self.idle_since > expiry:
            return False
        return not (self.reader.at_eof() or self.writer.is_closing() or _unread_bytes(self.reader))

    def close(self) -> None:
        self.writer.close()


class _OriginPool:
    __slots__ = ("idle", "slots")

    def __init__(self, max_connections: int | None) -> None:
        self.idle: list[_Connection] = []  # most recently used last
        self.slots = asyncio.Semaphore(max_connections) if max_connections else None


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections on asyncio streams, for `httpx.AsyncClient`.

    `limits` is httpx's `Limits`, applied per origin; `ssl_context` defaults to
    `httpx.create_ssl_context()` (made on the first https request).
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits = DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        max_response_body: int = MAX_RESPONSE_BODY,
    ) -> None:
        self._max_connections = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._keepalive_expiry = limits.keepalive_expiry
        self._ssl_context = ssl_context
        self._max_response_body = max_response_body
        self._pools: dict[Origin, _OriginPool] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = _origin(request)
        data = _encode_request(request, await request.aread())
        timeouts = request.extensions.get("timeout", {})
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _OriginPool(self._max_connections)
        slots = pool.slots
        if slots is not None:
            await _acquire(slots, request, timeouts.get("pool"))
        try:
            return await self._exchange(pool, origin, request, data, timeouts)
        finally:
            if slots is not None:
                slots.release()

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        connections = list(self._open)
        self._open.clear()
        for pool in self._pools.values():
            pool.idle.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):  # a TLS peer may never answer close_notify
                    await connection.writer.wait_closed()

    # -- one exchange ----------------------------------------------------------------

    async def _exchange(
        self,
        pool: _OriginPool,
        origin: Origin,
        request: httpx.Request,
        data: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        connection = self._take_idle(pool)
        if connection is not None:
            try:
                return await self._send(pool, connection, request, data, timeouts)
            except _StaleConnection:
                pass  # the server closed it while idle: once more, on a fresh connection
        connection = await self._connect(origin, request, timeouts.get("connect"))
        return await self._send(pool, connection, request, data, timeouts)

    async def _send(
        self,
        pool: _OriginPool,
        connection: _Connection,
        request: httpx.Request,
        data: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        keep = False
        try:
            await _write(connection, request, data, timeouts.get("write"))
            response, keep = await self._read_response(connection, request, timeouts.get("read"))
        finally:
            # Anything short of a complete answer (an error, a cancelled lane) leaves
            # the connection in an unknown state: it is closed, never pooled.
            if keep:
                self._release(pool, connection)
            else:
                self._discard(connection)
        return response

    async def _read_response(
        self, connection: _Connection, request: httpx.Request, timeout: float | None
    ) -> tuple[httpx.Response, bool]:
        reader = connection.reader
        for _ in range(MAX_INTERIM_RESPONSES):
            head = await _read_head(connection, request, timeout)
            version, status, reason, headers = _parse_head(head, request)
            if not 100 <= status < 200:
                break
            if status == 101:
                msg = "the server switched protocols (101): LeanTransport does not upgrade"
                raise httpx.RemoteProtocolError(msg, request=request)
        else:
            msg = f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses"
            raise httpx.RemoteProtocolError(msg, request=request)
        framing = _Framing.of(request, version, status, headers)
        body = await framing.read_body(reader, request, timeout, self._max_response_body)
        response = httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(body),
            extensions={"http_version": b"HTTP/1." + version, "reason_phrase": reason},
            request=request,
        )
        return response, framing.keep_alive

    # -- the pool ------------------------------------------------------------------------

    def _take_idle(self, pool: _OriginPool) -> _Connection | None:
        now = time.monotonic()
        while pool.idle:
            connection = pool.idle.pop()
            if connection.usable(now, self._keepalive_expiry):
                return connection
            self._discard(connection)
        return None

    def _release(self, pool: _OriginPool, connection: _Connection) -> None:
        if self._closed or (self._max_idle is not None and len(pool.idle) >= self._max_idle):
            self._discard(connection)
            return
        now = time.monotonic()
        connection.reused = True
        connection.idle_since = now
        idle = pool.idle
        idle.append(connection)
        expiry = self._keepalive_expiry
        while expiry is not None and now - idle[0].idle_since > expiry:  # oldest first
            self._discard(idle.pop(0))

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    async def _connect(
        self, origin: Origin, request: httpx.Request, timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        context = self._tls_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                    limit=MAX_RESPONSE_HEAD,
                )
        except TimeoutError as exc:
            msg = f"connecting to {host}:{port} took more than {timeout} s"
            raise httpx.ConnectTimeout(msg, request=request) from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            msg = f"cannot connect to {host}:{port}: {exc}"
            raise httpx.ConnectError(msg, request=request) from exc
        connection = _Connection(reader, writer)
        if self._closed:
            connection.close()
            msg = "the transport is closed"
            raise httpx.ConnectError(msg, request=request)
        self._open.add(connection)
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = httpx.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context


# -- requests -------------------------------------------------------------------------


def _origin(request: httpx.Request) -> Origin:
    url = request.url
    scheme = url.scheme
    default_port = DEFAULT_PORTS.get(scheme)
    if default_port is None:
        msg = f"LeanTransport speaks http and https, not {scheme!r} ({url})"
        raise httpx.UnsupportedProtocol(msg, request=request)
    return scheme, url.raw_host.decode("ascii"), url.port or default_port


def _encode_request(request: httpx.Request, body: bytes) -> bytes:
    """The request line, httpx's headers as given (Host and Content-Length added only
    when missing) and the body, as one buffer: one write, one send."""
    method = request.method.encode("ascii")
    if not _TOKEN.fullmatch(method):
        msg = f"invalid HTTP method {request.method!r}"
        raise httpx.LocalProtocolError(msg, request=request)
    lines = [b"%s %s HTTP/1.1" % (method, request.url.raw_path or b"/")]
    has_host = has_length = chunked = False
    for name, value in request.headers.raw:
        # A CR or LF in a header (a mapped value, a config string) would let it write
        # headers or a second request of its own: refused, as h11 refuses it.
        if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
            msg = f"invalid header {name!r}: {value[:80]!r}"
            raise httpx.LocalProtocolError(msg, request=request)
        lower = name.lower()
        if lower == b"host":
            has_host = True
        elif lower == b"content-length":
            has_length = True
        elif lower == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        lines.append(name + b": " + value)
    if not has_host:
        lines.insert(1, b"Host: " + request.url.netloc)
    if chunked:  # httpx framed a streamed body this way; the body is whole now
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    elif not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"\r\n")
    return b"\r\n".join(lines) + body


async def _acquire(slots: asyncio.Semaphore, request: httpx.Request, timeout: float | None) -> None:
    if not slots.locked():
        await slots.acquire()  # a free slot: taken without waiting
        return
    try:
        async with asyncio.timeout(timeout):
            await slots.acquire()
    except TimeoutError as exc:
        msg = f"no connection to {request.url.host} was free within {timeout} s"
        raise httpx.PoolTimeout(msg, request=request) from exc


async def _write(
    connection: _Connection, request: httpx.Request, data: bytes, timeout: float | None
) -> None:
    writer = connection.writer
    try:
        writer.write(data)
        if writer.transport.get_write_buffer_size() == 0:
            await writer.drain()  # the kernel took it all: drain only reports a lost connection
        else:
            async with asyncio.timeout(timeout):
                await writer.drain()
    except TimeoutError as exc:
        msg = f"sending the request took more than {timeout} s"
        raise httpx.WriteTimeout(msg, request=request) from exc
    except OSError as exc:
        if _unread_bytes(connection.reader):
            return  # the server answered before taking the whole request (a 413): read that
        if connection.reused:
            raise _StaleConnection from exc
        msg = f"sending the request failed: {exc!r}"
        raise httpx.WriteError(msg, request=request) from exc


# -- responses ------------------------------------------------------------------------


async def _read_head(
    connection: _Connection, request: httpx.Request, timeout: float | None
) -> bytes:
    reader = connection.reader
    try:
        async with asyncio.timeout(timeout):
            return await reader.readuntil(b"\r\n\r\n")
    except TimeoutError as exc:
        msg = f"no response within {timeout} s"
        raise httpx.ReadTimeout(msg, request=request) from exc
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            if connection.reused:
                raise _StaleConnection from exc
            msg = "the server closed the connection without sending a response"
            raise httpx.RemoteProtocolError(msg, request=request) from exc
        msg = f"the server closed the connection in the middle of the response head: {exc.partial[:80]!r}"
        raise httpx.RemoteProtocolError(msg, request=request) from exc
    except asyncio.LimitOverrunError as exc:
        msg = f"the response head is larger than {MAX_RESPONSE_HEAD} bytes"
        raise httpx.RemoteProtocolError(msg, request=request) from exc
    except OSError as exc:
        if connection.reused and not _unread_bytes(reader):
            raise _StaleConnection from exc
        msg = f"reading the response failed: {exc!r}"
        raise httpx.ReadError(msg, request=request) from exc


def _parse_head(
    head: bytes, request: httpx.Request
) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """(minor version, status, reason phrase, headers) of a response head."""
    lines = head[:-4].split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        msg = f"malformed status line {lines[0][:100]!r}"
        raise httpx.RemoteProtocolError(msg, request=request)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also refuses obsolete line folding
            msg = f"malformed header line {line[:100]!r}"
            raise httpx.RemoteProtocolError(msg, request=request)
        headers.append((name, value.strip(b" \t")))
    return match[1], int(match[2]), match[3] or b"", headers


class _Framing:
    """How a response's body is delimited, and whether its connection can be reused."""

    __slots__ = ("keep_alive", "kind", "length")

    def __init__(self, kind: str, length: int, keep_alive: bool) -> None:
        self.kind = kind  # "none", "length", "chunked" or "eof"
        self.length = length
        self.keep_alive = keep_alive

    @classmethod
    def of(
        cls,
        request: httpx.Request,
        version: bytes,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> _Framing:
        lengths: set[bytes] = set()
        encoding = b""
        connection = b""
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                lengths.update(v.strip() for v in value.split(b","))
            elif lower == b"transfer-encoding":
                encoding += b"," + value.lower()
            elif lower == b"connection":
                connection += b"," + value.lower()
        tokens = {t.strip() for t in connection.split(b",")}
        keep_alive = b"close" not in tokens if version == b"1" else b"keep-alive" in tokens
        if "close" in request.headers.get("connection", "").lower():
            keep_alive = False
        if request.method in BODYLESS_METHODS or status in BODYLESS_STATUSES or status < 200:
            return cls("none", 0, keep_alive)
        if encoding:
            # Transfer-Encoding wins over Content-Length (RFC 9112 6.3); a coding
            # that does not end in chunked runs to the end of the connection.
            if encoding.rsplit(b",", 1)[-1].strip() == b"chunked":
                return cls("chunked", 0, keep_alive)
            return cls("eof", 0, False)
        if lengths:
            if len(lengths) > 1 or not _CONTENT_LENGTH.fullmatch(next(iter(lengths))):
                msg = f"invalid Content-Length {b', '.join(sorted(lengths))!r}"
                raise httpx.RemoteProtocolError(msg, request=request)
            return cls("length", int(next(iter(lengths))), keep_alive)
        return cls("eof", 0, False)

    async def read_body(
        self,
        reader: asyncio.StreamReader,
        request: httpx.Request,
        timeout: float | None,
        limit: int,
    ) -> bytes:
        if self.kind == "none":
            return b""
        if self.kind == "length":
            _check_size(self.length, limit, request)
            if self.length <= _unread_bytes(reader):
                return await reader.readexactly(self.length)  # all here already: nothing to time
        body = _BodyReader(reader, request, timeout, limit)
        try:
            async with asyncio.timeout(timeout) as body.deadline:
                if self.kind == "length":
                    return await body.exactly(self.length)
                if self.kind == "chunked":
                    return await body.chunked()
                return await body.to_eof()
        except TimeoutError as exc:
            msg = f"the response body stalled for more than {timeout} s"
            raise httpx.ReadTimeout(msg, request=request) from exc
        except asyncio.IncompleteReadError as exc:
            msg = "the server closed the connection before the end of the response body"
            raise httpx.RemoteProtocolError(msg, request=request) from exc
        except asyncio.LimitOverrunError as exc:
            msg = "a chunk-size line of the response body is too long"
            raise httpx.RemoteProtocolError(msg, request=request) from exc
        except OSError as exc:
            msg = f"reading the response body failed: {exc!r}"
            raise httpx.ReadError(msg, request=request) from exc


class _BodyReader:
    """Reads one response body under one read deadline, pushed back after every
    READ_CHUNK bytes received: `read` bounds a stall, not a slow but steady body
    (httpx times each socket read; one timer per body costs far less CPU)."""

    __slots__ = ("deadline", "limit", "reader", "request", "timeout", "total", "unarmed")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        request: httpx.Request,
        timeout: float | None,
        limit: int,
    ) -> None:
        self.reader = reader
        self.request = request
        self.timeout = timeout
        self.limit = limit
        self.deadline: asyncio.Timeout | None = None
        self.total = 0  # body bytes so far
        self.unarmed = 0  # bytes received since the deadline was last set

    def received(self, size: int) -> None:
        self.total += size
        _check_size(self.total, self.limit, self.request)
        self.unarmed += size
        if self.unarmed >= READ_CHUNK and self.timeout is not None and self.deadline is not None:
            self.deadline.reschedule(asyncio.get_running_loop().time() + self.timeout)
            self.unarmed = 0

    async def exactly(self, size: int) -> bytes:
        _check_size(self.total + size, self.limit, self.request)
        if size <= READ_CHUNK:
            data = await self.reader.readexactly(size)
            self.received(size)
            return data
        parts: list[bytes] = []
        remaining = size
        while remaining:
            part = await self.reader.readexactly(min(remaining, READ_CHUNK))
            self.received(len(part))
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

    async def chunked(self) -> bytes:
        reader = self.reader
        parts: list[bytes] = []
        while True:
            line = await reader.readuntil(b"\r\n")
            size_field = line[:-2].split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not _CHUNK_SIZE.fullmatch(size_field):
                msg = f"malformed chunk size {line[:40]!r}"
                raise httpx.RemoteProtocolError(msg, request=self.request)
            size = int(size_field, 16)
            if size == 0:
                break
            parts.append(await self.exactly(size))
            if await reader.readexactly(2) != b"\r\n":
                msg = "a chunk of the response body does not end with CRLF"
                raise httpx.RemoteProtocolError(msg, request=self.request)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
            pass
        return b"".join(parts)

    async def to_eof(self) -> bytes:
        parts: list[bytes] = []
        while part := await self.reader.read(READ_CHUNK):
            self.received(len(part))
            parts.append(part)
        return b"".join(parts)


def _check_size(size: int, limit: int, request: httpx.Request) -> None:
    if size > limit:
        msg = (
            f"the response body from {request.url.host} is larger than {limit} bytes "
            f"({size} bytes or more); LeanTransport reads at most max_response_body bytes"
        )
        raise ResponseTooLarge(msg, request=request)


def _unread_bytes(reader: asyncio.StreamReader) -> int:
    # StreamReader has no public way to ask whether received bytes wait in it. On an
    # idle connection they answer no request (a server's 408 before it hangs up) and
    # would be taken for the next request's response; h11's pool checks the same.
    return len(getattr(reader, "_buffer", b""))
