"""The frames exchanged with a function worker: a 4-byte big-endian length, then orjson.

    parent -> worker   {"settings": {...}}            once, at start
    worker -> parent   {"ready": true} | {"error": "...", "traceback": "..."}
    parent -> worker   {"events": [...]}              one per batch
    worker -> parent   {"events": [...]} | {"error": "...", "traceback": "..."}

Reads and writes take a deadline (a `time.monotonic()` value) so the parent can give up
on a worker that hangs; the worker passes `None` (wait forever).
"""

from __future__ import annotations

import os
import select
import struct
import time
from typing import Any

import orjson

HEADER = struct.Struct(">I")
CHUNK = 1 << 16


class WorkerTimeout(Exception):
    """The deadline passed before the frame was read or written."""


class WorkerGone(Exception):
    """The other end closed its pipe: the worker exited (or the parent did)."""


def write_frame(fd: int, message: Any, deadline: float | None) -> None:
    data = orjson.dumps(message)
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        _wait(fd, deadline, writing=True)
        try:
            written = os.write(fd, view[:CHUNK])
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise WorkerGone from None
        view = view[written:]


def read_frame(fd: int, deadline: float | None) -> Any:
    (length,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    return orjson.loads(_read_exact(fd, length, deadline))


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        _wait(fd, deadline, writing=False)
        try:
            chunk = os.read(fd, size - len(buffer))
        except BlockingIOError:
            continue
        if not chunk:
            raise WorkerGone
        buffer += chunk
    return bytes(buffer)


def _wait(fd: int, deadline: float | None, *, writing: bool) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise WorkerTimeout
    if writing:
        ready = select.select([], [fd], [], remaining)[1]
    else:
        ready = select.select([fd], [], [], remaining)[0]
    if not ready:
        raise WorkerTimeout
