"""Event functions: `transform_events(events, settings) -> events` (SPEC §2 "functions/NAME.py").

    problem = check_function(ref)          # None, or why the file cannot serve (validate)
    events = run_function(ref, events)     # one batch; raises FunctionError

Each function file runs in a persistent worker process of its own (`worker.py`),
started on first use and reused for every batch: a batch costs one round trip over
a pipe (orjson both ways), not a process start. A batch that runs past its timeout
(`FunctionRef.timeout`, 5 s by default) gets its worker killed, so a function stuck
in `while True` or in a blocking call really stops; the next batch starts a fresh
worker. An edited file is picked up on the next batch (its modification time is
checked). `close_functions()` stops every worker; it also runs at interpreter exit.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from streamctl.core.errors import FunctionError
from streamctl.core.events import CALL_TYPES, Event
from streamctl.core.model import FunctionRef
from streamctl.functions.protocol import WorkerGone, WorkerTimeout, read_frame, write_frame

ENTRY_POINT = "transform_events"
STARTUP_TIMEOUT = 30.0  # seconds to start Python and import the function file
STACK_DUMP_WAIT = 0.2  # seconds to let a timed-out worker write its stack

_CALL_TYPES = frozenset(CALL_TYPES)


def check_function(ref: FunctionRef) -> str | None:
    """Why the file cannot serve as a function (missing, syntax error, no transform_events), or None.

    A static check: the file is parsed, never run, so `validate` has no side effects.
    """
    path = ref.path
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{display_path(path)}: file not found"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{display_path(path)}: cannot be read: {exc}"
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        return f"{display_path(path)}:{exc.lineno or 1}:{exc.offset or 1}: syntax error: {exc.msg}"
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name == ENTRY_POINT:
            return f"{display_path(path)}:{node.lineno}: {ENTRY_POINT} must be a plain def, not async def"
        if isinstance(node, ast.FunctionDef) and node.name == ENTRY_POINT:
            return None
        if _binds_name(node, ENTRY_POINT):
            return None  # assigned or imported: trust it, the worker checks it is callable
    return f"{display_path(path)}: defines no function {ENTRY_POINT}(events, settings)"


def run_function(ref: FunctionRef, events: list[Event]) -> list[Event]:
    """Run the function on one batch; raises FunctionError (message + traceback).

    The result is checked: a list of objects, each with a call `type` and a `messageId`.
    """
    if not events:
        return []
    output = _worker_for(ref).run(events, ref.timeout)
    return _checked_output(ref, output)


def close_functions() -> None:
    """Stop every function worker (tests, `run --watch` reloads, interpreter exit)."""
    with _workers_lock:
        workers = list(_workers.values())
        _workers.clear()
    for worker in workers:
        worker.stop()


def display_path(path: Path) -> str:
    """`functions/enrich.py` rather than an absolute path, for messages."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


class FunctionWorker:
    """One worker process for one function file and its settings."""

    def __init__(self, path: Path, settings: Any) -> None:
        self.path = path
        self.settings = settings
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.mtime_ns = -1
        self._dump = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed at once, kept by name)
            prefix="streamctl-fn-", suffix=".txt", delete=False
        )
        self._dump.close()

    def run(self, events: list[Event], timeout: float) -> Any:
        with self.lock:
            self._ensure_started()
            process = self.process
            assert process is not None and process.stdin is not None and process.stdout is not None
            deadline = time.monotonic() + timeout
            try:
                write_frame(process.stdin.fileno(), {"events": events}, deadline)
                reply = read_frame(process.stdout.fileno(), deadline)
            except WorkerTimeout:
                stack = self._stack_then_kill()
                msg = (
                    f"function {display_path(self.path)} timed out after {timeout:g} s "
                    f"on a batch of {len(events)} events; its worker was stopped"
                )
                raise FunctionError(msg, stack) from None
            except WorkerGone:
                code = self._reap()
                msg = (
                    f"function {display_path(self.path)} exited (code {code}) while running a batch"
                )
                raise FunctionError(msg) from None
            except TypeError as exc:  # orjson: an event we were given is not JSON
                msg = f"function {display_path(self.path)}: the batch cannot be serialised: {exc}"
                raise FunctionError(msg) from None
        if "error" in reply:
            msg = f"function {display_path(self.path)} raised {reply['error']}"
            raise FunctionError(msg, reply.get("traceback", ""))
        return reply["events"]

    def _ensure_started(self) -> None:
        mtime_ns = _mtime_ns(self.path)
        if self.process is not None and self.process.poll() is None and mtime_ns == self.mtime_ns:
            return
        self._kill()
        self.mtime_ns = mtime_ns
        process = subprocess.Popen(  # our own interpreter running our own module
            [sys.executable, "-m", "streamctl.functions.worker", str(self.path), self._dump.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=self.path.parent.parent if self.path.parent.parent.is_dir() else None,
            env=_worker_environment(),
        )
        assert process.stdin is not None and process.stdout is not None
        os.set_blocking(process.stdin.fileno(), False)
        self.process = process
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            write_frame(process.stdin.fileno(), {"settings": self.settings}, deadline)
            reply = read_frame(process.stdout.fileno(), deadline)
        except (WorkerTimeout, WorkerGone):
            self._kill()
            msg = f"function {display_path(self.path)} did not start within {STARTUP_TIMEOUT:g} s"
            raise FunctionError(msg) from None
        if "error" in reply:
            self._kill()
            raise FunctionError(f"function {reply['error']}", reply.get("traceback", ""))

    def _stack_then_kill(self) -> str:
        """Ask the stuck worker where it is (faulthandler on SIGUSR1), then kill it."""
        process = self.process
        stack = ""
        if process is not None and process.poll() is None and hasattr(signal, "SIGUSR1"):
            dump = Path(self._dump.name)
            dump.write_text("")
            process.send_signal(signal.SIGUSR1)
            until = time.monotonic() + STACK_DUMP_WAIT
            while time.monotonic() < until and not dump.stat().st_size:
                time.sleep(0.01)
            stack = dump.read_text(errors="replace")
        self._kill()
        return stack

    def _reap(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        try:
            code = process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        _close_pipes(process)
        return code

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        _close_pipes(process)

    def stop(self) -> None:
        with self.lock:
            self._kill()
        Path(self._dump.name).unlink(missing_ok=True)


_workers: dict[tuple[str, bytes], FunctionWorker] = {}
_workers_lock = threading.Lock()


def _worker_for(ref: FunctionRef) -> FunctionWorker:
    settings = dict(ref.settings)
    key = (str(ref.path), orjson.dumps(settings, option=orjson.OPT_SORT_KEYS))
    worker = _workers.get(key)
    if worker is None:
        with _workers_lock:
            worker = _workers.get(key)
            if worker is None:
                worker = _workers[key] = FunctionWorker(ref.path, settings)
    return worker


def _checked_output(ref: FunctionRef, output: Any) -> list[Event]:
    name = display_path(ref.path)
    if not isinstance(output, list):
        msg = f"function {name} returned {_kind(output)}, not a list of events"
        raise FunctionError(msg)
    for index, event in enumerate(output):
        if not isinstance(event, dict):
            msg = f"function {name}: output item {index} is {_kind(event)}, not an event object"
            raise FunctionError(msg)
        if event.get("type") not in _CALL_TYPES:
            msg = f"function {name}: output event {index} has type {event.get('type')!r} (one of {', '.join(CALL_TYPES)})"
            raise FunctionError(msg)
        message_id = event.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            msg = f"function {name}: output event {index} has no messageId"
            raise FunctionError(msg)
    return output


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _binds_name(node: ast.stmt, name: str) -> bool:
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    if isinstance(node, ast.ImportFrom | ast.Import):
        return any((alias.asname or alias.name) == name for alias in node.names)
    return False


def _worker_environment() -> dict[str, str]:
    """Our environment, with streamctl importable even when it runs from a source checkout."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


atexit.register(close_functions)
