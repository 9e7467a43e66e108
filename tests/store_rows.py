"""Reading a project's SQLite store from a test, while a process may be writing it.

Polled helpers call this many times a test: each connection is closed on the way out
(sqlite3's `with connection` only commits; an unclosed one keeps its `state.db` and
`-wal` descriptors until the cyclic collector runs, and a loaded suite once passed
select()'s 1,024 that way).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any


def store_rows(path: Path | str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows `sql` selects from the SQLite file at `path`."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, list(params)).fetchall()
