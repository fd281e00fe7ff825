"""Fault injectors: what a crash, a pause, a restart or a redelivery does to a process.

Each one acts from outside, the way the fault would: signals to real processes,
a Redis restarted empty, database sessions cut by the server, a competing
SQLite writer, messages sent again through the real broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import create_engine, make_url, text

from signwave import signing
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from tests.chaos.cluster import pool_children, wait_until
from tests.conftest import PG_ADMIN_URL
from tests.support import ROOT, CeleryProcess, child_env


def unusable_key() -> KeyMaterial:
    """An RSA key that parses but is too small for RSA-PSS with a 32-byte salt:
    every signature with it fails (as with a key row damaged after import)."""
    pem = subprocess.run(["openssl", "genrsa", "512"], capture_output=True, check=True).stdout
    return signing.material_of(signing.load_private_key(pem))


def kill_pool_child(proc: CeleryProcess) -> int:
    """SIGKILL the pool process of a prefork worker; its parent starts another."""
    children: list[int] = []

    def found() -> bool:
        children[:] = pool_children(proc)
        return bool(children)

    wait_until(found, timeout=10, interval=0.02, what="a pool process")
    os.kill(children[0], signal.SIGKILL)
    return children[0]


def kill_group(proc: CeleryProcess) -> None:
    """SIGKILL a worker and its pool processes at once."""
    proc.signal_group(signal.SIGKILL)
    proc.proc.wait(10)


@dataclass
class PgTerminator:
    """Cuts every session of one PostgreSQL database, again and again: what a
    server restart does to its clients, without touching anybody else's database."""

    database_url: str
    period: float = 0.4
    terminated: int = 0
    rounds: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def running(self, duration: float | None = None) -> Iterator[PgTerminator]:
        name = make_url(self.database_url).database
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        until = None if duration is None else time.monotonic() + duration

        def loop() -> None:
            with admin.connect() as conn:
                while not self._stop.is_set() and (until is None or time.monotonic() < until):
                    self.terminated += len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = :db AND pid <> pg_backend_pid()"
                            ),
                            {"db": name},
                        ).all()
                    )
                    self.rounds += 1
                    self._stop.wait(self.period)

        thread = threading.Thread(target=loop, name="pg-terminator", daemon=True)
        thread.start()
        try:
            yield self
            thread.join(None if until is None else max(0.0, until - time.monotonic()) + 5)
        finally:
            self._stop.set()
            thread.join(10)
            admin.dispose()


_HOLD_SQLITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


@contextlib.contextmanager
def sqlite_write_lock(database_url: str, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the SQLite write lock (BEGIN IMMEDIATE) for ``seconds``;
    the block is entered once it has the lock and left once it released it."""
    path = make_url(database_url).database
    assert path, database_url
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_SQLITE_LOCK, path, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            yield holder
            assert holder.wait(seconds + 60) == 0
        finally:
            if holder.poll() is None:
                holder.kill()


@dataclass
class Duplicator:
    """Sends ``ingest``, ``sign`` and ``emit`` messages again, through the real
    broker, to the real workers: every in-flight batch and lease, and finished ones."""

    settings: Settings
    proc: subprocess.Popen[str] | None = None

    def start(self, seconds: float, copies: int = 2) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.duplicates", str(seconds), str(copies)],
            env=child_env(self.settings),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def result(self, timeout: float = 120) -> dict[str, int]:
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return counts

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
