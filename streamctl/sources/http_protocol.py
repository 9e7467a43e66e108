"""The HTTP/1.1 protocol under the listener: uvicorn's httptools protocol, guarded.

    config = uvicorn.Config(app, http=guarded_protocol(ConnectionLimits()), ...)

uvicorn's configuration cannot do these jobs, so this subclass of its
`HttpToolsProtocol` does them (measured against uvicorn 0.55 with httptools 0.9,
what `streamctl run` had before):

| guard | uvicorn alone |
| --- | --- |
| headers must arrive within `header_timeout` (10 s) of a connection's or a request's first byte; else 408 (or a silent close when nothing was sent) | no timeout: 2,100 connections that sent a request line and one header were held forever |
| a body must arrive within `body_timeout` (30 s) of its headers, not counting time the server paused reading; else 408 | no timeout |
| past `max_connections`, the connection idle longest (between requests, or still sending headers) is closed; a request being handled never is | `limit_concurrency` counts idle connections: once they pile up every request, /healthz too, is answered 503 |
| the request line and headers at most `max_header_bytes` (32 KB): 431, and no more than that is ever buffered | no limit: an 8 MB header was answered 200, four unfinished 16 MB ones held 207 MB |
| protocol errors (400 malformed, 408, 431) answer the JSON error shape of the ingest API | `text/plain` |
| a malformed request after valid ones: each valid one is answered first, then the 400 | the 400 was written and the connection closed at once, while the valid request's events were being stored: its 200 was lost |

The ingest app (streamctl.sources.http_api) bounds requests in flight itself (503
past `max_connections` of them), so uvicorn's `limit_concurrency` is not used.
Header bytes are counted as they arrive, before the parser sees them: httptools
buffers an unfinished header value itself, so counting in its callbacks would come
too late. A read is fed to the parser one message part at a time (the headers up to
their blank line, a body up to its Content-Length or a chunked body up to each
possible end), so bytes that follow a request completed within the same read count
against the next request's headers: a connection holds at most the limit of
unfinished headers, besides the one read (up to 256 KB, asyncio's) being fed. Fed
whole, one read of a short request and 250 KB of an unfinished header was held
uncounted, and the next read could add the limit again. The parts cost one more
parser call a request: 21-23 us of CPU per `/v1/track` request in-process became
23-24 us (benchmarks/http_protocol.py, this / before median 1.11 and 1.20 in two runs
of 15 rounds on a loaded machine), about 2% of what the listener spends on one.

What is overridden is listed in `OVERRIDDEN`, with the signatures of the uvicorn
version it was written against; tests/test_http_protocol.py fails when uvicorn
changes them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# uvicorn methods and attributes this module relies on (names -> signatures of 0.55).
OVERRIDDEN = {
    "connection_made": "(self, transport: 'asyncio.Transport') -> 'None'",
    "connection_lost": "(self, exc: 'Exception | None') -> 'None'",
    "data_received": "(self, data: 'bytes') -> 'None'",
    "send_400_response": "(self, msg: 'str') -> 'None'",
    "on_message_begin": "(self) -> 'None'",
    "on_headers_complete": "(self) -> 'None'",
    "on_message_complete": "(self) -> 'None'",
    "on_response_complete": "(self) -> 'None'",
    "_unsupported_upgrade_warning": "(self) -> 'None'",
}
log = logging.getLogger(__name__)

NEVER = math.inf
USED_ATTRIBUTES = ("cycle", "pipeline", "flow", "connections", "transport", "loop", "server_state")


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how much a client may take; see the module docstring."""

    max_connections: int = 2048
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 32 * 1024


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server: its limits, and its own idle-connection list."""

    class ServerProtocol(GuardedHttpToolsProtocol):
        pass

    ServerProtocol.limits = limits
    ServerProtocol.idle = OrderedDict()
    ServerProtocol.sweeping = False
    return ServerProtocol


def error_response(status: int, code: str, message: str, default_headers: Any = ()) -> bytes:
    """A complete HTTP/1.1 response in the ingest API's error shape, closing the connection."""
    body = orjson.dumps({"success": False, "code": code, "message": message})
    head = [STATUS_LINE[status]]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head.append(b"content-type: application/json\r\n")
    head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    return b"".join(head) + body


def _nothing() -> None:
    pass


def _body_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a request whose headers parsed, or None when chunked.

    The parser has refused a request with both, or with a Content-Length that is not
    one number, before its headers complete."""
    length = 0
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)
    return length


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read timeouts, a header limit, idle-connection
    eviction and JSON protocol errors. Use `guarded_protocol(limits)` for the class."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    sweeping: ClassVar[bool] = False  # a deadline sweep is scheduled for this server
    # Connections not handling a request, longest idle first (an ordered set).
    idle: ClassVar[OrderedDict[GuardedHttpToolsProtocol, None]] = OrderedDict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When the current read (headers or body) must be done by, on the loop's clock,
        # and what happens then; one sweep per server checks every connection's.
        self._deadline = NEVER
        self._on_deadline: Callable[[], None] = _nothing
        self._awaiting_headers = True
        self._header_bytes = 0
        self._tail = b""  # the last bytes fed of the headers or a chunked body, up to 3
        self._body_left: int | None = 0  # bytes of body to come; None: chunked
        self._refused = False  # a protocol error was answered: the rest is ignored
        self._deferred: bytes | None = None  # that answer, once earlier ones are written

    # -- connections --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle[self] = None
        self._arm(self.limits.header_timeout, self._header_timeout)
        self._evict_beyond_limit()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.idle.pop(self, None)
        super().connection_lost(exc)

    def _evict_beyond_limit(self) -> None:
        """Close the longest-idle connections while there are more than the limit."""
        while len(self.connections) > self.limits.max_connections and self.idle:
            victim = next(iter(self.idle))
            if victim is self:
                break
            del self.idle[victim]
            self.connections.discard(victim)  # now: its connection_lost comes later
            victim._disarm()
            victim.transport.close()

    # -- reading ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        while data and not self._refused:
            if self._awaiting_headers:
                room = self.limits.max_header_bytes - self._header_bytes
                end = self._part_end(data, room)
                piece = data[:end] if end else data[:room]
                self._header_bytes += len(piece)  # reset if the piece ends the message
                self._feed(piece)
                if self._awaiting_headers:
                    self._check_header_bytes()
            elif self._body_left is not None:  # Content-Length: the body ends there
                # (nothing left, yet not complete: after an Upgrade; the rest is not HTTP)
                piece = data[: self._body_left] or data
                self._body_left = max(0, self._body_left - len(piece))
                self._feed(piece)
            else:  # chunked: a body ends with a blank line, so it ends at one of them
                end = self._part_end(data, len(data))
                piece = data[:end] if end else data
                self._feed(piece)
            data = data[len(piece) :]

    def _part_end(self, data: bytes, within: int) -> int:
        """Where the first blank line (CRLF CRLF) ends in `data`'s first `within` bytes,
        counting one begun in the bytes fed before (the tail); 0 when there is none."""
        if self._tail:
            joined = self._tail + data[:3]
            found = joined.find(b"\r\n\r\n")
            if found != -1 and found + 4 - len(self._tail) <= within:
                return found + 4 - len(self._tail)
        found = data.find(b"\r\n\r\n", 0, within)
        return found + 4 if found != -1 else 0

    def _feed(self, piece: bytes) -> None:
        self._tail = (self._tail + piece[-3:])[-3:]
        super().data_received(piece)

    def _check_header_bytes(self) -> None:
        limit = self.limits.max_header_bytes
        if self._header_bytes >= limit and not self._refused:
            msg = f"the request line and headers are over the {limit} byte limit"
            self._refuse(431, "headers_too_large", msg)

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn warns at every read of an Upgrade connection, advising to install a
        WebSocket library: clients could fill the log. The request is answered (or
        refused) as plain HTTP, and the connection closed after it."""
        log.debug("an Upgrade request, answered as plain HTTP")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what httptools cannot parse (including a bad URL)."""
        message = "malformed HTTP request: the request line, a header or the body framing"
        self._refuse(400, "bad_request", message + " could not be parsed")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline == NEVER:
            self._arm(self.limits.header_timeout, self._header_timeout)

    def on_headers_complete(self) -> None:
        upgrade = self.parser.should_upgrade()
        if upgrade and _declares_body(self.headers):
            # httptools reads nothing after an Upgrade request's headers (the rest would be
            # the new protocol's): its body would be lost, and the app would see none.
            msg = "a request with Upgrade cannot carry a body: send it without the Upgrade header"
            self._refuse(400, "bad_request", msg)
            return
        super().on_headers_complete()
        if upgrade:  # streamctl upgrades to nothing: answered as plain HTTP, then closed
            self.cycle.keep_alive = False
        self._awaiting_headers = False
        self._tail = b""
        self._body_left = _body_length(self.headers)
        self.idle.pop(self, None)
        self._arm(self.limits.body_timeout, self._body_timeout)

    def on_message_complete(self) -> None:
        if self._refused:  # an Upgrade request refused in on_headers_complete: no cycle
            return
        super().on_message_complete()
        self._disarm()
        self._awaiting_headers = True
        self._header_bytes = 0
        self._tail = b""

    # -- answering ----------------------------------------------------------------------

    def on_response_complete(self) -> None:
        starts_next = bool(self.pipeline)  # uvicorn starts the next pipelined request
        super().on_response_complete()
        if starts_next or self.transport.is_closing():
            return
        if self._deferred is not None:
            self._write_and_close(self._deferred)  # every request before it is answered
        else:
            self.idle[self] = None

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer a protocol error and close, after the requests read before it.

        A request whose body was cut by the error gets the error as its answer (its
        app call sees a disconnect and stores nothing); requests complete before it
        are answered first: their events may already be stored.
        """
        self._refused = True
        self._disarm()
        self.idle.pop(self, None)
        response = error_response(status, code, message, self.server_state.default_headers)
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self._awaiting_headers:
            # The error cut this request's body.
            if self.pipeline and self.pipeline[0][0] is cycle:
                self.pipeline.popleft()  # queued behind a running one: never run it
                self._deferred = response
            else:
                cycle.disconnected = True  # its app call gets http.disconnect
                cycle.message_event.set()
                self._write_and_close(response)
        elif self.pipeline or (cycle is not None and not cycle.response_complete):
            self._deferred = response  # written by on_response_complete
        else:
            self._write_and_close(response)

    def _write_and_close(self, response: bytes) -> None:
        self._deferred = None
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # -- timeouts -----------------------------------------------------------------------

    # A timer per request (call_later, then cancel) cost measurable CPU on the hot path;
    # a deadline is two attribute stores, and one sweep per server a few times a second
    # checks them all (a timeout fires up to a sweep interval late).

    def _arm(self, seconds: float, handler: Callable[[], None]) -> None:
        self._deadline = self.loop.time() + seconds
        self._on_deadline = handler
        if not self.sweeping:
            type(self).sweeping = True
            self.loop.call_later(self._sweep_interval(), self._sweep, self.connections)

    def _disarm(self) -> None:
        self._deadline = NEVER

    @classmethod
    def _sweep_interval(cls) -> float:
        shortest = min(cls.limits.header_timeout, cls.limits.body_timeout)
        return min(1.0, max(0.05, shortest / 4))

    def _sweep(self, connections: set[Any]) -> None:
        """Fire the deadlines that passed; again after an interval while connections remain."""
        now = self.loop.time()
        for connection in list(connections):
            if connection._deadline <= now:
                connection._deadline = NEVER
                try:
                    connection._on_deadline()
                except Exception:  # one connection's failure must not end the sweeps
                    log.exception("closing a timed-out connection failed")
        if connections:
            self.loop.call_later(self._sweep_interval(), self._sweep, connections)
        else:
            type(self).sweeping = False

    def _header_timeout(self) -> None:
        if self.flow.read_paused:  # our doing (a pipelined request waits), not the client's
            self._arm(self.limits.header_timeout, self._header_timeout)
        elif self._header_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
            self.idle.pop(self, None)
            self.transport.close()  # connected and said nothing: no one to answer
        else:
            timeout = self.limits.header_timeout
            self._refuse(408, "timeout", f"the request headers took over {timeout:g} s")

    def _body_timeout(self) -> None:
        if self.flow.read_paused:
            self._arm(self.limits.body_timeout, self._body_timeout)
        else:
            timeout = self.limits.body_timeout
            self._refuse(408, "timeout", f"the request body took over {timeout:g} s")
