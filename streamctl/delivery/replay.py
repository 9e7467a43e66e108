"""Replay an NDJSON file through the pipeline and deliver it (`streamctl replay`).

    report = asyncio.run(replay_file(project, Path("events.ndjson"), source="web"))
    report.by_sync["to-braze"]["delivered"]

The file is streamed chunk by chunk (memory flat with its size) into
`Runtime.submit`, which paces the reading to the delivery; then the runtime drains:
the call returns once every delivery is delivered or archived. With `dry_run`
the pipeline decides, nothing is stored nor sent.
"""

from __future__ import annotations

import asyncio
import heapq
import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from streamctl.core.errors import UsageError
from streamctl.core.heap import tune_garbage_collector
from streamctl.core.model import Project
from streamctl.core.rows import PendingDelivery
from streamctl.delivery.parallel import DecidedChunk, DecisionPool, byte_ranges, worker_count
from streamctl.delivery.runtime import Runtime, SubmitSummary, create_destinations, select_syncs
from streamctl.pipeline.process import Pipeline
from streamctl.sources.ndjson import DEFAULT_CHUNK, BadLine, read_ndjson
from streamctl.store import Store
from streamctl.store.backend import open_store, store_location

BAD_LINES_KEPT = 1000  # the report keeps the first ones; `bad_lines` counts them all
FINAL = ("delivered", "archived")


@dataclass
class ReplayProgress:
    bytes_read: int
    bytes_total: int
    events: int
    delivered: int
    archived: int


@dataclass
class ReplayReport:
    source: str
    dry_run: bool
    events: int = 0
    duplicates: int = 0
    bad_lines: int = 0
    bad: list[BadLine] = field(default_factory=list)
    by_sync: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: float = 0.0
    drained: bool = True

    @property
    def failed(self) -> bool:
        """Exit 1: something was archived or failed on the way (SPEC §3)."""
        bad_statuses = ("archived", "mapping_error", "function_error")
        return any(c[s] for c in self.by_sync.values() for s in bad_statuses) or not self.drained


class ReplaySession:
    """A replay with its worker processes and store ready: `streamctl replay` opens one
    per source, starts its progress display, then runs it.

        with ReplaySession(project, path, source="web", workers=None) as session:
            report = session.run(on_progress=..., on_bad_line=...)

    Opening tunes the garbage collector (the project is loaded: it is frozen, in the
    workers' copy too) and forks the workers, before the store is opened and before
    the caller starts any thread (a progress bar): a child must inherit no SQLite
    connection, no PostgreSQL pool and no lock held by another thread
    (`DecisionPool.forked`). Platforms
    without fork get a fork server from `replay_file` instead."""

    def __init__(
        self,
        project: Project,
        path: Path,
        *,
        source: str,
        syncs: Sequence[str] = (),
        dry_run: bool = False,
        workers: int | None = None,
    ) -> None:
        self.project, self.path, self.source = project, path, source
        self.syncs, self.dry_run, self.workers = tuple(syncs), dry_run, workers
        tune_garbage_collector()
        self._pool = None if dry_run else self._fork_workers()
        self._store: Store | None = None
        try:
            self._store = None if dry_run else open_store(project)
        except BaseException:
            self.close()
            raise

    def _fork_workers(self) -> DecisionPool | None:
        if self.source not in self.project.sources or not self.path.is_file():
            return None  # replay_file reports it
        count = worker_count(self.path.stat().st_size, self.workers)
        if count == 0 or "fork" not in multiprocessing.get_all_start_methods():
            return None  # replay_file decides in this process, or starts a fork server
        return DecisionPool.forked(
            self.project, store_location(self.project), self.path, self.source, self.syncs, count
        )

    def run(
        self,
        on_progress: Callable[[ReplayProgress], None] | None = None,
        on_bad_line: Callable[[BadLine], None] | None = None,
    ) -> ReplayReport:
        return asyncio.run(
            replay_file(
                self.project, self.path, source=self.source, store=self._store,
                syncs=self.syncs, dry_run=self.dry_run, on_progress=on_progress,
                on_bad_line=on_bad_line, workers=self.workers, pool=self._pool,
            )
        )  # fmt: skip

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> ReplaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_source(project: Project) -> str:
    """The only http source; otherwise the user must say which (`--source`)."""
    http = [name for name, s in project.sources.items() if s.type == "http"]
    if len(http) == 1:
        return http[0]
    names = ", ".join(sorted(project.sources)) or "none"
    msg = f"say which source the events come from with --source (sources: {names})"
    raise UsageError(msg)


async def replay_file(
    project: Project,
    path: Path,
    *,
    source: str,
    store: Store | None,
    syncs: Sequence[str] = (),
    dry_run: bool = False,
    client: httpx.AsyncClient | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Callable[[ReplayProgress], None] | None = None,
    on_bad_line: Callable[[BadLine], None] | None = None,
    drain_timeout: float | None = None,
    workers: int | None = None,
    pool: DecisionPool | None = None,
) -> ReplayReport:
    """Replay `path` as events of `source`; with `dry_run`, `store` may be None.

    `workers`: processes that parse and run the pipeline (0: in this process;
    None: one per CPU for files over a few MB). `pool`: such processes, already
    started for this file and source (`DecisionPool.forked`); replay closes it."""
    if source not in project.sources:
        names = ", ".join(sorted(project.sources)) or "none"
        msg = f"unknown source {source!r}; known: {names}"
        raise UsageError(msg)
    selected = [s.name for s in select_syncs(project, syncs) if s.source == source]
    report = ReplayReport(source, dry_run, by_sync={name: Counter() for name in selected})
    total = path.stat().st_size if path.exists() else 0
    started = time.perf_counter()
    if dry_run or store is None:
        await _dry_run(
            project, path, source, syncs, chunk_size, report, total, on_progress, on_bad_line
        )
    else:
        processes = worker_count(total, workers)
        if pool is None and processes > 0:
            # Started first, so their start-up (imports, project) overlaps the runtime's.
            pool = DecisionPool(
                project.root, store_location(project), path, source, tuple(syncs), processes
            )
        if pool is not None:
            pool.node = store.node  # PostgreSQL: the workers record for this process's node
        try:
            runtime = Runtime(project, store, client, syncs=syncs)
            await runtime.start()
            try:
                if pool is not None:
                    await _feed_from_workers(
                        runtime, pool, path, chunk_size, report, total, on_progress, on_bad_line
                    )
                    pool.close()  # before draining: their memory goes back
                else:
                    for chunk in read_ndjson(path, chunk_size):
                        _note_bad(chunk.bad, report, on_bad_line)
                        _add(report, await runtime.submit(source, chunk.events))
                        if on_progress is not None:
                            on_progress(_progress(runtime, chunk.bytes_read, total, report))
                report.drained = await _drain(runtime, total, report, on_progress, drain_timeout)
                if on_progress is not None:
                    on_progress(_progress(runtime, total, total, report))
            finally:
                await runtime.stop()
        finally:
            if pool is not None:
                pool.close()
        _final_counts(runtime, report)
    report.seconds = time.perf_counter() - started
    return report


def _add(report: ReplayReport, summary: SubmitSummary) -> None:
    report.events += summary.events
    report.duplicates += summary.duplicates


async def _feed_from_workers(
    runtime: Runtime,
    pool: DecisionPool,
    path: Path,
    chunk_size: int,
    report: ReplayReport,
    total: int,
    on_progress: Callable[[ReplayProgress], None] | None,
    on_bad_line: Callable[[BadLine], None] | None,
) -> None:
    """Chunks go out to the worker processes, which record them; their pending
    deliveries reach the lanes in id order (the order the workers committed in),
    at most 2 chunks per worker out. Chunks come back in file order: bad lines get
    their numbers in the file from the count of lines before."""
    in_flight: deque[tuple[asyncio.Future[DecidedChunk], int]] = deque()
    reorder = DeliveryReorder(await runtime.next_delivery_id())
    lines_before = 0

    async def take_oldest() -> None:
        nonlocal lines_before
        future, bytes_read = in_flight.popleft()
        chunk = await future
        bad = [replace(line, line=line.line + lines_before) for line in chunk.bad]
        lines_before += chunk.lines
        _note_bad(bad, report, on_bad_line)
        report.events += chunk.events
        report.duplicates += chunk.duplicates
        runtime.count_decisions(chunk.counts, chunk.events, chunk.duplicates)
        released = reorder.add(
            chunk.first_delivery_id, chunk.deliveries, chunk.pending(), len(in_flight)
        )
        for pending in released:
            runtime.deliver(pending)
        if on_progress is not None:
            on_progress(_progress(runtime, bytes_read, total, report))
        await runtime.wait_for_room()

    for start, end in byte_ranges(path, chunk_size):
        in_flight.append((pool.submit(start, end), end))
        if len(in_flight) >= 2 * pool.workers:
            await take_oldest()
    while in_flight:
        await take_oldest()
    for pending in reorder.rest():
        runtime.deliver(pending)


class DeliveryReorder:
    """Releases chunks' pending deliveries in id order: lanes take offers in ascending
    ids (anything below their cursor they consider already read from the store).

    A chunk is released once every lower id is accounted for: by the chunks released
    before it, or, for ids another process took from a shared PostgreSQL store (gaps
    no chunk of this replay fills), once every chunk that was still in flight when it
    came back has come back too: chunks sent out later record later, with higher ids."""

    def __init__(self, next_id: int) -> None:
        self.next_id = next_id
        # (first id, count, order, release once this many chunks arrived, deliveries)
        self._waiting: list[tuple[int, int, int, int, list[PendingDelivery]]] = []
        self._arrived = 0

    def add(
        self,
        first_id: int,
        count: int,
        pending: list[PendingDelivery],
        in_flight: int | None = None,
    ) -> list[list[PendingDelivery]]:
        """`in_flight`: chunks still out when this one came back (None: no other
        process writes ids, wait for the gap to fill)."""
        self._arrived += 1
        settled = self._arrived + in_flight if in_flight is not None else 1 << 62
        heapq.heappush(self._waiting, (first_id, count, self._arrived, settled, pending))
        known = max((w[0] for w in self._waiting if w[3] <= self._arrived), default=-1)
        ready = []
        while self._waiting and self._waiting[0][0] <= max(self.next_id, known):
            first, count, _, _, chunk = heapq.heappop(self._waiting)
            self.next_id = max(self.next_id, first + count)
            ready.append(chunk)
        return ready

    def rest(self) -> list[list[PendingDelivery]]:
        return [chunk for *_, chunk in sorted(self._waiting, key=lambda w: w[:3])]


async def _drain(
    runtime: Runtime,
    total: int,
    report: ReplayReport,
    on_progress: Callable[[ReplayProgress], None] | None,
    timeout: float | None,
) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        step = 0.2 if remaining is None else max(0.0, min(0.2, remaining))
        if await runtime.drain(step):
            return True
        if on_progress is not None:
            on_progress(_progress(runtime, total, total, report))
        if remaining is not None and remaining <= 0:
            return False


def _progress(runtime: Runtime, read: int, total: int, report: ReplayReport) -> ReplayProgress:
    counts = runtime.delivery_counts().values()
    delivered = sum(c["delivered"] for c in counts)
    archived = sum(c["archived"] for c in counts)
    return ReplayProgress(read, total, report.events, delivered, archived)


def _final_counts(runtime: Runtime, report: ReplayReport) -> None:
    """Pipeline decisions of this replay, plus what delivery made of the pending ones
    (including deliveries resumed from an earlier, interrupted run)."""
    for name, decided in runtime.processed.by_sync.items():
        counts = report.by_sync.setdefault(name, Counter())
        for status, n in decided.items():
            if status != "pending":
                counts[status] += n
    for name, delivered in runtime.delivery_counts().items():
        counts = report.by_sync.setdefault(name, Counter())
        for status in FINAL:
            counts[status] += delivered[status]
    for name, left in runtime.waiting().items():
        if left:
            report.by_sync[name]["pending"] += left


async def _dry_run(
    project: Project,
    path: Path,
    source: str,
    syncs: Sequence[str],
    chunk_size: int,
    report: ReplayReport,
    total: int,
    on_progress: Callable[[ReplayProgress], None] | None,
    on_bad_line: Callable[[BadLine], None] | None,
) -> None:
    chosen = select_syncs(project, syncs)
    destinations = create_destinations(project, chosen)
    try:
        _decide_only(
            Pipeline(project, destinations), path, source, [s.name for s in chosen] if syncs else None,
            chunk_size, report, total, on_progress, on_bad_line,
        )  # fmt: skip
    finally:
        for destination in destinations.values():
            await destination.aclose()


def _decide_only(
    pipeline: Pipeline,
    path: Path,
    source: str,
    narrowed: list[str] | None,
    chunk_size: int,
    report: ReplayReport,
    total: int,
    on_progress: Callable[[ReplayProgress], None] | None,
    on_bad_line: Callable[[BadLine], None] | None,
) -> None:
    for chunk in read_ndjson(path, chunk_size):
        _note_bad(chunk.bad, report, on_bad_line)
        for result in pipeline.process(source, chunk.events, narrowed):
            report.events += 1
            for decision in result.decisions:
                status = (
                    "would_deliver" if decision.status.value == "pending" else decision.status.value
                )
                report.by_sync.setdefault(decision.sync, Counter())[status] += 1
        if on_progress is not None:
            on_progress(ReplayProgress(chunk.bytes_read, total, report.events, 0, 0))


def _note_bad(
    bad: list[BadLine], report: ReplayReport, on_bad_line: Callable[[BadLine], None] | None
) -> None:
    for line in bad:
        report.bad_lines += 1
        if len(report.bad) < BAD_LINES_KEPT:
            report.bad.append(line)
        if on_bad_line is not None:
            on_bad_line(line)
