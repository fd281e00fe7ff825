"""Engines for SQLite (the default) and PostgreSQL, configured for concurrent writers.

SQLite runs in WAL mode with a busy timeout, and write transactions take the
write lock up front (``BEGIN IMMEDIATE``): a deferred transaction that later
upgrades to a write fails with SQLITE_BUSY without waiting for the timeout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from signwave.errors import ConfigError, DatabaseUnavailable
from signwave.redact import redact_url

SQLITE_BUSY_TIMEOUT_S = 60.0
_WRITE = "signwave_write"
# Serialises lease decisions on PostgreSQL (SQLite's write lock does it there).
LEASE_LOCK_ID = 0x5167_4E57
# Serialises claims on PostgreSQL: the in-flight count a claim reads must not
# change before it commits, or concurrent emits overshoot the backpressure limit.
CLAIM_LOCK_ID = 0x5167_4E58


def normalise_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """An engine plus the few dialect differences the store needs."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.shown_url = redact_url(self.url)
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise ConfigError(
                f"SIGNWAVE_DATABASE_URL {self.shown_url!r} is not a database URL "
                "(try sqlite:///signwave.db or postgresql+psycopg://user@host/db)"
            ) from None
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.engine = _sqlite_engine(self.url, _file_of(parsed))
        elif parsed.get_backend_name() == "postgresql":
            self.engine = create_engine(
                self.url,
                # No pre-ping: it costs a round trip per transaction, and a
                # connection lost with a restart fails the task, which retries.
                pool_size=2,
                max_overflow=4,
                # A process paused inside a transaction (SIGSTOP) must not hold the
                # lease lock for ever: the server ends such a session after 10 s.
                connect_args={"options": "-c idle_in_transaction_session_timeout=10000"},
            )
        else:
            raise ConfigError(
                f"unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL"
            )
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        # A pooled connection must never be shared between a parent and a forked child.
        if os.getpid() != self._pid:
            self.engine.dispose(close=False)
            self._pid = os.getpid()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction."""
        self._after_fork()
        with _translate(self.shown_url), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (on SQLite, holding the write lock from its start)."""
        self._after_fork()
        with _translate(self.shown_url), self.engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def locked(
        self, *, lease_lock: bool = False, claim_lock: bool = False
    ) -> Iterator[tuple[Connection, dt.datetime]]:
        """A write transaction and the database clock read once it holds its
        locks: with ``lease_lock``, serialised with every lease decision; with
        ``claim_lock``, with every claim of new batches. On PostgreSQL the
        locks and the clock take one round trip."""
        with self.write() as conn:
            ids = [
                i
                for wanted, i in ((claim_lock, CLAIM_LOCK_ID), (lease_lock, LEASE_LOCK_ID))
                if wanted
            ]
            if self.is_sqlite or not ids:
                yield conn, self.now(conn)
                return
            # A sub-select with volatile calls is not flattened: the clock is
            # read after the locks are granted, whatever the planner does.
            held = ", ".join(f"pg_advisory_xact_lock({i})" for i in ids)
            value = conn.execute(
                text(f"SELECT clock_timestamp() FROM (SELECT {held}) AS held")
            ).scalar_one()
            yield conn, value.astimezone(dt.UTC)

    def now(self, conn: Connection) -> dt.datetime:
        """The database's clock (on SQLite, the clock of this machine, which holds the file)."""
        if self.is_sqlite:
            return dt.datetime.now(dt.UTC)
        value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        assert isinstance(value, dt.datetime)
        return value.astimezone(dt.UTC)

    def analyze(self, table: str) -> None:
        """Refresh PostgreSQL's statistics of ``table`` after a bulk load:
        with a fresh table's estimates the planner would sort every unbatched
        record for each claim, until autovacuum comes by."""
        if self.is_sqlite:
            return
        with self.write() as conn:
            conn.execute(text(f'ANALYZE "{table}"'))

    def dispose(self) -> None:
        self.engine.dispose()


@contextlib.contextmanager
def _translate(shown_url: str) -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        if _is_connect_failure(exc):
            raise DatabaseUnavailable(
                f"cannot reach the database at {shown_url}: is it running? "
                "(set SIGNWAVE_DATABASE_URL)"
            ) from None
        raise


def _is_connect_failure(exc: OperationalError) -> bool:
    if exc.connection_invalidated:
        return True
    message = str(exc.orig).lower()
    return any(
        s in message
        for s in (
            "connection refused",
            "could not connect",
            "unable to open database file",
            "connection failed",
            "server closed the connection",
            "name or service",
        )
    )


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for PostgreSQL, in-memory SQLite or a bad URL."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        return None
    return _file_of(parsed) if parsed.get_backend_name() == "sqlite" else None


def _file_of(parsed: URL) -> Path | None:
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_engine(url: str, path: Path | None) -> Engine:
    if path is not None:
        _create_private_file(path)
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # We issue BEGIN ourselves, so that write transactions can be IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (SPEC §8)."""
    if path.exists():
        return
    if path.parent and not path.parent.exists():
        raise ConfigError(
            f"cannot create the database {path}: directory {path.parent} does not exist"
        )
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)


_databases: dict[str, Database] = {}


def open_database(url: str) -> Database:
    """One `Database` per URL and process."""
    db = _databases.get(url)
    if db is None:
        db = _databases[url] = Database(url)
    return db
