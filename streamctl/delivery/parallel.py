"""Replay's worker processes: parse, normalise, decide and record chunks of lines.

Python runs one thread of Python at a time, and replay is CPU-bound: JSON parsing,
normalisation, contracts, filters, mappings, templates, and binding hundreds of
thousands of rows into SQLite. So `replay` ships raw line chunks to worker
processes, each with its own compiled project and its own connection to the store.
The parent sends byte ranges of the file (`byte_ranges`), not the lines: each
worker reads its range itself and takes the lines that start in it, so the events
cross no pipe and the parent never reads the file through. A worker records its
chunk in one write transaction (dedupe included: SQLite serialises the writers,
so two workers never both take a messageId as new) and sends back only what
delivery needs: the PENDING deliveries with their ids, as tuples of strings
(`PendingRow`; payload dicts cost several times more to pickle). The parent
process delivers, and records attempts.

    with DecisionPool(project.root, store_location(project), path, "web", syncs=(), workers=2) as pool:
        pool.node = store.node                        # PostgreSQL: the node they record for
        for start, end in byte_ranges(path, 5000):
            chunk = await pool.submit(start, end)     # DecidedChunk, its lines numbered from 1
            deliveries = chunk.pending()

Workers start from a fork server that imported streamctl once, so they inherit no
threads, locks or SQLite handles from the parent; `streamctl replay` forks them
itself instead (`DecisionPool.forked`), early enough that there are none, and they
begin with its project already loaded and compiled.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from streamctl.core.heap import tune_garbage_collector
from streamctl.core.rows import PendingDelivery, PendingRow, encode_results, pending_deliveries
from streamctl.sources.ndjson import BadLine, open_events_file, parse_lines
from streamctl.store import Store
from streamctl.store.backend import open_location
from streamctl.store.postgres.location import is_postgres_url

if TYPE_CHECKING:
    from streamctl.core.model import Project

MAX_AUTO_WORKERS = 8
AUTO_MIN_BYTES = 4 * 1024 * 1024  # below this, starting processes costs more than it saves
PARENT_CHECK = 0.5  # seconds between a worker's checks that the replay process still runs
SAMPLE_BYTES = 1 << 20  # the start of the file, to judge its line length (`byte_ranges`)
WORKER_CACHE_MIB = 16  # SQLite page cache of a worker's connection

_worker: dict[str, Any] = {}


def worker_count(file_size: int, requested: int | None) -> int:
    """`requested` (`--workers`), or by default 0 (decide in-process) for small files and
    one worker per CPU for the others."""
    if requested is not None:
        return requested
    if file_size < AUTO_MIN_BYTES:
        return 0
    return max(1, min(MAX_AUTO_WORKERS, os.cpu_count() or 1))


@dataclass
class DecidedChunk:
    """What a worker recorded for one chunk of lines."""

    bad: list[BadLine]  # numbered from 1 at the range's first line
    lines: int  # lines that start in the range (blank and bad ones included)
    events: int
    duplicates: int
    counts: Counter[tuple[str, str]]  # (sync, decision status) -> events
    first_delivery_id: int
    deliveries: int  # rows written to `deliveries`, ids first_delivery_id...
    pending_rows: list[PendingRow]
    recorded_at: float

    def pending(self) -> list[PendingDelivery]:
        """The PENDING deliveries, built in the process that delivers them."""
        return pending_deliveries(self.pending_rows, self.recorded_at)


def byte_ranges(path: Path, chunk_size: int) -> Iterator[tuple[int, int]]:
    """(start, end) offsets cutting `path` into ranges of about `chunk_size` lines each,
    judged by the length of its first lines; a worker decides the lines that start in
    its range (`lines_starting_in`), so the parent reads only the start of the file."""
    with open_events_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        sample = handle.read(SAMPLE_BYTES)
    line_bytes = len(sample) / max(1, sample.count(b"\n"))
    step = max(1, round(line_bytes * chunk_size))
    for start in range(0, size, step):
        yield start, min(size, start + step)


def lines_starting_in(handle: IO[bytes], start: int, end: int) -> list[bytes]:
    """The lines of the file that start at an offset in [start, end), without their
    newlines; the last one is read to its end, past `end` if it runs on."""
    if start > 0:
        handle.seek(start - 1)  # a line starts at `start` if the byte before ends one
        data = handle.read(end - start + 1)
        first = data.find(b"\n") + 1
        if first == 0:
            return []  # all within a line that started in an earlier range
    else:
        handle.seek(0)
        data = handle.read(end)
        first = 0
    if data and not data.endswith(b"\n"):
        data += handle.readline()
    lines = data[first:].split(b"\n")
    if not lines[-1]:
        lines.pop()  # what follows the last newline: nothing
    return lines


def _start(
    root: str, store: str, path: str, source: str, syncs: tuple[str, ...], parent: int
) -> None:
    """A worker started by the fork server: load the project, then `_adopt` it."""
    from streamctl.config.loader import load_project

    _adopt(load_project(Path(root)), store, path, source, syncs, parent)


def _adopt(
    project: Project, store: str, path: str, source: str, syncs: tuple[str, ...], parent: int
) -> None:
    threading.Thread(target=exit_with, args=(parent,), daemon=True).start()
    from streamctl.delivery.runtime import create_destinations, select_syncs
    from streamctl.pipeline.process import Pipeline

    chosen = select_syncs(project, syncs)
    _worker["pipeline"] = Pipeline(project, create_destinations(project, chosen))
    _worker["destinations"] = {s.name: s.destination for s in project.syncs}
    # Opened on first use, when the parent has created (or migrated) the store.
    _worker["store_location"] = store
    _worker["path"] = Path(path)
    _worker["source"] = source
    _worker["narrowed"] = list(syncs) if syncs else None
    tune_garbage_collector()


def exit_with(parent: int) -> None:
    """A worker outlives a parent killed with SIGKILL (it holds its own end of the task
    pipe, so it never sees EOF): watch the parent and exit with it. A transaction cut
    short is rolled back by SQLite; its chunk is replayed by the next run."""
    while _alive(parent):
        time.sleep(PARENT_CHECK)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def decide_range(start: int, end: int, node: int | None = None) -> DecidedChunk:
    """In a worker: decide the lines that start between these offsets of the file and
    record them; the pending deliveries come back. `node`: the parent's PostgreSQL node,
    which holds the lease on what they record (known only once the parent opened the
    store, after the workers were forked)."""
    handle: IO[bytes] | None = _worker.get("file")
    if handle is None:  # opened on first use: a missing file is the parent's error to report
        handle = _worker["file"] = _worker["path"].open("rb")
    lines = lines_starting_in(handle, start, end)
    chunk = parse_lines(lines, 1)  # the parent knows the lines before: it renumbers
    source: str = _worker["source"]
    results = _worker["pipeline"].process(source, chunk.events, _worker["narrowed"])
    encoded = encode_results(source, results, keep_payloads=False)
    store: Store | None = _worker.get("store")
    if store is None:
        # Each turn at the writer lock finds the cache emptied by the others' writes.
        store = open_location(
            _worker["store_location"], node=node, checkpoints=False, cache_mib=WORKER_CACHE_MIB
        )
        _worker["store"] = store
    now = time.time()
    recorded = store.record_encoded(
        encoded, destinations=_worker["destinations"], now=now, dedupe=True, build_pending=False
    )
    decisions = recorded.encoded.decisions
    counts = recorded.encoded.status_counts()
    first_id = recorded.first_delivery_id
    return DecidedChunk(
        chunk.bad, len(lines), recorded.events, recorded.duplicates, counts, first_id,
        len(decisions), recorded.encoded.pending_rows(first_id), now,
    )  # fmt: skip


class DecisionPool:
    """Worker processes running `decide_range` for one source of one project.

    `DecisionPool(root, ...)` starts them from a fork server, which is safe from any
    process; `DecisionPool.forked(project, ...)` forks them from this one, which costs
    nothing but the fork (no interpreter, imports or project to load: about 0.6 s of
    CPU on the development machine) and is safe only early (see there)."""

    def __init__(
        self,
        root: Path,
        store: str | Path,
        path: Path,
        source: str,
        syncs: tuple[str, ...],
        workers: int,
    ) -> None:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            # Imported once in the fork server rather than in every worker.
            context.set_forkserver_preload(
                [
                    "streamctl.delivery.parallel",
                    "streamctl.config.loader",
                    "streamctl.delivery.runtime",
                    "streamctl.pipeline.process",
                ]
            )
        root_dir = str(Path(root).resolve())
        self._begin(context, workers, _start, (root_dir, *self._shared(store, path, source, syncs)))
        # The pool starts workers on demand, and starting one waits for the fork
        # server's imports: start them all now, in a thread, so their start-up runs
        # while the caller prepares the rest (the delivery runtime).
        self._warming: threading.Thread | None = threading.Thread(
            target=self._warm_up, name="replay-workers-start"
        )
        self._warming.start()

    @classmethod
    def forked(
        cls,
        project: Project,
        store: str | Path,
        path: Path,
        source: str,
        syncs: tuple[str, ...],
        workers: int,
    ) -> DecisionPool:
        """Workers forked from this process, inheriting its loaded `project`. Call it
        before this process opens the store or starts a thread: a child must inherit no
        SQLite connection (SQLite forbids using one across fork, and its per-file lock
        bookkeeping would be copied) and no lock held by another thread."""
        pool = cls.__new__(cls)
        context = multiprocessing.get_context("fork")
        pool._begin(context, workers, _adopt, (project, *cls._shared(store, path, source, syncs)))
        pool._warm_up()  # with fork, the first submit forks every worker, here and now
        pool._warming = None
        return pool

    @staticmethod
    def _shared(
        store: str | Path, path: Path, source: str, syncs: tuple[str, ...]
    ) -> tuple[str, str, str, tuple[str, ...], int]:
        """The workers' arguments: the store (a file, or a PostgreSQL URL), the events
        file, the source, the syncs, the parent's pid."""
        text = str(store)
        location = text if is_postgres_url(text) else str(Path(text).resolve())
        resolved = (location, str(Path(path).resolve()))
        return (*resolved, source, syncs, os.getpid())

    node: int | None = None  # the PostgreSQL node the workers record for (set when known)

    def _begin(
        self,
        context: multiprocessing.context.BaseContext,
        workers: int,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...],
    ) -> None:
        self.workers = workers
        self._executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=initializer, initargs=initargs
        )

    def _warm_up(self) -> None:
        for _ in range(self.workers):
            self._executor.submit(os.getpid)

    def submit(self, start: int, end: int) -> asyncio.Future[DecidedChunk]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, decide_range, start, end, self.node)

    def close(self) -> None:
        if self._warming is not None:
            self._warming.join()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DecisionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
