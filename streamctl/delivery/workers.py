"""`streamctl run --workers N`: the pipeline and delivery in N processes, ingest in the listener.

    workers = DeliveryWorkers(project, count=2)
    await workers.start()    # N processes, each a Runtime over its share of the store
    ...
    await workers.stop()     # SIGTERM: each records what it was doing, then exits

Python runs one thread of Python at a time. In one process the listener, the
pipeline, the store writes and the HTTP sends of delivery share one core: `run`
accepted 55,000 events/s but delivered ~13,000 events/s sustained on the 2-core
development machine. Here the listener only parses and appends to the queue; each
worker claims its share of the queue (streamctl.store.shard on SQLite: rows by id
modulo N; leases on PostgreSQL), runs the pipeline, records outcomes and
acknowledges in one transaction (`Store.record_and_ack`), and delivers what it
recorded. `benchmarks/scale.py` prints the figures.

Workers start from a fork server (the listener already runs threads when they
start: forking it would copy their locks), load the project themselves, and die
with the listener, even when it is killed with SIGKILL (`_die_with_fork_server`). The listener restarts
a worker that died under the same number, so its unacknowledged rows and open
deliveries (its shard) are taken up again: at most what it was sending is sent
twice (at least once), nothing answered 200 is lost.

Each worker reports what it decides and sends to the listener over a socket of
its own (streamctl.monitoring.relay), so /metrics, `streamctl tail` and the
console's Debugger see the workers' decisions and attempts as they would in one
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TextIO

from streamctl.core.heap import tune_garbage_collector
from streamctl.core.model import Project
from streamctl.delivery.parallel import exit_with
from streamctl.monitoring.relay import (
    Flag,
    RelayObserver,
    ReportReceiver,
    WorkerRelay,
    report_channel,
)
from streamctl.store.backend import open_worker_store, store_location
from streamctl.store.queue import EventQueue
from streamctl.store.shard import Shard
from streamctl.store.sqlite_queue import SqliteEventQueue

SUPERVISE_EVERY = 0.2  # seconds between the listener's checks that every worker runs
RESTART_MIN = 0.2  # seconds before starting a worker that died again, doubling while
RESTART_MAX = 10.0  # it keeps dying within STABLE seconds (a broken store, say)
STABLE = 5.0
STOP_GRACE = 30.0
PR_SET_PDEATHSIG = 1  # prctl(2)  # seconds a worker has to record its outcomes after SIGTERM


class DeliveryWorkers:
    """N worker processes, kept running; `streamctl.server.DeliveryRuntime` for `run`."""

    def __init__(
        self,
        project: Project,
        count: int,
        *,
        err: TextIO = sys.stderr,
        queue: EventQueue | None = None,
    ) -> None:
        """`queue`: the listener's, whose depth follows what the workers acknowledge."""
        self.project = project
        self.count = count
        self.err = err
        self.restarts = 0
        self._location = store_location(project)
        self._processes: dict[int, tuple[BaseProcess, float]] = {}
        self._delays: dict[int, float] = {}
        self._supervisor: asyncio.Task[None] | None = None
        methods = multiprocessing.get_all_start_methods()
        self._context = multiprocessing.get_context(
            "forkserver" if "forkserver" in methods else "spawn"
        )
        # 1 while the live feed has followers: workers build feed records only then.
        self._feed_on: Flag = self._context.RawValue("b", 0)
        acked = queue.dropped if isinstance(queue, SqliteEventQueue) else None
        self.reports = ReportReceiver(self._feed_on, on_acked=acked)
        if "forkserver" in methods:  # imported once in the fork server, not in every worker
            self._context.set_forkserver_preload(
                ["streamctl.delivery.workers", "streamctl.config.loader", "streamctl.delivery"]
            )

    @property
    def pids(self) -> dict[int, int | None]:
        """Each worker's process id, by number (tests kill them)."""
        return {index: process.pid for index, (process, _) in self._processes.items()}

    async def start(self) -> None:
        for index in range(1, self.count + 1):
            self._spawn(index)
        self._supervisor = asyncio.create_task(self._supervise(), name="streamctl-workers")

    async def stop(self) -> None:
        """SIGTERM every worker and wait for each to record its outcomes and exit."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        processes = [process for process, _ in self._processes.values()]
        self._processes.clear()
        for process in processes:
            process.terminate()
        await asyncio.to_thread(_join_all, processes, STOP_GRACE)
        await self.reports.close()

    def notify(self) -> None:
        """Workers are other processes: they poll the queue (every 20 ms when idle)."""

    async def reload(self, project: Project) -> None:
        """Workers load the project when they start: restart them on the new one."""
        await self.stop()
        self.project = project
        await self.start()

    def _spawn(self, index: int) -> None:
        mine, theirs = report_channel()
        root = str(self.project.root.resolve())
        process = self._context.Process(  # type: ignore[attr-defined]
            target=work_on_shard,
            args=(root, self._location, index, self.count, os.getpid(), theirs, self._feed_on),
            name=f"streamctl-worker-{index}",
        )
        try:
            process.start()
        finally:
            theirs.close()  # the worker has its own copy: EOF here once it is gone
        self.reports.attach(mine)
        self._processes[index] = (process, time.monotonic())

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_EVERY)
            for index, (process, started) in list(self._processes.items()):
                if process.is_alive():
                    continue
                lived = time.monotonic() - started
                delay = self._delays.get(index, RESTART_MIN)
                self._delays[index] = RESTART_MIN if lived > STABLE else min(delay * 2, RESTART_MAX)
                print(
                    f"streamctl: worker {index} exited (code {process.exitcode});"
                    f" starting it again in {delay:g}s",
                    file=self.err,
                    flush=True,
                )
                del self._processes[index]
                asyncio.get_running_loop().call_later(delay, self._respawn, index)

    def _respawn(self, index: int) -> None:
        if self._supervisor is not None and index not in self._processes:
            self.restarts += 1
            self._spawn(index)


def _join_all(processes: list[BaseProcess], grace: float) -> None:
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():  # stuck past the grace: what it did not record is redone
            process.kill()
            process.join()


def work_on_shard(
    root: str,
    location: str,
    index: int,
    count: int,
    parent: int,
    reports: socket.socket,
    feed_on: Flag,
) -> None:
    """A worker process: process and deliver shard `index` of `count` until SIGTERM."""
    _die_with_fork_server()
    threading.Thread(target=exit_with, args=(parent,), daemon=True).start()
    # Ctrl-C reaches the whole process group: the listener decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvloop

    from streamctl.config.loader import load_project

    project = load_project(Path(root))
    tune_garbage_collector()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            _process_shard(project, location, Shard(index, count), WorkerRelay(reports, feed_on))
        )


def _die_with_fork_server() -> None:
    """On Linux, SIGKILL this worker the moment its parent (the fork server, which exits
    as soon as the listener is gone) dies: a listener killed with SIGKILL takes its
    workers with it at once, so none sends after another node took its work over.
    Elsewhere `exit_with` notices within half a second."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


async def _process_shard(project: Project, location: str, shard: Shard, relay: WorkerRelay) -> None:
    from streamctl.delivery.runtime import Runtime

    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    store = open_worker_store(location, shard)
    observer = RelayObserver(relay)
    if isinstance(store.queue, SqliteEventQueue):  # the listener's depth of the queue follows
        store.queue.on_dropped = relay.acked
    sending = asyncio.create_task(relay.keep_sending(), name="streamctl-reports")
    try:
        async with Runtime(
            project, store, retention=shard.index == 1, observer=observer
        ) as runtime:
            runtime.process_queue(store.queue)
            await stopping.wait()
    finally:
        sending.cancel()
        relay.close()  # what the last flush recorded
        store.close()
