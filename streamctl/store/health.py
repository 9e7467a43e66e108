"""Whether the store's writes succeed: one answer for `/readyz`, the log and the processors.

    health = store.health                 # every Store has one; every transaction reports
    health.failure                        # None, or "disk full: database or disk is full"
    health.on_change = print              # told once when writes start failing, once when back

A full disk (or a read-only file, an I/O error) makes every write fail until someone
frees space; nothing inside streamctl can fix it, so the point is to say so, refuse
work honestly (ingest answers 503, `/readyz` too) and carry on by itself once writes
succeed. The store reports every transaction's outcome here, so no caller has to
decide what counts as a store failure. The message is said once per change, not once
per failed write: a listener refusing thousands of requests a second would otherwise
flood its own log (and that log may be on the full disk).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# SQLite's primary result codes (sqlite_errorname) in words a person acts on.
CAUSES = {
    "SQLITE_FULL": "disk full",
    "SQLITE_IOERR": "I/O error",
    "SQLITE_READONLY": "read-only",
    "SQLITE_CANTOPEN": "cannot open",
    "SQLITE_CORRUPT": "corrupt",
    "SQLITE_NOTADB": "not a database",
    "SQLITE_BUSY": "locked by another process",
    "SQLITE_LOCKED": "locked",
}


def is_store_failure(exc: sqlite3.Error) -> bool:
    """A failure of the file or the disk (full, I/O, read-only, ...), not of a statement."""
    return "_".join(getattr(exc, "sqlite_errorname", "").split("_")[:2]) in CAUSES


def failure_cause(exc: BaseException) -> str:
    """A store error in words: `disk full: database or disk is full`."""
    name = getattr(exc, "sqlite_errorname", "") if isinstance(exc, sqlite3.Error) else ""
    cause = CAUSES.get("_".join(name.split("_")[:2]))  # SQLITE_IOERR_WRITE: an I/O error
    if cause is None and isinstance(exc, OSError) and exc.errno is not None:
        cause = "disk full" if exc.errno == 28 else None  # ENOSPC
    detail = str(exc) or type(exc).__name__
    return detail if cause is None or cause in detail else f"{cause}: {detail}"


class WriteHealth:
    """The outcome of the latest write to one store file (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path  # the file, or where a database server is (no password)
        self.failure: str | None = None
        self.failing_since: float | None = None
        self.on_change: Callable[[str], None] = log.warning
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> str:
        """Note a failed write; returns its cause in words."""
        cause = failure_cause(exc)
        with self._lock:
            first = self.failure is None
            self.failure = cause
            if first:
                self.failing_since = time.time()
        if first:
            self.on_change(
                f"streamctl: the store {self.path} cannot be written ({cause}); "
                "events are refused with 503 and processing waits until writes succeed"
            )
        return cause

    def succeeded(self) -> None:
        if self.failure is None:  # the common case: no lock
            return
        with self._lock:
            was, self.failure, since = self.failure, None, self.failing_since
            self.failing_since = None
        if was is not None:
            lasted = time.time() - since if since is not None else 0.0
            self.on_change(
                f"streamctl: the store {self.path} is writable again after {lasted:.1f} s "
                f"({was}); events are accepted and processing resumes"
            )
