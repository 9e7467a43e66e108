"""Which store a project uses, decided in this one place: `store:` in streamctl.yaml.

    store = open_store(project)                  # SQLite file or PostgreSQL, migrated
    store = open_store(project, readonly=True)   # a reader (the CLI, monitoring)
    store = open_location(store_location(project), node=...)   # replay's workers
    store = open_worker_store(store_location(project), Shard(1, 2))   # run's workers
    store = open_console_store(project)          # the web console's own, with its rollups

A `postgresql://` (or `postgres://`) URL is the shared PostgreSQL store
(streamctl.store.postgres); anything else is a SQLite file, relative to the project.
Both are `streamctl.store.base.Store`s.
"""

from __future__ import annotations

from streamctl.core.model import Project
from streamctl.store.alert_state import AlertStateStore
from streamctl.store.base import ConsoleStore, Store
from streamctl.store.db import SqliteStore
from streamctl.store.postgres.location import is_postgres_url
from streamctl.store.postgres.store import AlertDatabase, PostgresStore, migrate_url
from streamctl.store.schema import current_version as sqlite_version
from streamctl.store.shard import Shard


def open_store(project: Project, *, readonly: bool = False, shared_queue: bool = False) -> Store:
    """`shared_queue`: other processes acknowledge the queue's entries (`run --workers N`),
    so its depth is counted in the store, not kept by this process."""
    if project.store_url is not None:
        return PostgresStore.open(project.store_url, readonly=readonly)
    store = SqliteStore.open(project.store_file, readonly=readonly)
    store.queue.acked_elsewhere = shared_queue
    return store


def open_console_store(project: Project) -> ConsoleStore:
    """The web console's (and `streamctl report`'s) own connection, migrated (the rollups'
    tables): reads, rollups and retry's requeue. On PostgreSQL it registers no node: it
    claims no work, and a running node claims what it requeues."""
    if project.store_url is not None:
        return PostgresStore.open(project.store_url, leases=False)
    return SqliteStore.open(project.store_file)


def open_worker_store(location: str, shard: Shard) -> Store:
    """The store of one of `run --workers N`'s processes: on SQLite, its `shard` of the
    work (streamctl.store.shard); on PostgreSQL, its own node (leases share the work)."""
    if is_postgres_url(location):
        return PostgresStore.open(location)
    return SqliteStore.open(location, checkpoints=False).for_shard(shard)


def open_location(
    location: str, *, node: int | None = None, checkpoints: bool = True, cache_mib: int = 64
) -> Store:
    """The store at `location` (a file path or a URL), for writing: replay's workers.
    `node`: the PostgreSQL node they record for; the SQLite options: `SqliteStore.open`'s."""
    if is_postgres_url(location):
        return PostgresStore.open(location, node=node)
    return SqliteStore.open(location, checkpoints=checkpoints, cache_mib=cache_mib)


def store_location(project: Project) -> str:
    """What `open_location` takes: the URL, or the file's absolute path."""
    return project.store_url or str(project.store_file.resolve())


def store_exists(project: Project) -> bool:
    """Whether a reader finds something: a PostgreSQL store is asked when opened."""
    return project.store_url is not None or project.store_file.exists()


def migrate_store(project: Project) -> tuple[int, int]:
    """`streamctl store migrate`: (schema version before, version now)."""
    if project.store_url is not None:
        return migrate_url(project.store_url)
    path = project.store_file
    before = 0
    if path.exists():
        with SqliteStore.open(path, readonly=True) as reader:
            before = sqlite_version(reader.db)
    with SqliteStore.open(path) as store:
        return before, sqlite_version(store.db)


def open_alert_state(project: Project, through: Store | None = None) -> AlertStateStore:
    """The alert state of the project's store (its `alert_state` tables). `through`: the
    project's store, already open, to read it through (PostgreSQL: its pool rather than
    one more; it stays open when the alert state is closed)."""
    if project.store_url is not None:
        if isinstance(through, PostgresStore):
            database = AlertDatabase(through, owns_store=False)
        else:
            database = AlertDatabase(PostgresStore.open(project.store_url, readonly=True))
        return AlertStateStore.on(database, database.store.location.describe())
    return AlertStateStore(project.store_file)
