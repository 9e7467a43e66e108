"""LeanTransport over real sockets on 127.0.0.1: framing, keep-alive, stale connections,
timeouts, errors, limits, TLS, and `default_client` choosing it."""

from __future__ import annotations

import asyncio
import gc
import gzip
import shutil
import socket
import ssl
import subprocess
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamctl.delivery.client import DeliveryClient, default_client
from streamctl.delivery.transport import LeanTransport, ResponseTooLarge
from tests.fakes.http import FakeServer, Received, Reply

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CLOSE = None  # a responder's answer: close the connection without a word


@dataclass
class Exchange:
    """One request as the scripted server read it."""

    connection: int  # 1 for the first connection accepted
    number: int  # 1 for the first request on that connection
    head: bytes
    body: bytes

    @property
    def method(self) -> str:
        return self.head.split(b" ", 1)[0].decode()


Responder = Callable[[Exchange], Awaitable[bytes | None]]


@dataclass
class ScriptedServer:
    """An asyncio server on 127.0.0.1 that answers each request with the raw bytes the
    test's responder returns (None: close the connection without answering)."""

    respond: Responder
    close_after_reply: bool = False
    accepted: int = 0
    exchanges: list[Exchange] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    eof_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        connection = self.accepted
        try:
            await self._converse(connection, reader, writer)
        except asyncio.CancelledError:
            pass  # the test is over; asyncio would log a cancelled handler as an error
        finally:
            writer.close()

    async def _converse(
        self, connection: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        number = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.eof_seen.set()
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            number += 1
            exchange = Exchange(connection, number, head, await reader.readexactly(length))
            self.exchanges.append(exchange)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                answer = await self.respond(exchange)
            finally:
                self.in_flight -= 1
            if answer is CLOSE:
                return
            writer.write(answer)
            await writer.drain()
            if self.close_after_reply:
                return


def answer_with(data: bytes | None) -> Responder:
    async def respond(_exchange: Exchange) -> bytes | None:
        return data

    return respond


async def never_answer(_exchange: Exchange) -> bytes | None:
    await asyncio.Event().wait()
    return None


run = asyncio.run


def lean_client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(**kwargs), timeout=5.0)


# -- a round trip through httpx ----------------------------------------------------------


def test_round_trip_carries_json_headers_and_basic_auth() -> None:
    def answer(req: Received) -> Reply:
        return Reply(201, {"received": len(req.body)}, {"X-Request-Id": "r-1"})

    async def go() -> httpx.Response:
        async with lean_client() as client:
            return await client.post(
                f"{server.url}/v1/track?x=1",
                json={"event": "Order Completed", "revenue": 12.5},
                headers={"X-Api-Key": "k-123"},
                auth=("user", "pass"),
            )

    with FakeServer(answer) as server:
        response = run(go())
    assert isinstance(response, httpx.Response)
    assert response.status_code == 201
    assert response.reason_phrase == "Created"
    assert response.http_version == "HTTP/1.1"
    assert response.headers["x-request-id"] == "r-1"
    received = server.requests[0]
    assert response.json() == {"received": len(received.body)}
    assert (received.method, received.path) == ("POST", "/v1/track?x=1")
    assert received.json() == {"event": "Order Completed", "revenue": 12.5}
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-api-key"] == "k-123"
    assert received.headers["authorization"] == "Basic dXNlcjpwYXNz"
    assert received.headers["host"] == f"127.0.0.1:{server.port}"


def test_gzip_response_is_decoded_by_httpx() -> None:
    packed = gzip.compress(b'{"ok": true}')
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)

    async def go() -> httpx.Response:
        async with ScriptedServer(answer_with(head + packed)) as server, lean_client() as client:
            return await client.get(server.url)

    response = run(go())
    assert isinstance(response, httpx.Response)
    assert response.json() == {"ok": True}


# -- keep-alive and framing --------------------------------------------------------------


def test_sequential_requests_share_one_connection() -> None:
    async def go() -> ScriptedServer:
        async with ScriptedServer(answer_with(OK)) as server, lean_client() as client:
            for i in range(5):
                response = await client.post(server.url, content=b"n=%d" % i)
                assert response.text == "ok"
            return server

    server = run(go())
    assert isinstance(server, ScriptedServer)
    assert server.accepted == 1
    assert [e.number for e in server.exchanges] == [1, 2, 3, 4, 5]
    assert [e.body for e in server.exchanges] == [b"n=%d" % i for i in range(5)]


def test_chunked_response_is_joined_and_the_connection_reused() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def go() -> tuple[list[str], int]:
        async with ScriptedServer(answer_with(chunked)) as server, lean_client() as client:
            texts = [(await client.get(server.url)).text for _ in range(2)]
            return texts, server.accepted

    assert run(go()) == (["hello world", "hello world"], 1)


def test_large_bodies_are_read_whole() -> None:
    big = bytes(range(256)) * 1200  # 300 KiB: several reads
    by_length = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    by_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        len(big),
        big,
    )
    answers = iter([by_length, by_chunk])

    async def respond(_exchange: Exchange) -> bytes | None:
        return next(answers)

    async def go() -> list[bytes]:
        async with ScriptedServer(respond) as server, lean_client() as client:
            return [(await client.post(server.url, content=big)).content for _ in range(2)]

    assert run(go()) == [big, big]


def test_body_without_length_runs_to_eof_and_the_connection_is_not_reused() -> None:
    async def go() -> tuple[list[str], int]:
        to_eof = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
        async with ScriptedServer(answer_with(to_eof), close_after_reply=True) as server:
            async with lean_client() as client:
                texts = [(await client.get(server.url)).text for _ in range(2)]
            return texts, server.accepted

    assert run(go()) == (["until the end", "until the end"], 2)


def test_connection_close_is_honoured_even_when_the_server_keeps_it_open() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    async def go() -> int:
        async with ScriptedServer(answer_with(closing)) as server, lean_client() as client:
            for _ in range(3):
                assert (await client.get(server.url)).text == "ok"
            return server.accepted

    assert run(go()) == 3


def test_head_and_204_and_304_have_no_body_and_keep_the_connection() -> None:
    answers = {
        "HEAD": b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
        "DELETE": b"HTTP/1.1 204 No Content\r\n\r\n",
        "GET": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        "POST": OK,
    }

    async def respond(exchange: Exchange) -> bytes | None:
        return answers[exchange.method]

    async def go() -> tuple[list[tuple[int, bytes]], int]:
        async with ScriptedServer(respond) as server, lean_client() as client:
            seen = []
            for method in ("HEAD", "DELETE", "GET", "POST"):
                response = await client.request(method, server.url, timeout=2.0)
                seen.append((response.status_code, response.content))
            return seen, server.accepted

    seen, accepted = run(go())
    assert seen == [(200, b""), (204, b""), (304, b""), (200, b"ok")]
    assert accepted == 1  # each bodiless answer left the connection in step


def test_interim_1xx_responses_are_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK

    async def go() -> httpx.Response:
        async with ScriptedServer(answer_with(early)) as server, lean_client() as client:
            return await client.get(server.url)

    response = run(go())
    assert isinstance(response, httpx.Response)
    assert (response.status_code, response.text) == (200, "ok")


# -- stale connections -------------------------------------------------------------------


def test_after_the_server_closes_an_idle_connection_the_next_request_uses_a_fresh_one() -> None:
    async def go() -> tuple[list[str], int]:
        async with ScriptedServer(answer_with(OK), close_after_reply=True) as server:
            async with lean_client() as client:
                first = (await client.get(server.url)).text
                for _ in range(20):  # let the FIN reach the idle connection's reader
                    await asyncio.sleep(0.005)
                second = (await client.get(server.url)).text
            return [first, second], server.accepted

    texts, accepted = run(go())
    assert texts == ["ok", "ok"]
    assert accepted == 2


def test_a_reused_connection_closed_before_answering_is_retried_once_on_a_fresh_one() -> None:
    async def respond(exchange: Exchange) -> bytes | None:
        # The first connection answers once, then hangs up on the next request, as a
        # server does when its keep-alive timer fires just as the request arrives.
        return CLOSE if (exchange.connection, exchange.number) == (1, 2) else OK

    async def go() -> tuple[list[str], list[tuple[int, int]]]:
        async with ScriptedServer(respond) as server, lean_client() as client:
            texts = [(await client.post(server.url, content=b"x")).text for _ in range(2)]
            return texts, [(e.connection, e.number) for e in server.exchanges]

    texts, exchanges = run(go())
    assert texts == ["ok", "ok"]
    assert exchanges == [(1, 1), (1, 2), (2, 1)]


def test_a_fresh_connection_closed_before_answering_is_not_retried() -> None:
    async def go() -> int:
        async with ScriptedServer(answer_with(CLOSE)) as server, lean_client() as client:
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await client.post(server.url, content=b"x")
            return server.accepted

    assert run(go()) == 1


def test_idle_bytes_nobody_asked_for_retire_the_connection() -> None:
    # Some servers send a 408 on an idle connection before closing it; that answer
    # must never be taken for the next request's.
    async def respond(exchange: Exchange) -> bytes | None:
        if exchange.connection == 1:
            return OK + b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
        return OK

    async def go() -> tuple[list[int], int]:
        async with ScriptedServer(respond) as server, lean_client() as client:
            first = (await client.get(server.url)).status_code
            for _ in range(20):
                await asyncio.sleep(0.005)
            second = (await client.get(server.url)).status_code
            return [first, second], server.accepted

    assert run(go()) == ([200, 200], 2)


# -- timeouts and errors -----------------------------------------------------------------


def test_a_server_that_never_answers_raises_read_timeout() -> None:
    async def go() -> None:
        async with ScriptedServer(never_answer) as server, lean_client() as client:
            await client.post(server.url, content=b"x", timeout=httpx.Timeout(5.0, read=0.2))

    with pytest.raises(httpx.ReadTimeout) as raised:
        run(go())
    assert raised.value.request.method == "POST"


def test_a_body_that_stalls_raises_read_timeout() -> None:
    async def respond(_exchange: Exchange) -> bytes | None:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"

    async def go() -> None:
        async with ScriptedServer(respond) as server, lean_client() as client:
            await client.get(server.url, timeout=httpx.Timeout(5.0, read=0.2))

    with pytest.raises(httpx.ReadTimeout, match="body stalled"):
        run(go())


def test_a_refused_port_raises_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once it is closed

    async def go() -> None:
        async with lean_client() as client:
            await client.get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{port}") as raised:
        run(go())
    assert str(raised.value.request.url) == f"http://127.0.0.1:{port}/"


def test_a_server_that_reads_nothing_raises_write_timeout() -> None:
    async def go() -> None:
        async def deaf(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            await asyncio.Event().wait()

        server = await asyncio.start_server(deaf, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        body = b"x" * (64 * 1024 * 1024)  # more than both sockets' buffers hold
        try:
            async with lean_client() as client:
                await client.post(url, content=body, timeout=httpx.Timeout(5.0, write=0.3))
        finally:
            server.close()

    with pytest.raises(httpx.WriteTimeout):
        run(go())


def test_a_server_that_never_accepts_raises_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # a backlog of one, never accepted
        port = listener.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port))  # takes the one place

        async def go() -> None:
            async with lean_client() as client:
                await client.get(
                    f"http://127.0.0.1:{port}/", timeout=httpx.Timeout(5.0, connect=0.3)
                )

        try:
            with pytest.raises(httpx.ConnectTimeout):
                run(go())
        finally:
            filler.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
        (b"ICY 200 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "invalid"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before the end"),
    ],
)
def test_malformed_responses_raise_remote_protocol_error(answer: bytes, message: str) -> None:
    async def go() -> None:
        server = ScriptedServer(answer_with(answer), close_after_reply=True)
        async with server, lean_client() as client:
            await client.get(server.url)

    with pytest.raises(httpx.RemoteProtocolError, match=message):
        run(go())


def test_a_body_over_the_cap_raises_a_clear_error() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"x" * 64 + b"\r\n"

    async def go(answer: bytes) -> None:
        server = ScriptedServer(answer_with(answer))
        async with server, lean_client(max_response_body=50) as client:
            await client.get(server.url)

    for answer in (big, chunked):
        with pytest.raises(ResponseTooLarge, match="larger than 50 bytes"):
            run(go(answer))
    assert issubclass(ResponseTooLarge, httpx.TransportError)  # Destination.send retries it


def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    async def go() -> int:
        async with ScriptedServer(answer_with(OK)) as server, lean_client() as client:
            with pytest.raises(httpx.LocalProtocolError, match="invalid header"):
                await client.get(server.url, headers={"X-Name": "a\r\nX-Injected: 1"})
            return len(server.exchanges)

    assert run(go()) == 0


def test_an_unsupported_scheme_is_refused() -> None:
    async def go() -> None:
        transport = LeanTransport()
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/"))

    with pytest.raises(httpx.UnsupportedProtocol):
        run(go())


# -- limits, cancellation, closing -------------------------------------------------------


def test_connections_per_origin_are_capped_and_waiters_get_the_freed_ones() -> None:
    async def slow(_exchange: Exchange) -> bytes | None:
        await asyncio.sleep(0.02)
        return OK

    async def go() -> tuple[int, int, list[str]]:
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        async with ScriptedServer(slow) as server, lean_client(limits=limits) as client:
            responses = await asyncio.gather(*(client.get(server.url) for _ in range(8)))
            return server.accepted, server.most_in_flight, [r.text for r in responses]

    accepted, most_in_flight, texts = run(go())
    assert texts == ["ok"] * 8
    assert (accepted, most_in_flight) == (2, 2)


def test_waiting_longer_than_the_pool_timeout_raises_pool_timeout() -> None:
    async def go() -> None:
        limits = httpx.Limits(max_connections=1)
        async with ScriptedServer(never_answer) as server, lean_client(limits=limits) as client:
            hanging = asyncio.create_task(client.get(server.url))
            while not server.exchanges:
                await asyncio.sleep(0.005)
            try:
                await client.get(server.url, timeout=httpx.Timeout(5.0, pool=0.1))
            finally:
                hanging.cancel()

    with pytest.raises(httpx.PoolTimeout):
        run(go())


def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool() -> None:
    async def respond(exchange: Exchange) -> bytes | None:
        if exchange.connection == 1:
            await asyncio.Event().wait()  # the first connection never answers
        return OK

    async def go() -> tuple[str, int]:
        async with ScriptedServer(respond) as server, lean_client() as client:
            lane = asyncio.create_task(client.get(server.url))
            while not server.exchanges:
                await asyncio.sleep(0.005)
            lane.cancel()
            with pytest.raises(asyncio.CancelledError):
                await lane
            response = await client.get(server.url, timeout=2.0)
            return response.text, server.accepted

    assert run(go()) == ("ok", 2)


def test_aclose_closes_idle_connections() -> None:
    async def go() -> bool:
        async with ScriptedServer(answer_with(OK)) as server:
            client = lean_client()
            await client.get(server.url)
            assert not server.eof_seen.is_set()
            await client.aclose()
            await asyncio.wait_for(server.eof_seen.wait(), 5.0)
            return server.eof_seen.is_set()

    assert run(go()) is True


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def _tls_server(cert: Path, key: Path) -> asyncio.Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(OK)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)


def test_https_round_trip_verifies_the_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def go() -> tuple[list[str], type[BaseException] | None]:
        server = await _tls_server(cert, key)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        trusting = ssl.create_default_context(cafile=str(cert))
        async with lean_client(ssl_context=trusting) as client:
            texts = [(await client.get(url)).text for _ in range(2)]
        refused: type[BaseException] | None = None
        async with lean_client() as client:  # httpx's certifi bundle: an unknown issuer
            try:
                await client.get(url)
            except httpx.ConnectError as exc:
                refused = type(exc)
        server.close()
        return texts, refused

    assert run(go()) == (["ok", "ok"], httpx.ConnectError)


# -- default_client ------------------------------------------------------------------------

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_default_client_uses_the_lean_transport(no_proxy_env: pytest.MonkeyPatch) -> None:
    client = default_client()
    assert isinstance(client._transport, LeanTransport)
    run(client.aclose())


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_default_client_keeps_httpx_transport_behind_a_proxy(
    no_proxy_env: pytest.MonkeyPatch, variable: str
) -> None:
    no_proxy_env.setenv(variable, "http://127.0.0.1:3128")
    client = default_client()
    assert isinstance(client._transport, httpx.AsyncHTTPTransport)
    run(client.aclose())


@pytest.mark.parametrize("make_client", [default_client, httpx.AsyncClient])
def test_a_response_read_whole_is_freed_without_the_cycle_collector(
    no_proxy_env: pytest.MonkeyPatch, make_client: Callable[[], httpx.AsyncClient]
) -> None:
    # httpx ties each response's stream back to the response: a cycle that holds the
    # request body until a full collection. default_client cuts it; plain httpx keeps it.
    async def send(url: str) -> weakref.ref[httpx.Response]:
        async with make_client() as client:
            response = await client.post(url, content=b"x" * 30_000)
            assert (response.status_code, response.json()) == (200, {"ok": True})
            return weakref.ref(response)

    with FakeServer() as server:
        gc.disable()
        try:
            freed = run(send(server.url))() is None
        finally:
            gc.enable()
    assert freed is (make_client is default_client)


def test_the_delivery_client_sends_no_cookie_a_destination_set(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    # A vendor's load balancer may set a cookie; deliveries never carry it onwards.
    set_cookie = Reply(200, {"ok": True}, headers={"Set-Cookie": "lb=node-7; Path=/"})

    async def send_twice(url: str) -> None:
        async with default_client() as client:
            for _ in range(2):
                response = await client.post(url, content=b"{}")
                assert response.headers["set-cookie"] == "lb=node-7; Path=/"
            assert not client.cookies

    with FakeServer(lambda _request: set_cookie) as server:
        run(send_twice(server.url))
        assert [r.headers.get("cookie") for r in server.requests] == [None, None]


def test_delivery_client_keeps_no_cookies_through_httpx_internals() -> None:
    # DeliveryClient sets httpx's private `_cookies`: this fails if httpx renames it.
    def answer(request: httpx.Request) -> httpx.Response:
        assert "cookie" not in request.headers
        return httpx.Response(200, headers={"set-cookie": "session=abc; Path=/"})

    async def twice() -> httpx.Cookies:
        async with DeliveryClient(transport=httpx.MockTransport(answer)) as client:
            await client.post("http://127.0.0.1:9/a", content=b"{}")
            await client.post("http://127.0.0.1:9/a", content=b"{}")
            return client.cookies

    cookies = asyncio.run(twice())
    assert type(cookies).__name__ == "_NoCookies"
    assert len(cookies.jar) == 0
