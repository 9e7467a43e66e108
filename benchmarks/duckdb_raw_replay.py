"""`streamctl replay` with the duckdb destination changed, for `duckdb_raw.py --replays`.

    python benchmarks/duckdb_raw_replay.py MODE replay EVENTS -p PROJECT --json

MODE (empty: as it is) `raw`: the payload is the event itself (stored as its JSON
text) and the duckdb backend stages it as a `duckdb_raw.RawBatch`; `today`: as it is,
its statements timed; `noop-raw`: the raw payload and a load that does nothing;
`noop`: today's payload and a load that does nothing. The change is made before the
replay forks its workers (they run it too). DuckDB, and `duckdb_raw` with it, are
imported on the first batch, inside the replay's clock, as the product imports them.

At exit, to stderr: `load-thread-cpu SECONDS BATCHES`, the CPU of the threads that ran
the destination's `load` and how many batches it loaded (DuckDB runs a query in the thread that calls it, `threads = 1`),
and `load-steps {step: seconds}`, that CPU per statement (`duckdb_raw.TimedCursor`).
"""

from __future__ import annotations

import atexit
import sys
import time
import types
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from streamctl.destinations.duckdb import DuckDBDestination
from streamctl.destinations.storage import StorageDestination


def patch(mode: str) -> None:
    if mode in ("raw", "noop-raw"):
        StorageDestination.build_payload = lambda self, event_type, mapped, event: event  # type: ignore[method-assign,assignment,misc]
    if mode in ("noop", "noop-raw"):
        StorageDestination.load = lambda self, payloads: None  # type: ignore[method-assign]
    load, spent = StorageDestination.load, [0.0, 0]

    def timed_load(self: StorageDestination, payloads: Sequence[Any]) -> None:
        started = time.thread_time()
        try:
            load(self, payloads)
        finally:
            spent[0] += time.thread_time() - started
            spent[1] += 1

    StorageDestination.load = timed_load  # type: ignore[method-assign]
    atexit.register(lambda: print(f"load-thread-cpu {spent[0]} {spent[1]}", file=sys.stderr))
    if mode not in ("raw", "today"):
        return
    opened = DuckDBDestination.open_backend
    steps: dict[str, float] = defaultdict(float)

    def open_backend(self: DuckDBDestination) -> Any:
        backend = opened(self)  # imports duckdb, as the product does
        import duckdb_raw

        clock = duckdb_raw.Clock(time.thread_time)
        clock.steps = steps
        batch = duckdb_raw.RawBatch if mode == "raw" else duckdb_raw.StagedBatch

        def stage(b: Any, payloads: Sequence[Any]) -> Any:
            cursor = duckdb_raw.TimedCursor(b.con.cursor(), clock, b.namespace)
            return batch(cursor, b.path.parent, payloads, owns_connection=True)  # type: ignore[arg-type]

        backend.stage = types.MethodType(stage, backend)  # type: ignore[method-assign]
        return backend

    DuckDBDestination.open_backend = open_backend  # type: ignore[method-assign]
    atexit.register(lambda: print(f"load-steps {orjson.dumps(steps).decode()}", file=sys.stderr))


if __name__ == "__main__":
    patch(sys.argv[1])
    from streamctl.cli.main import main

    sys.argv = ["streamctl", *sys.argv[2:]]
    main()
