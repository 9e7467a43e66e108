"""Where a PostgreSQL store is: `store: postgresql://USER:PASSWORD@HOST:PORT/DB` (docs/store.md).

    location = parse_location("postgresql://streamctl:s3cret@db.internal:5432/events?lease=30s")
    location.conninfo        # for psycopg: streamctl's own parameters removed
    location.describe()      # "database 'events' on db.internal:5432 as streamctl": no password

Besides libpq's own query parameters (sslmode, connect_timeout, options, ...) the
URL may carry streamctl's, which are taken out before it reaches libpq:

| parameter | default | |
| --- | --- | --- |
| `lease` | 30s | how long a process's claim on deliveries and queue rows outlives its last heartbeat |
| `pool_size` | 4 | connections one process keeps at most (replay workers: one each) |
| `statement_timeout` | 60s | per statement, so a stuck query or lock wait ends in an error instead of a hang |
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamctl.core.errors import StoreError
from streamctl.core.units import parse_duration

SCHEMES = ("postgresql", "postgres")
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_POOL_SIZE = 4
DEFAULT_STATEMENT_TIMEOUT = 60.0


def is_postgres_url(text: str) -> bool:
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


@dataclass(frozen=True)
class PostgresLocation:
    conninfo: str  # the URL libpq gets
    host: str
    port: int
    database: str
    user: str
    password: str | None
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    pool_size: int = DEFAULT_POOL_SIZE
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    url: str = ""  # as written, streamctl's parameters included (replay's workers get it)

    def describe(self) -> str:
        """Host and database, never the password: for every message about the store."""
        return f"database {self.database!r} on {self.host}:{self.port} as {self.user}"

    def redact(self, text: str) -> str:
        """`text` with the password (if any) replaced: libpq's messages may quote the URL."""
        if self.password:
            text = text.replace(self.password, "***")
        return text


def parse_location(url: str) -> PostgresLocation:
    """A store URL, checked: scheme, database name and streamctl's parameters."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        msg = f"store: {parts.scheme!r} is not a PostgreSQL URL (postgresql://USER:PASSWORD@HOST:PORT/DB)"
        raise StoreError(msg)
    database = parts.path.lstrip("/")
    if not database:
        msg = (
            "store: the PostgreSQL URL names no database (postgresql://USER:PASSWORD@HOST:PORT/DB)"
        )
        raise StoreError(msg)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(key, value) if key in _OURS else theirs.append((key, value)))
    try:
        port = parts.port or 5432
        lease = _seconds(ours.get("lease"), DEFAULT_LEASE_SECONDS)
        timeout = _seconds(ours.get("statement_timeout"), DEFAULT_STATEMENT_TIMEOUT)
        pool = int(ours.get("pool_size") or DEFAULT_POOL_SIZE)
    except ValueError as exc:
        password = parts.password
        text = str(exc) if not password else str(exc).replace(password, "***")
        raise StoreError(f"store: {text}") from None
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(theirs), ""))
    return PostgresLocation(
        conninfo=conninfo,
        host=parts.hostname or "localhost",
        port=port,
        database=database,
        user=parts.username or "",
        password=parts.password,
        lease_seconds=lease,
        pool_size=max(2, pool),
        statement_timeout=timeout,
        url=url,
    )


_OURS = frozenset({"lease", "pool_size", "statement_timeout"})


def _seconds(text: str | None, default: float) -> float:
    """`30`, `30s`, `500ms`, `2m`: seconds."""
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)
