"""Servers the test suite starts itself: shared fixtures, imported by conftest.py.

    def test_something(postgres_url):     # postgresql://postgres:@/postgres?host=/tmp/...
        with psycopg.connect(postgres_url) as conn: ...

`postgres_url`: one PostgreSQL 16 server for the whole session, from the binaries the
`pgserver` wheel ships, in a temporary folder, on a Unix socket (no port to collide
with parallel runs). Run as root, pgserver creates a system user `pgserver` and runs
the server as that user (PostgreSQL refuses to run as root); as anyone else it runs as
them. Tests isolate themselves by schema or database, not by server.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    import pgserver  # imported here: only sessions that need PostgreSQL pay for it

    folder = Path(tempfile.mkdtemp(prefix="streamctl-pg-"))
    server = pgserver.get_server(folder / "data", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
