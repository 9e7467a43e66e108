"""Which store a project uses, decided in this one place: `store:` in streamctl.yaml.

    store = open_store(project)                  # SQLite file or PostgreSQL, migrated
    store = open_store(project, readonly=True)   # a reader (the CLI, monitoring)
    store = open_location(store.path)            # replay's workers: the same store again

A `postgresql://` (or `postgres://`) URL is the shared PostgreSQL store
(streamctl.store.postgres); anything else is a SQLite file, relative to the project.
"""

from __future__ import annotations

from typing import TypeAlias

from streamctl.core.model import Project
from streamctl.store.db import Store, store_path
from streamctl.store.postgres.location import is_postgres_url
from streamctl.store.postgres.store import PostgresStore, migrate_url
from streamctl.store.schema import current_version as sqlite_version

AnyStore: TypeAlias = Store | PostgresStore


def open_store(project: Project, *, readonly: bool = False) -> AnyStore:
    if project.store_url is not None:
        return PostgresStore.open(project.store_url, readonly=readonly)
    return Store.open(store_path(project), readonly=readonly)


def open_location(
    location: str, *, node: int | None = None, checkpoints: bool = True, cache_mib: int = 64
) -> AnyStore:
    """The store at `location` (a file path or a URL), for writing: replay's workers.
    `node`: the PostgreSQL node they record for; the SQLite options: `Store.open`'s."""
    if is_postgres_url(location):
        return PostgresStore.open(location, node=node)
    return Store.open(location, checkpoints=checkpoints, cache_mib=cache_mib)


def store_location(project: Project) -> str:
    """What `open_location` takes: the URL, or the file's absolute path."""
    return project.store_url or str(store_path(project).resolve())


def store_exists(project: Project) -> bool:
    """Whether a reader finds something: a PostgreSQL store is asked when opened."""
    return project.store_url is not None or store_path(project).exists()


def migrate_store(project: Project) -> tuple[int, int]:
    """`streamctl store migrate`: (schema version before, version now)."""
    if project.store_url is not None:
        return migrate_url(project.store_url)

    path = store_path(project)
    before = 0
    if path.exists():
        with Store.open(path, readonly=True) as reader:
            before = sqlite_version(reader.db)
    with Store.open(path) as store:
        return before, sqlite_version(store.db)
