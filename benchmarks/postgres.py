"""A PostgreSQL for the benchmarks that compare stores (`--store postgres`).

    server = start_postgres(workdir)      # PostgreSQL 16 from the pgserver wheel, durable
    url = fresh_database(server, given)   # a new database (or `given`, emptied)
    server.stop()

The server is the test suite's (tests/services.py: 127.0.0.1, a free port, password
authentication), with fsync on: the store's durability is measured, not skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def start_postgres(work: Path) -> Any:
    from tests.services import start_postgres as start

    folder = work / "postgres"
    folder.mkdir()
    work.chmod(0o755)  # the server's own user (as root: `pgserver`) must reach it
    folder.chmod(0o755)
    return start(folder, durable=True)


def fresh_database(server: Any, given: str | None = None) -> str:
    """A database of the server's, or `given` with everything in it dropped."""
    if given is None:
        return str(server.create_database())
    import psycopg

    with psycopg.connect(given, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return given
