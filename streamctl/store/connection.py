"""The SQLite connection under the store and its queue: opening, transactions, checkpoints.

    connection = SqliteConnection.open(path)           # creates and migrates the file
    with connection.transaction() as conn: ...         # BEGIN IMMEDIATE ... COMMIT
    with connection.durable_transaction() as conn: ... # the same, fsynced before it returns
    rows = connection.rows("SELECT ...", params)       # under the writer lock

One writer connection per process, guarded by a lock so the listener's threads and
the delivery engine's writer thread can share it; readers (the CLI) open their own
connections (`readonly=True`). WAL lets them read while the writer writes.

Durability: WAL with `synchronous=NORMAL`, and `FULL` for the transactions that
promise durability to someone else: `durable_transaction()`, which the ingest
queue's `append` uses, fsyncs the log before it returns, so an event the listener
answered 200 for survives a power cut, not only a killed process. Everything else
(recorded decisions, attempts) is atomic and survives kill -9; a power cut may
lose the last moments of it, which at worst sends those deliveries again (the
queue ack is in the same transaction as the records, so nothing is lost). Skipping
an fsync per commit matters: the delivery engine commits its attempts every few
tens of milliseconds. `synchronous="FULL"` makes every commit durable.
"""

from __future__ import annotations

import sqlite3
import threading

try:
    import fcntl
except ImportError:  # Windows: SQLite's own busy handler alone
    fcntl = None  # type: ignore[assignment]
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, Literal, Protocol, TypeVar

import sqlite_utils

from streamctl.core.errors import StoreError
from streamctl.store.health import WriteHealth, is_store_failure
from streamctl.store.schema import immediate, migrate

Synchronous = Literal["FULL", "NORMAL"]
# Pages of a new store (SQLite's default is 4 KiB; an existing file keeps its own). Replay
# appends rows by the hundred thousand: a quarter of the pages to split, link, write to the
# WAL and copy back at checkpoints (replay of 100,000 events: median 6-10% faster over
# three runs of 9-11 alternating rounds; 32 KiB was no better).
PAGE_SIZE = 16 * 1024
CHECKPOINT_EVERY = 0.5  # seconds, at most, between checkpoints of a writer
WAL_RESTART_BYTES = 64 * 1024 * 1024  # a WAL this large is checkpointed to its end
LOCK_PATIENCE = 10.0  # seconds a writer waits for the file lock before relying on SQLite's


Self = TypeVar("Self", bound="SqliteConnection")


class Executor(Protocol):
    """A connection as sqlite3 speaks to it (`?` placeholders)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


class SqlReader(Protocol):
    """What the SQL both stores share (streamctl.store.queries, .metrics, .alert_state)
    asks of a connection: SQLite's, or the PostgreSQL store's, which takes `?`
    placeholders too. The few lines the dialects write differently ask `dialect`
    or `minute_of`."""

    @property
    def dialect(self) -> str: ...

    @property
    def lock(self) -> AbstractContextManager[Any]: ...

    @property
    def conn(self) -> Executor: ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def transaction(self) -> AbstractContextManager[Executor]: ...

    def minute_of(self, column: str) -> str:
        """SQL: the start of the minute of a Unix-seconds column."""
        ...

    def has_tables(self) -> bool:
        """Whether the store's tables exist (a SQLite file may hold only alert state)."""
        ...

    def close(self) -> None: ...


class SqliteConnection:
    """The one writer connection of this process to a streamctl SQLite file."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool = False) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self.db = sqlite_utils.Database(conn)
        self.lock = threading.RLock()
        self.checkpoints = False
        self._last_checkpoint = time.monotonic()
        self._lock_file: IO[bytes] | None = None
        if not readonly and fcntl is not None:
            self._lock_file = open(f"{path}-writer", "ab")  # noqa: SIM115 (held open)
        self.synchronous: Synchronous = "NORMAL"
        self.health = WriteHealth(path)  # every write transaction reports its outcome

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls: type[Self],
        path: str | Path,
        *,
        readonly: bool = False,
        synchronous: Synchronous = "NORMAL",
        checkpoints: bool = True,
        cache_mib: int = 64,
    ) -> Self:
        """Open (creating and migrating unless `readonly`) the store at `path`.

        Checkpoints (copying the WAL into the database file) never run inside a write
        transaction here: SQLite's automatic ones would run while this process holds
        the write lock, stalling every other writer. Instead a connection with
        `checkpoints=True` runs a PASSIVE checkpoint, which writers do not wait for,
        after its commits at most every `CHECKPOINT_EVERY` seconds; replay's worker
        processes open with `checkpoints=False` and leave them to the parent.
        `cache_mib`: SQLite's page cache, which it empties whenever another connection
        has written, so a small one serves connections that take turns writing."""
        path = Path(path)
        try:
            if readonly:
                if not path.exists():
                    msg = f"{path}: no store yet (nothing has been received or replayed)"
                    raise StoreError(msg)
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            if not readonly:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before the file is written
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {synchronous}")
                conn.execute("PRAGMA temp_store = MEMORY")
                conn.execute(f"PRAGMA cache_size = {-1024 * cache_mib}")  # in KiB
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                conn.execute("PRAGMA journal_size_limit = 67108864")  # WAL back to 64 MiB
        except sqlite3.Error as exc:
            msg = f"{path}: cannot open the store: {exc}"
            raise StoreError(msg) from exc
        store = cls(conn, path, readonly=readonly)
        store.synchronous = synchronous
        store.checkpoints = checkpoints and not readonly
        if not readonly:
            migrate(store.db, str(path))
        return store

    def close(self) -> None:
        with self.lock:
            if self.checkpoints:
                self.checkpoint()
            self.conn.close()
            if self._lock_file is not None:
                self._lock_file.close()

    def __enter__(self: Self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def durable_transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction whose commit is fsynced (synchronous=FULL) before it returns."""
        with self.lock:
            if self.synchronous == "FULL":
                with self.transaction() as conn:
                    yield conn
                return
            self.conn.execute("PRAGMA synchronous = FULL")
            try:
                with self.transaction() as conn:
                    yield conn
            finally:
                self.conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the writer lock; rolled back on any error."""
        with self.lock:
            with self._write():
                yield self.conn
            if self.checkpoints and time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY:
                self._checkpoint_after_commit()

    def _checkpoint_after_commit(self) -> None:
        """A checkpoint that fails (the database file cannot grow on a full disk) must not
        make the committed transaction look failed: its writes are safe in the WAL, and
        the next checkpoint copies them."""
        try:
            self.checkpoint()
        except sqlite3.Error as exc:
            self.health.failed(exc)

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, as far as readers allow.

        A PASSIVE checkpoint never waits, but while other processes keep writing (replay's
        workers) it never catches up either, and SQLite starts the WAL over only once it
        has: the WAL grew to 4 GB in a replay of 1,000,000 events, and every read and the
        memory of every process with it. Past `WAL_RESTART_BYTES` the checkpoint then
        holds the writers' file lock and RESTARTs: it copies the rest, and the next write
        begins the WAL again (trimmed to 64 MiB by journal_size_limit). The PASSIVE one
        goes first, so the writers wait only while the frames added since are copied,
        not the whole WAL (up to 0.1 s, three times in a replay of 100,000 events)."""
        with self.lock:
            self._last_checkpoint = time.monotonic()
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if _size(self.wal_path) < WAL_RESTART_BYTES:
                return
            with self._between_processes():
                self.conn.execute("PRAGMA wal_checkpoint(RESTART)")

    @property
    def wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; its outcome goes to `health` (a full disk and its end)."""
        with self._between_processes():
            try:
                with immediate(self.conn, str(self.path)):
                    yield self.conn
            except StoreError as exc:
                self.health.failed(exc.__cause__ or exc)
                raise
            except sqlite3.Error as exc:
                if not is_store_failure(exc):  # a constraint, a bad statement: the caller's
                    raise
                msg = f"{self.path}: cannot write to the store: {self.health.failed(exc)}"
                raise StoreError(msg) from exc
        self.health.succeeded()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query, read under the writer lock."""
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of one query (None without one), read under the writer lock."""
        with self.lock:
            return self.conn.execute(sql, params).fetchone()

    def minute_of(self, column: str) -> str:
        return f"CAST({column} / 60 AS INTEGER) * 60"

    def has_tables(self) -> bool:
        return self.row("SELECT 1 FROM sqlite_master WHERE name = 'attempts'") is not None

    @contextmanager
    def _between_processes(self) -> Iterator[None]:
        """Writers of several processes (replay's workers, the parent) queue on a file
        lock polled every few milliseconds at most, where SQLite's busy handler sleeps
        up to 100 ms between tries. After `LOCK_PATIENCE` seconds the transaction goes
        on without it (SQLite's own locking still keeps writes safe), so two stores of
        one file in one thread can never deadlock here."""
        handle = self._lock_file
        locked = handle is not None and _try_lock(handle)
        try:
            yield
        finally:
            if locked and handle is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(handle: IO[bytes]) -> bool:
    wait = 0.0002
    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(wait)
            wait = min(wait * 2, 0.005)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
