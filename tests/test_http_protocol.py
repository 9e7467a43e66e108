"""The listener's HTTP protocol under hostile clients: raw sockets against uvicorn on 127.0.0.1.

Idle and slow clients are timed out, idle connections past the limit are closed
while /healthz and valid requests are served, headers are bounded (431), protocol
errors have JSON bodies, and a valid request followed by garbage gets its 200.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import selectors
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from streamctl.sources.http_protocol import (
    OVERRIDDEN,
    USED_ATTRIBUTES,
    ConnectionLimits,
    GuardedHttpToolsProtocol,
    guarded_protocol,
)
from tests.listener_harness import WEB_KEY, ListenerThread, write_project
from tests.test_listener import basic, idle_runtime

LIMITS = ConnectionLimits(
    max_connections=2048, header_timeout=2.0, body_timeout=1.0, max_header_bytes=32 * 1024
)


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerThread]:
    project_dir = write_project(tmp_path_factory.mktemp("protocol"))
    with ListenerThread(project_dir, runtime_factory=idle_runtime, connections=LIMITS) as running:
        yield running


def address(listener: ListenerThread) -> tuple[str, int]:
    parts = urlsplit(listener.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def connect(listener: ListenerThread, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address(listener), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every HTTP/1.1 response in `raw` (each with a Content-Length): status, headers, body."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        found.append((status, headers, rest[:length]))
        raw = rest[length:]
    return found


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert payload["success"] is False and payload["message"]


def track_request(message_id: str, *, extra_body: bytes = b"") -> bytes:
    body = json.dumps({"userId": "u1", "event": "E", "messageId": message_id}).encode()
    auth = basic(WEB_KEY)["Authorization"]
    head = (
        f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body + extra_body


def stored_ids(listener: ListenerThread) -> set[str]:
    return {event["messageId"] for _, event in listener.queued()}


# -- the guard and uvicorn ---------------------------------------------------------------


def test_uvicorn_still_has_what_the_guard_overrides() -> None:
    # The guard subclasses uvicorn's protocol: a change of these under it fails here first.
    for name, signature in OVERRIDDEN.items():
        assert str(inspect.signature(getattr(HttpToolsProtocol, name))) == signature, name
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in USED_ATTRIBUTES:
        assert f"self.{attribute} = " in source or f"self.{attribute}: " in source, attribute
    cycle = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "self.cycle = RequestResponseCycle(" in cycle and "self.pipeline.appendleft(" in cycle


# -- idle and slow clients ---------------------------------------------------------------


def test_idle_connections_past_the_limit_are_closed_while_healthz_and_valid_requests_answer(
    tmp_path: Path,
) -> None:
    # The attack: 2,100 connections (the limit is 2,048) send a request line and
    # one header, then nothing. A long header timeout here: what ends them is the limit.
    limits = ConnectionLimits(max_connections=2048, header_timeout=60.0)
    project_dir = write_project(tmp_path / "project")
    with ListenerThread(project_dir, runtime_factory=idle_runtime, connections=limits) as server:
        idle = []
        for _ in range(2100):
            sock = connect(server)
            sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            idle.append(sock)
        for _ in range(10):
            health = httpx.get(server.url + "/healthz", timeout=5)  # a new connection each
            assert health.status_code == 200, health.text
        message_id = f"well-behaved-{uuid.uuid4()}"
        body = {"userId": "u1", "event": "E", "messageId": message_id}
        reply = httpx.post(server.url + "/v1/track", json=body, headers=basic(WEB_KEY))
        assert reply.status_code == 200, reply.text
        assert message_id in stored_ids(server)
        # The longest idle were closed to make room: the first ones opened.
        closed = wait_for_closed(idle, at_least=2100 - 2048)
        assert max(closed) < 100, closed
        for sock in idle:
            sock.close()


def wait_for_closed(socks: list[socket.socket], at_least: int) -> list[int]:
    """Indexes of the sockets the server closed, once at least `at_least` are (10 s at most)."""
    closed: list[int] = []
    with selectors.DefaultSelector() as selector:  # epoll: select() stops at fd 1024
        for index, sock in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, index)
        deadline = time.monotonic() + 10
        while len(closed) < at_least and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                selector.unregister(key.fileobj)
                if socks[key.data].recv(65536) == b"":
                    closed.append(key.data)
    assert len(closed) >= at_least, len(closed)
    return sorted(closed)


def test_idle_connections_are_answered_408_after_the_header_timeout(
    listener: ListenerThread,
) -> None:
    idle = []
    for _ in range(50):
        sock = connect(listener)
        sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        idle.append(sock)
    for sock in idle:
        [(status, headers, body)] = responses(read_until_closed(sock))
        assert_json_error(status, headers, body, 408)
        assert b"headers" in body
        sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    listener: ListenerThread,
) -> None:
    sock = connect(listener)
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert time.monotonic() - started < LIMITS.header_timeout + 5
    sock.close()


def test_headers_trickled_a_byte_at_a_time_are_cut_at_the_header_timeout(
    listener: ListenerThread,
) -> None:
    # Slowloris: each byte resets no timer; the headers as a whole must be in on time.
    started = time.monotonic()
    with connect(listener) as sock:
        sock.sendall(b"POST /v1/track HTTP/1.1\r\nX-Slow: ")
        try:
            while time.monotonic() - started < LIMITS.header_timeout + 5:
                sock.sendall(b"a")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_until_closed(sock)
    assert time.monotonic() - started < LIMITS.header_timeout + 5
    if raw:
        [(status, headers, body)] = responses(raw)
        assert_json_error(status, headers, body, 408)


def test_a_slow_body_is_answered_408_and_nothing_is_stored(listener: ListenerThread) -> None:
    message_id = f"slow-body-{uuid.uuid4()}"
    request = track_request(message_id)
    head, _, body = request.partition(b"\r\n\r\n")
    with connect(listener) as sock:
        sock.sendall(head + b"\r\n\r\n" + body[:10])  # and the rest never comes
        [(status, headers, reply)] = responses(read_until_closed(sock))
    assert_json_error(status, headers, reply, 408)
    assert b"body" in reply
    assert message_id not in stored_ids(listener)


# -- header size ---------------------------------------------------------------------------


def test_headers_over_the_limit_are_431_with_a_json_body(listener: ListenerThread) -> None:
    with connect(listener) as sock:
        big = b"X-Padding: " + b"a" * (40 * 1024) + b"\r\n"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + big + b"\r\n")
        [(status, headers, body)] = responses(read_until_closed(sock))
    assert_json_error(status, headers, body, 431)


def test_a_never_finished_huge_header_is_refused_before_it_is_all_sent(
    listener: ListenerThread,
) -> None:
    # The 16 MB header never finished: the server answers once it passes the
    # limit and closes, so it never holds more than the limit of it.
    sent = 0
    raw = b""
    with connect(listener) as sock:
        sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
        try:
            while sent < 16 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_until_closed(sock)
    assert sent < 16 * 1024 * 1024
    if raw:  # a reset may drop the answer on the floor; when it arrived, it is JSON
        [(status, headers, body)] = responses(raw)
        assert_json_error(status, headers, body, 431)


def test_headers_just_under_the_limit_are_served(listener: ListenerThread) -> None:
    with connect(listener) as sock:
        padding = b"X-Padding: " + b"a" * (30 * 1024) + b"\r\n"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        sock.sendall(padding + b"\r\n")
        [(status, _, body)] = responses(read_until_closed(sock))
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_headers_after_a_request_in_the_same_read_count_against_the_limit(
    listener: ListenerThread,
) -> None:
    # One packet: a whole request, then 40 KB of the next one's headers that never end.
    # Counted from their first byte, they pass the 32 KB limit now: 431. Fed uncounted,
    # they were held, with room for another 32 KB, until the header timeout (408).
    with connect(listener) as sock:
        unfinished = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * (40 * 1024)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + unfinished)
        answers = responses(read_until_closed(sock))
    assert [status for status, _, _ in answers] == [200, 431], answers
    assert_json_error(*answers[1], 431)


def test_requests_after_bodies_in_the_same_read_are_each_answered(
    listener: ListenerThread,
) -> None:
    # Each part is fed on its own (a Content-Length body, a chunked one whose data holds
    # a blank line, then a request with headers near the limit): all answered.
    ids = [f"parts-{uuid.uuid4()}" for _ in range(2)]
    body = json.dumps({"userId": "u1", "event": "E\r\n\r\n", "messageId": ids[1]}).encode()
    auth = basic(WEB_KEY)["Authorization"]
    chunked = (
        f"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    padding = b"X-Padding: " + b"a" * (30 * 1024) + b"\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + padding + b"\r\n"
    with connect(listener) as sock:
        sock.sendall(track_request(ids[0]) + chunked + last)
        answers = responses(read_until_closed(sock))
    assert [status for status, _, _ in answers] == [200, 200, 200], answers
    assert set(ids) <= stored_ids(listener)


class NullTransport:
    """A transport that keeps what the protocol writes (for the in-process cases)."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _never_called(scope: object, receive: object, send: object) -> None:
    pass


def in_process_protocol(limits: ConnectionLimits) -> tuple[GuardedHttpToolsProtocol, NullTransport]:
    """The guarded protocol on a loop that is not running: requests are parsed and
    queued, never answered, so what it made of the bytes can be inspected."""
    cls = guarded_protocol(limits)
    config = uvicorn.Config(app=_never_called, http=cls, lifespan="off", log_level="error")
    config.load()
    loop = asyncio.new_event_loop()
    protocol = cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = NullTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def close(protocol: GuardedHttpToolsProtocol) -> None:
    protocol.connection_lost(None)
    for task in asyncio.all_tasks(protocol.loop):  # the app calls set up, never run
        task.cancel()
    protocol.loop.run_until_complete(asyncio.sleep(0))
    protocol.loop.close()


def test_every_split_of_pipelined_requests_parses_alike_and_counts_headers_from_their_start() -> (
    None
):
    # Three requests (a Content-Length body, a chunked body holding a blank line, a GET
    # with a header near the limit) in two reads split at every byte: a blank line cut
    # between reads still ends its part, so each request is parsed whole, no 431.
    padding = b"X-Padding: " + b"a" * 150 + b"\r\n"
    stream = (
        b"POST /a HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nx\r\n\r\ny\r\n0\r\n\r\n"
        b"GET /c HTTP/1.1\r\n" + padding + b"\r\n"
    )
    limits = ConnectionLimits(max_header_bytes=200)
    for split in range(len(stream) + 1):
        protocol, transport = in_process_protocol(limits)
        protocol.data_received(stream[:split])
        protocol.data_received(stream[split:])
        queued = [cycle for cycle, _ in reversed(protocol.pipeline)]
        assert transport.written == b"", (split, transport.written)
        assert [c.scope["path"] for c in queued] == ["/b", "/c"], split
        assert [(c.body, c.more_body) for c in queued] == [(b"x\r\n\r\ny", False), (b"", False)]
        close(protocol)
    # The same GET with 60 more header bytes is over the limit, however the bytes came.
    over = stream[:-2] + b"X-More: " + b"b" * 50 + b"\r\n\r\n"
    for split in range(len(over) + 1):
        protocol, transport = in_process_protocol(limits)
        protocol.data_received(over[:split])
        protocol.data_received(over[split:])
        # Refused at once; answered after the requests before it (never, here).
        assert protocol._refused and protocol._deferred is not None, split
        assert protocol._deferred.startswith(b"HTTP/1.1 431"), split
        close(protocol)


# -- protocol errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x00\x01\x02 nonsense\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",  # a path that is not ASCII
        b"GET http://[bad HTTP/1.1\r\nHost: x\r\n\r\n",  # a URL that does not parse
        b"POST /v1/track HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /v1/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ],
)
def test_malformed_http_is_answered_400_with_a_json_body(
    listener: ListenerThread, request_bytes: bytes
) -> None:
    with connect(listener) as sock:
        sock.sendall(request_bytes)
        [(status, headers, body)] = responses(read_until_closed(sock))
    assert_json_error(status, headers, body, 400)


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        (b"GET /nowhere HTTP/1.1", 404),
        (b"POST /healthz HTTP/1.1", 405),
        (b"DELETE /metrics HTTP/1.1", 405),
        (b"GET /v1/track HTTP/1.1", 405),
        (b"POST /v1/nothing HTTP/1.1", 404),
        (b"PUT /beacon/v1/batch HTTP/1.1", 405),
    ],
)
def test_unknown_paths_and_methods_are_json_404_and_405(
    listener: ListenerThread, request_line: bytes, expected: int
) -> None:
    with connect(listener) as sock:
        sock.sendall(
            request_line + b"\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        [(status, headers, body)] = responses(read_until_closed(sock))
    assert_json_error(status, headers, body, expected)


def test_an_upgrade_request_with_a_body_is_400_and_without_one_is_answered_then_closed(
    listener: ListenerThread,
) -> None:
    # curl --http2 on http:// asks for `Upgrade: h2c`; streamctl upgrades to nothing.
    with connect(listener) as sock:
        body = b'{"userId": "u1", "event": "E"}'
        sock.sendall(
            b"POST /v1/track HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        [(status, headers, reply)] = responses(read_until_closed(sock))
    assert_json_error(status, headers, reply, 400)
    assert b"Upgrade" in reply
    with connect(listener) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        )
        [(status, _, reply)] = responses(read_until_closed(sock))
    assert status == 200 and json.loads(reply) == {"status": "ok"}


# -- a valid request, then garbage -------------------------------------------------------


@pytest.mark.parametrize(
    "after", [b"GARBAGE /x HTTP/1.1\r\n\r\n", b"}{ more body than Content-Length said"]
)
def test_a_valid_request_followed_by_garbage_gets_its_200_then_a_400(
    listener: ListenerThread, after: bytes
) -> None:
    ids = [f"then-garbage-{uuid.uuid4()}" for _ in range(10)]
    for message_id in ids:
        with connect(listener) as sock:
            sock.sendall(track_request(message_id, extra_body=after))  # one packet
            answers = responses(read_until_closed(sock))
        assert [status for status, _, _ in answers] == [200, 400], answers
        assert json.loads(answers[0][2]) == {"success": True}
        assert_json_error(*answers[1], 400)
    assert set(ids) <= stored_ids(listener)


def test_pipelined_valid_requests_are_each_answered(listener: ListenerThread) -> None:
    ids = [f"pipelined-{uuid.uuid4()}" for _ in range(3)]
    with connect(listener) as sock:
        sock.sendall(b"".join(track_request(message_id) for message_id in ids))
        sock.settimeout(2.0)  # keep-alive: the server keeps the connection open
        raw = b""
        while raw.count(b"HTTP/1.1 200") < 3:
            raw += sock.recv(65536)
    assert [status for status, _, _ in responses(raw)] == [200, 200, 200]
    assert set(ids) <= stored_ids(listener)


# -- requests in flight ------------------------------------------------------------------


def test_past_the_in_flight_limit_requests_are_503_json_and_healthz_still_answers(
    tmp_path: Path,
) -> None:
    limits = ConnectionLimits(max_connections=2, header_timeout=5.0, body_timeout=5.0)
    project_dir = write_project(tmp_path / "project")
    with ListenerThread(project_dir, runtime_factory=idle_runtime, connections=limits) as busy:
        holding = []
        for message_id in ("held-1", "held-2"):  # in flight: their bodies never finish
            sock = connect(busy)
            sock.sendall(track_request(message_id)[:-5])
            holding.append(sock)
        reply = wait_for_status(busy, 503)
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["retry-after"] == "1"
        assert reply.json()["code"] == "busy"
        assert httpx.get(busy.url + "/healthz").status_code == 200
        for sock in holding:
            sock.close()
        assert wait_for_status(busy, 200).json() == {"success": True}


def wait_for_status(listener: ListenerThread, status: int) -> httpx.Response:
    """POST a valid event until the answer has `status` (the server sees sockets a bit later)."""
    deadline = time.monotonic() + 10
    while True:
        body = {"userId": "u1", "event": "E", "messageId": f"probe-{uuid.uuid4()}"}
        reply = httpx.post(listener.url + "/v1/track", json=body, headers=basic(WEB_KEY))
        if reply.status_code == status or time.monotonic() > deadline:
            assert reply.status_code == status, reply.text
            return reply
        time.sleep(0.02)
