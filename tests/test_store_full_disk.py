"""A store on a filesystem that fills up and then frees: the listener says so (log,
/readyz, 503s naming the cause) and carries on by itself once space is back, losing
nothing it answered 200 for.

The filesystem is a small tmpfs mounted by the test (root, as here and in CI); where
mounting is impossible the test is skipped with the reason printed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.listener_harness import (
    FILE_SYNC,
    WEB_KEY,
    ListenerThread,
    write_project,
)
from tests.test_listener_run import basic, delivered_ids, wait_for

TMPFS_SIZE = "24m"


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}"
        print(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem refuses another byte."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as handle:
        for size in (len(chunk), 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(chunk[:size])
    with pytest.raises(OSError) as full:
        (folder / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def batch(prefix: str, count: int) -> dict[str, object]:
    return {
        "batch": [
            {
                "type": "track",
                "event": "Viewed",
                "userId": "u1",
                "messageId": f"{prefix}-{i}",
                "properties": {"pad": "x" * 2000},
            }
            for i in range(count)
        ]
    }


def test_a_full_disk_is_reported_refused_with_503_and_survived(tmp_path, small_filesystem):
    project_dir = tmp_path / "project"
    config_text = (
        (write_project(project_dir, syncs={"web-to-file": FILE_SYNC}) / "streamctl.yaml")
        .read_text()
        .replace("store: .streamctl/state.db", f"store: {small_filesystem / 'state.db'}")
    )
    (project_dir / "streamctl.yaml").write_text(config_text)
    out = project_dir / "out" / "events.ndjson"
    accepted: list[str] = []

    with ListenerThread(project_dir) as listener, httpx.Client(base_url=listener.url) as http:

        def send(prefix: str, count: int = 20) -> httpx.Response:
            response = http.post("/v1/batch", json=batch(prefix, count), headers=basic(WEB_KEY))
            if response.status_code == 200:
                accepted.extend(f"{prefix}-{i}" for i in range(count))
            return response

        assert send("before").status_code == 200
        assert wait_for(lambda: len(delivered_ids(out)) == 20)
        assert http.get("/readyz").status_code == 200

        filler = fill(small_filesystem)
        # Writes that still fit (SQLite reuses its log's space) are answered 200 and kept,
        # and may say the store is writable again for a moment; once nothing fits, a
        # request, a small one too, is refused with 503 naming the cause, and /readyz too.
        refusals = until_full(send, http)
        assert refusals, "the full filesystem never refused a write"
        for refused in refusals:
            assert refused.status_code == 503
            assert refused.headers["content-type"].startswith("application/json")
            assert "disk full" in refused.json()["message"]
            assert "no transaction is active" not in refused.text
        assert "cannot be written (disk full" in listener.err.getvalue()

        os.remove(filler)
        assert wait_for(lambda: http.get("/readyz").status_code == 200, timeout=20)
        assert send("after").status_code == 200
        assert "writable again" in listener.err.getvalue()

        # Events stored while the disk had room, processed once it is full: the processor
        # records nothing, acks nothing, and resumes by itself when space is back.
        with processor_held(listener):
            for round_ in range(3):
                assert send(f"queued-{round_}", 40).status_code == 200
            filler = fill(small_filesystem)
            assert until_full(send, http, prefix="held"), "the full disk refused nothing"
        assert until_full(send, http, prefix="released"), "the full disk refused nothing"
        assert listener.err.getvalue().count("cannot be written (disk full") >= 2
        assert queue_depth(listener) > 0
        os.remove(filler)
        assert wait_for(lambda: http.get("/readyz").status_code == 200, timeout=20)

        # Everything answered 200, before, during and after, is processed and delivered once.
        assert wait_for(lambda: sorted(delivered_ids(out)) == sorted(accepted), timeout=30), (
            len(delivered_ids(out)),
            len(accepted),
            listener.err.getvalue(),
        )
        assert queue_depth(listener) == 0


def until_full(
    send: Callable[[str, int], httpx.Response],
    http: httpx.Client,
    prefix: str = "full",
    timeout: float = 30.0,
) -> list[httpx.Response]:
    """Send until a batch and then a one-event request are refused and /readyz answers
    503 naming a full disk, all in one round: the refusals then; [] by the deadline.

    Polls on that condition, not on one refusal: a write that still fits (SQLite
    reuses its log's space, a checkpoint frees some) succeeds and marks the store
    writable again, so the log and /readyz may alternate before nothing fits."""
    deadline = time.monotonic() + timeout
    for round_ in itertools.count():
        if time.monotonic() > deadline:
            return []
        batch_reply = send(f"{prefix}-{round_}", 20)
        if batch_reply.status_code == 200:
            continue
        small_reply = send(f"{prefix}-{round_}-small", 1)
        if small_reply.status_code == 200:
            continue
        ready = http.get("/readyz")
        if ready.status_code == 503 and "disk full" in ready.json()["reason"]:
            return [batch_reply, small_reply]
    return []


def queue_depth(listener: ListenerThread) -> int:
    assert listener.running is not None
    return listener.running.instance.store.queue.depth()


@contextlib.contextmanager
def processor_held(listener: ListenerThread) -> Iterator[None]:
    """The delivery processor's store thread busy until the block ends: events are
    stored by the listener meanwhile, and claimed only afterwards."""
    assert listener.running is not None
    runtime = listener.running.instance.runtime.runtime  # type: ignore[union-attr]
    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(30)

    runtime._store_thread.submit(hold)
    assert holding.wait(10)
    try:
        yield
    finally:
        release.set()
