"""Real services for the tests: a private redis-server per session, a fresh
SQLite file or PostgreSQL database per test.

PostgreSQL is found at SIGNWAVE_TEST_PG_URL (default: the local server, trust
auth); each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from signwave.seeding import generate_keys, random_payloads
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from signwave.store.migrate import upgrade

PG_ADMIN_URL = os.environ.get(
    "SIGNWAVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DATABASES = ["sqlite", "postgresql"]


# The soak options live here, at the root, so that `pytest --soak` works from anywhere.
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("signwave soak")
    group.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the soak tests (marked soak): faults injected over and over for minutes",
    )
    group.addoption(
        "--soak-minutes",
        type=float,
        default=5.0,
        help="how long the soak injects faults (default 5)",
    )
    group.addoption(
        "--soak-db",
        default="sqlite",
        help="database of the soak: sqlite, postgresql, or the URL of a PostgreSQL server "
        "on which a fresh database is created (default sqlite)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak = [item for item in items if "soak" in item.keywords]
    if not config.getoption("--soak"):
        for item in soak:
            item.add_marker(pytest.mark.skip(reason="soak test: run with --soak"))
        return
    # The soak runs for as long as asked, plus its last rounds and the final verify.
    minutes = float(config.getoption("--soak-minutes"))
    for item in soak:
        item.add_marker(pytest.mark.timeout(minutes * 60 + 900))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of the test session's own, which tests may restart empty."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def listen_args(self) -> list[str]:
        return ["--port", str(self.port)]

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                binary,
                *self.listen_args(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    pytest.fail(f"redis-server {' '.join(self.listen_args())} exited at start")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart_empty(self) -> None:
        self.stop(kill=True)
        self.start()

    def flush(self) -> None:
        redis.Redis.from_url(self.url).flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    name = f"signwave_test_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind; every test that uses it runs twice."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'signwave.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def store(db: Database) -> Store:
    return Store(db)


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, batch_size=100, lease_ttl=10.0)


@pytest.fixture(scope="session")
def key_pool() -> list[KeyMaterial]:
    """RSA-2048 keys generated once per session: key generation is slow."""
    return generate_keys(16)


def seed(store: Store, key_pool: list[KeyMaterial], *, records: int, keys: int) -> None:
    assert keys <= len(key_pool)
    store.add_keys(key_pool[:keys])
    store.add_records(random_payloads(records))
