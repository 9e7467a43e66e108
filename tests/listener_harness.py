"""`streamctl run` for tests: a project folder in tmp_path, the server on 127.0.0.1.

project_dir = write_project(tmp_path, sources=WEB_AND_HOOK)
with ListenerThread(project_dir) as listener:        # serve() on its own loop thread
    httpx.post(listener.url + "/v1/track", ...)
    listener.queued()                                 # [(source, event), ...] in SQLite

with ListenerProcess(project_dir) as proc:            # `streamctl run` as a subprocess
    proc.url, proc.kill()                             # SIGKILL, for crash tests
"""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from streamctl.config.loader import load_project
from streamctl.server import Running, ServeOptions, serve
from streamctl.sources.group_commit import CommitLimits
from streamctl.sources.http_protocol import ConnectionLimits

WEB_KEY = "test-web-key-1"
MOBILE_KEY = "test-mobile-key-2"
HOOK_SECRET = "whsec-test-secret-value"

BASE_CONFIG = f"""\
version: 1
store: .streamctl/state.db
listen: {{ host: 127.0.0.1, port: 0 }}
sources:
  web:
    type: http
    write_keys: ["{WEB_KEY}"]
  mobile:
    type: http
    write_keys: ["{MOBILE_KEY}"]
  stripe:
    type: webhook
    secret: "{HOOK_SECRET}"
    signature_header: Stripe-Signature
    event_name: {{ field: type }}
  plain:
    type: webhook
destinations:
  local-file:
    type: file
    config: {{ path: out/events.ndjson }}
"""

FILE_SYNC = """\
name: web-to-file
source: web
destination: local-file
event_types:
  - type: custom
    mappings:
      required:
        message_id: { field: messageId }
        event: { field: event }
        received_at: { field: receivedAt }
"""


def write_project(
    root: Path, config: str = BASE_CONFIG, syncs: dict[str, str] | None = None
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "streamctl.yaml").write_text(config)
    (root / "syncs").mkdir(exist_ok=True)
    for name, text in (syncs or {}).items():
        (root / "syncs" / f"{name}.yaml").write_text(text)
    return root


def queued_events(store_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every event the listener committed, read from SQLite on a connection of our own.

    The ingest queue is emptied as the pipeline processes events, so this reads the
    `events` table the pipeline records into as well, deduplicated by messageId.
    """
    conn = sqlite3.connect(store_path)
    try:
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for source, text in conn.execute("SELECT source, event FROM queue ORDER BY id"):
            for event in queue_row_events(text):
                seen[(source, event["messageId"])] = event
        for source, event in _recorded_events(conn):
            seen.setdefault((source, event["messageId"]), event)
        return [(source, event) for (source, _), event in seen.items()]
    finally:
        conn.close()


def queue_row_events(text: str) -> list[dict[str, Any]]:
    """The events of one queue row: one append's JSON array (or one event, before schema 4)."""
    value = orjson.loads(text)
    return value if isinstance(value, list) else [value]


def _recorded_events(conn: sqlite3.Connection) -> list[tuple[str, dict[str, Any]]]:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if not {"source", "payload"} <= columns:
        return []
    return [(s, orjson.loads(e)) for s, e in conn.execute("SELECT source, payload FROM events")]


class ListenerThread:
    """`serve()` on its own event loop in a daemon thread, stopped gracefully on exit."""

    def __init__(
        self,
        project_dir: Path,
        *,
        limits: CommitLimits | None = None,
        watch: bool = False,
        runtime_factory: Any = None,
        connections: ConnectionLimits | None = None,
    ) -> None:
        self.project = load_project(project_dir)
        self.options = ServeOptions(
            port=0,
            watch=watch,
            limits=limits or CommitLimits(),
            connections=connections or ConnectionLimits(),
        )
        self.runtime_factory = runtime_factory
        self.err = io.StringIO()
        self.running: Running | None = None
        self.failure: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    @property
    def store_path(self) -> Path:
        return self.project.store_file

    def queued(self) -> list[tuple[str, dict[str, Any]]]:
        return queued_events(self.store_path)

    def _main(self) -> None:
        import asyncio

        def started(running: Running) -> None:
            self.running = running
            self._started.set()

        try:
            asyncio.run(
                serve(
                    self.project,
                    self.options,
                    runtime_factory=self.runtime_factory,
                    err=self.err,
                    on_started=started,
                )
            )
        except BaseException as exc:
            self.failure = exc
        finally:
            self._started.set()

    def __enter__(self) -> ListenerThread:
        self._thread.start()
        self._started.wait(20)
        if self.running is None:
            raise RuntimeError(f"listener did not start: {self.failure!r}\n{self.err.getvalue()}")
        return self

    def stop(self) -> None:
        if self.running is not None and self._thread.is_alive():
            self.running.stop()
            self._thread.join(30)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ListenerProcess:
    """`streamctl run --project DIR --port 0` as a child process."""

    def __init__(self, project_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.project_dir = project_dir
        self.env = env or {}
        self.args = [sys.executable, "-m", "streamctl", "run", "--project", str(project_dir)]
        self.args += ["--port", "0", *extra]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stderr_lines: list[str] = []

    def __enter__(self) -> ListenerProcess:
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        threading.Thread(target=self._read_stderr, daemon=True).start()
        deadline = time.monotonic() + 30
        while not self.url:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("streamctl run did not start:\n" + "".join(self.stderr_lines))
            time.sleep(0.02)
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        """Stop it with `sig` (SIGINT: as Ctrl-C would); its exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(30)

    def __exit__(self, *exc: object) -> None:
        self.kill()
