"""The console's ASGI app: pages under `/console`, their guard, the debugger's live stream.

    console = Console(ConsoleSource(project=lambda: project, live=True),
                      ConsoleAccess.for_host("127.0.0.1"))
    app = console.mount(ingest_app)       # /console/... here, everything else to ingest_app

Pages are rendered on the server (Jinja2) from streamctl.console.views; htmx swaps
the live parts (the Overview every 15 s, the Errors filters, retry), uPlot draws the
charts, the debugger reads server-sent events. Nothing is fetched off the machine:
the scripts are the package's static files.

Access (docs/console.md):

- with a console token (`console.token` in streamctl.yaml, or STREAMCTL_CONSOLE_TOKEN)
  every request must carry it: `?token=` once (it becomes an HttpOnly, SameSite=Strict
  cookie), the cookie, or `Authorization: Bearer`;
- without one, only loopback clients are served, and `streamctl console` refuses to
  bind beyond loopback;
- actions (retry) are POSTs carrying the page's CSRF token (header `X-CSRF-Token` or
  form field `csrf`) from the same origin; anything else is refused with 403.

Store reads run in worker threads on the console's own connection (SQLite) or pool
(PostgreSQL), so a slow page never holds the listener's event loop or the writer's
lock. The console speaks to the store through `ConsoleStore` only (streamctl.store.base):
the same pages on both backends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import jinja2
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from streamctl.config.secrets import redact
from streamctl.console import views
from streamctl.core.errors import StoreError
from streamctl.core.model import Project
from streamctl.core.units import parse_moment
from streamctl.delivery.retry import requeue, retry_candidates
from streamctl.monitoring.feed import FEED, TailFilter
from streamctl.store.alert_state import AlertStateStore
from streamctl.store.backend import open_alert_state, open_console_store
from streamctl.store.base import ConsoleStore
from streamctl.store.queries import ErrorFilter

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "streamctl_console"
TOKEN_VARIABLE = "STREAMCTL_CONSOLE_TOKEN"
REFRESH_EVERY = 10.0  # seconds: a page rolls up what settled since, at most this often
KEEPALIVE = 15.0  # seconds between comments on a quiet event stream
POLL_EVERY = 1.0  # seconds between store reads of a debugger without a live feed
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

T = TypeVar("T")
log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleAccess:
    """Who may use the console: the token's holders, or loopback clients."""

    token: str | None
    bound_beyond_loopback: bool
    csrf_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @classmethod
    def for_host(cls, host: str, token: str | None = None) -> ConsoleAccess:
        return cls(token or None, not is_loopback(host))

    @classmethod
    def for_project(cls, project: Project, host: str) -> ConsoleAccess:
        """`console.token` of streamctl.yaml, else the STREAMCTL_CONSOLE_TOKEN variable."""
        return cls.for_host(host, project.console_token or os.environ.get(TOKEN_VARIABLE))

    @property
    def csrf_token(self) -> str:
        return hmac.new(self.csrf_secret, b"console-actions", hashlib.sha256).hexdigest()

    def refusal(self, request: Request) -> Response | None:
        """None when the request may go on; otherwise the answer it gets."""
        if self.token is not None:
            presented = (
                request.cookies.get(TOKEN_COOKIE)
                or _bearer(request.headers.get("authorization", ""))
                or request.query_params.get("token")
            )
            if presented is None or not hmac.compare_digest(presented, self.token):
                return _refused(401, "a console token is required: open /console?token=TOKEN")
        elif self.bound_beyond_loopback:
            client = request.client.host if request.client else ""
            if not is_loopback(client):
                return _refused(
                    403, f"the console answers loopback clients only: set {TOKEN_VARIABLE}"
                )
        if request.method == "POST" and not self._same_origin_with_csrf(request):
            return _refused(403, "refused: the action lacks this console's CSRF token")
        return None

    def _same_origin_with_csrf(self, request: Request) -> bool:
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            return False
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        presented = request.headers.get("x-csrf-token", "")
        return hmac.compare_digest(presented, self.csrf_token)


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _refused(status: int, message: str) -> Response:
    body = orjson.dumps({"success": False, "code": "forbidden", "message": message})
    return Response(body, status, media_type="application/json", headers=SECURITY_HEADERS)


@dataclass
class ConsoleSource:
    """Where the console reads from: the running project and its store (`store:`,
    SQLite or PostgreSQL), opened on first use.

    `live`: the process feeds streamctl.monitoring.feed (under `streamctl run`), so the
    debugger follows it; otherwise the debugger polls the store."""

    project: Callable[[], Project]
    live: bool
    _store: ConsoleStore | None = None
    _alert_state: AlertStateStore | None = None
    # Pages open these from worker threads: two first requests must not open two pools.
    _opening: threading.Lock = field(default_factory=threading.Lock)

    @property
    def store(self) -> ConsoleStore:
        with self._opening:
            if self._store is None:
                self._store = open_console_store(self.project())
            return self._store

    @property
    def alert_state(self) -> AlertStateStore:
        store = self.store  # PostgreSQL: the alert state reads through its pool
        with self._opening:
            if self._alert_state is None:
                self._alert_state = open_alert_state(self.project(), through=store)
            return self._alert_state

    def close(self) -> None:
        with self._opening:
            if self._alert_state is not None:
                self._alert_state.close()
                self._alert_state = None
            if self._store is not None:
                self._store.close()
                self._store = None


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("streamctl.console", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    )
    env.filters["pretty"] = lambda value: orjson.dumps(
        value, option=orjson.OPT_INDENT_2, default=str
    ).decode()
    env.globals["prefix"] = PREFIX
    return env


class Console:
    def __init__(self, source: ConsoleSource, access: ConsoleAccess) -> None:
        self.source = source
        self.access = access
        self.env = templates()
        self._refreshed = 0.0
        self._refresh_lock = asyncio.Lock()
        self.app = Starlette(
            routes=[
                Route(PREFIX, self.to_overview),
                Mount(
                    PREFIX,
                    routes=[
                        Route("/", self.overview),
                        Route("/syncs", self.syncs),
                        Route("/errors", self.errors),
                        Route("/errors/rows", self.error_rows),
                        Route("/errors/retry", self.retry_matching, methods=["POST"]),
                        Route("/errors/{error_id}", self.error),
                        Route("/errors/{error_id}/retry", self.retry_one, methods=["POST"]),
                        Route("/debugger", self.debugger),
                        Route("/debugger/stream", self.stream),
                        Route("/debugger/events/{message_id:path}", self.event),
                        Route("/alerts", self.alerts),
                        Mount("/static", StaticFiles(directory=STATIC), name="static"),
                    ],
                ),
            ]
        )

    def mount(self, other: ASGIApp) -> ASGIApp:
        """An app answering `/console...` here and everything else with `other`."""

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "") if scope["type"] == "http" else ""
            if path == PREFIX or path.startswith(PREFIX + "/"):
                await self(scope, receive, send)
            else:
                await other(scope, receive, send)

        return dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            refusal = self.access.refusal(request)
            if refusal is not None:
                return await refusal(scope, receive, send)
            if self.access.token is not None and "token" in request.query_params:
                return await self._remember_token(request)(scope, receive, send)
        await self.app(scope, receive, send)

    def _remember_token(self, request: Request) -> Response:
        """Trade `?token=` for a cookie, and drop it from the address bar (and history)."""
        query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        target = request.url.path + (f"?{query}" if query else "")
        response = RedirectResponse(target, 303, headers=SECURITY_HEADERS)
        response.set_cookie(
            TOKEN_COOKIE, self.access.token or "", httponly=True, samesite="strict", path=PREFIX
        )
        return response

    # -- helpers ------------------------------------------------------------------------------

    @property
    def project(self) -> Project:
        return self.source.project()

    async def _read(self, read: Callable[[ConsoleStore], T]) -> T:
        store = self.source.store
        return await asyncio.to_thread(read, store)

    async def roll_up(self, *, force: bool = False) -> None:
        """Roll up what settled (streamctl.store.rollups), at most every REFRESH_EVERY s."""
        async with self._refresh_lock:
            if not force and time.monotonic() - self._refreshed < REFRESH_EVERY:
                return
            self._refreshed = time.monotonic()
            try:
                await self._read(lambda store: store.refresh_rollups())
            except (StoreError, sqlite3.Error) as exc:  # pages still show what is rolled up
                log.warning("console: cannot roll up the store: %s", exc)

    def page(self, template: str, request: Request, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            csrf=self.access.csrf_token,
            path=request.url.path,
            live=self.source.live,
            project_name=self.project.root.name,
            **context,
        )
        return HTMLResponse(redact(html, self.project.secrets), headers=SECURITY_HEADERS)

    # -- pages ------------------------------------------------------------------------------------

    async def to_overview(self, request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", headers=SECURITY_HEADERS)

    async def overview(self, request: Request) -> Response:
        window = views.WINDOWS.get(
            request.query_params.get("window", "hour"), views.WINDOWS["hour"]
        )
        sync = request.query_params.get("sync") or None
        await self.roll_up()
        data = await self._read(lambda store: views.overview(store, self.project, window, sync))
        return self.page("overview.html", request, data=data, windows=list(views.WINDOWS))

    async def syncs(self, request: Request) -> Response:
        await self.roll_up()
        flows = await self._read(lambda store: views.syncs(store, self.project))
        return self.page("syncs.html", request, flows=flows)

    async def errors(self, request: Request) -> Response:
        filters, form = _error_filter(request)
        rows = await self._read(lambda store: views.errors(store, self.project, filters))
        return self.page(
            "errors.html", request, rows=rows, form=form, syncs=[s.name for s in self.project.syncs]
        )

    async def error_rows(self, request: Request) -> Response:
        filters, form = _error_filter(request)
        rows = await self._read(lambda store: views.errors(store, self.project, filters))
        return self.page("_error_rows.html", request, rows=rows, form=form)

    async def error(self, request: Request) -> Response:
        error_id = request.path_params["error_id"]
        detail = await self._read(lambda store: views.delivery(store, self.project, error_id))
        if detail is None:
            return self.page("missing.html", request, what=f"error {error_id}")
        return self.page("delivery.html", request, d=detail)

    async def retry_one(self, request: Request) -> Response:
        try:
            delivery_id = int(request.path_params["error_id"])
        except ValueError:
            return self.page("_retried.html", request, result=None, note="not a delivery id")
        return await self._retry(request, ErrorFilter(), [delivery_id])

    async def retry_matching(self, request: Request) -> Response:
        filters, _ = _error_filter(request)
        return await self._retry(request, ErrorFilter(filters.syncs, since=filters.since), None)

    async def _retry(
        self, request: Request, filters: ErrorFilter, ids: list[int] | None
    ) -> Response:
        def requeue_chosen(store: ConsoleStore) -> Any:
            return requeue(store, retry_candidates(store, filters, ids))

        result = await self._read(requeue_chosen)
        note = (
            "the running instance sends them within a second"
            if self.source.live
            else "the streamctl run that serves this store sends them within a second"
        )
        return self.page("_retried.html", request, result=result, note=note)

    async def debugger(self, request: Request) -> Response:
        project = self.project
        return self.page(
            "debugger.html",
            request,
            sources=sorted(project.sources),
            syncs=[s.name for s in project.syncs],
        )

    async def event(self, request: Request) -> Response:
        message_id = request.path_params["message_id"]
        project = self.project
        story = await self._read(lambda store: views.event_story(store, project, message_id))
        previews = []
        if story:  # the preview runs functions and builds requests: off the event loop
            first = story[0]
            previews = await asyncio.to_thread(
                views.would_send, project, first["source"], first["payload"]
            )
        return self.page(
            "_event.html", request, story=story, message_id=message_id, previews=previews
        )

    async def alerts(self, request: Request) -> Response:
        data = await asyncio.to_thread(lambda: views.alerts(self.project, self.source.alert_state))
        return self.page("alerts.html", request, data=data)

    # -- the debugger's stream --------------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        records = self._live() if self.source.live else self._polled()
        secrets_now = self.project.secrets

        async def frames() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            async for record in records:
                if record is None:
                    yield b": keepalive\n\n"
                    continue
                text = redact(orjson.dumps(record, default=str).decode(), secrets_now)
                yield f"data: {text}\n\n".encode()

        headers = {**SECURITY_HEADERS, "x-accel-buffering": "no"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)

    async def _live(self) -> AsyncIterator[dict[str, Any] | None]:
        """The live feed; None now and then while it is quiet (a keep-alive)."""
        subscription = FEED.subscribe(TailFilter())
        try:
            while True:
                try:
                    record = await asyncio.wait_for(subscription.next(), KEEPALIVE)
                except TimeoutError:
                    yield None
                    continue
                if record is None:
                    return
                yield record
        finally:
            subscription.close()

    async def _polled(self) -> AsyncIterator[dict[str, Any] | None]:
        """Events as the store records them (another node ingests), polled by id."""
        after = await self._read(lambda store: store.latest_event_id())
        quiet = 0.0
        while True:
            found = await self._read(_events_after(after))
            for row in found:
                after = row["id"]
                yield {"kind": "event", "at": row["at"], "source": row["source"],
                       "message_id": row["message_id"], "event": row["event"]}  # fmt: skip
                for outcome in row["outcomes"]:
                    yield {"kind": "outcome", "message_id": row["message_id"], **outcome}
            quiet = 0.0 if found else quiet + POLL_EVERY
            if quiet >= KEEPALIVE:
                quiet = 0.0
                yield None
            await asyncio.sleep(POLL_EVERY)


def _events_after(after_id: int) -> Callable[[ConsoleStore], list[dict[str, Any]]]:
    return lambda store: store.events_after(after_id)


def _error_filter(request: Request) -> tuple[ErrorFilter, dict[str, str]]:
    """The Errors page's filters from its query string; bad values are left out."""
    query = request.query_params
    form = {
        key: query.get(key, "") for key in ("sync", "status", "stage", "code", "since", "until")
    }
    codes = tuple(int(c) for c in form["code"].replace(",", " ").split() if c.isdigit())
    filters = ErrorFilter(
        syncs=(form["sync"],) if form["sync"] else (),
        statuses=(form["status"],) if form["status"] else (),
        stages=(form["stage"],) if form["stage"] else (),
        since=_moment(form["since"]),
        status_codes=codes,
        until=_moment(form["until"]),
    )
    return filters, form


def _moment(text: str) -> float | None:
    """A `since`/`until` field: a duration back from now (1h, 7d) or an ISO time."""
    try:
        return parse_moment(text) if text else None
    except ValueError:
        return None


async def keep_rolling_up(console: Console, every: float = 60.0) -> None:
    """Roll up in the background, so a page rarely has much to catch up on."""
    while True:
        await console.roll_up(force=True)
        await asyncio.sleep(every)
