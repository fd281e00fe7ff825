"""A signwave cluster of real processes to inject faults into.

Real `celery worker` and `celery beat` processes, the test session's private
redis-server (broker and key locks) and a real database. The test process only
seeds, injects faults and reads the tables; it never signs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from signwave.errors import SignwaveError
from signwave.seeding import random_payloads
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from signwave.store.migrate import upgrade
from tests.conftest import RedisServer
from tests.support import CeleryProcess, assert_all_signed_once, cli, independent_check

SIGNING = re.compile(r"batch (\d+): signing (\d+) records with key (\d+) under lease (\d+)")
READY = re.compile(r"celery@\S+ ready\.")

# Short enough for CI: a dead holder's batch is taken up again within seconds.
CHAOS_DEFAULTS: dict[str, Any] = {
    "batch_size": 100,
    "lease_ttl": 3.0,
    "emit_interval": 0.5,
    "max_in_flight": 4,
    "redispatch_after": 2.0,
    "max_attempts": 3,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SigningStart:
    """A worker's log line saying it started signing a batch under a lease."""

    batch_id: int
    records: int
    key_id: int
    token: int


class Cluster:
    def __init__(
        self, *, database_url: str, redis: RedisServer, workdir: Path, **overrides: Any
    ) -> None:
        self.redis = redis
        self.workdir = workdir
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis.url,
            **{**CHAOS_DEFAULTS, **overrides},
        )
        self.db = Database(database_url)
        upgrade(self.db)
        self.store = Store(self.db)
        self.records = 0
        self.procs: list[CeleryProcess] = []
        self._names: dict[str, int] = {}

    # -- setup ---------------------------------------------------------------

    def seed(self, *, records: int, keys: list[KeyMaterial] | None = None) -> None:
        if keys:
            self.store.add_keys(keys)
        self.records += self.store.add_records(random_payloads(records))

    def top_up(self, unbatched: int) -> None:
        """Add records until at least ``unbatched`` are waiting for a batch."""
        waiting = self.tolerant_scalar(
            "SELECT count(*) FROM records WHERE batch_id IS NULL", default=unbatched
        )
        if waiting < unbatched:
            self.seed(records=unbatched - int(waiting))

    def worker(self, name: str, *, concurrency: int = 1, **extra: str) -> CeleryProcess:
        proc = CeleryProcess.worker(
            self.settings, self._log(name), name=name, concurrency=concurrency, **extra
        )
        self.procs.append(proc)
        return proc

    def beat(self, name: str = "beat") -> CeleryProcess:
        proc = CeleryProcess.beat(self.settings, self._log(name))
        self.procs.append(proc)
        return proc

    def restart(self, proc: CeleryProcess, *, concurrency: int = 1) -> CeleryProcess:
        """A new worker in place of ``proc`` (which must be dead), logging to the same file."""
        proc.stop()
        self.procs.remove(proc)
        name = proc.log.stem.split(".")[0]
        new = CeleryProcess.worker(self.settings, proc.log, name=name, concurrency=concurrency)
        self.procs.append(new)
        return new

    def _log(self, name: str) -> Path:
        n = self._names[name] = self._names.get(name, 0) + 1
        return self.workdir / (f"{name}.log" if n == 1 else f"{name}.{n}.log")

    def close(self) -> None:
        # The test has made its checks: no need for a warm shutdown (which a
        # stopped process would not even begin).
        for proc in self.procs:
            proc.signal_group(signal.SIGKILL)
        for proc in self.procs:
            proc.stop(timeout=10)
        self.db.dispose()

    # -- reading -------------------------------------------------------------

    def sql(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """Plain SQL against the tables, not through the code under test."""
        with self.db.read() as conn:
            return [tuple(r) for r in conn.execute(text(statement), params)]

    def scalar(self, statement: str, **params: Any) -> Any:
        return self.sql(statement, **params)[0][0]

    def tolerant_scalar(self, statement: str, default: Any = None, **params: Any) -> Any:
        """Like `scalar`, but a database under fault injection may not answer."""
        try:
            return self.scalar(statement, **params)
        except (OperationalError, SignwaveError):
            return default

    def signed(self) -> int:
        value = self.tolerant_scalar("SELECT count(*) FROM signatures", default=-1)
        return int(value)

    def finished(self) -> bool:
        """Every record is signed or in a failed batch, and no batch is in flight."""
        return bool(
            self.tolerant_scalar(
                "SELECT (SELECT count(*) FROM records r WHERE r.batch_id IS NULL "
                "OR r.batch_id IN (SELECT id FROM batches WHERE status IN ('pending', 'leased'))) "
                "= 0",
                default=False,
            )
        )

    def wait_finished(self, timeout: float, what: str = "the run to finish") -> None:
        wait_until(self.finished, timeout=timeout, what=what)

    def wait_signed(self, at_least: int, timeout: float) -> None:
        wait_until(
            lambda: self.signed() >= at_least,
            timeout=timeout,
            what=f"{at_least} signatures",
        )

    def lease(self, key_id: int, token: int) -> dict[str, Any]:
        row = self.sql(
            "SELECT batch_id, acquired_at, expires_at, released_at, outcome, error "
            "FROM key_leases WHERE key_id = :k AND token = :t",
            k=key_id,
            t=token,
        )
        assert row, f"no lease {token} of key {key_id} in key_leases"
        names = ("batch_id", "acquired_at", "expires_at", "released_at", "outcome", "error")
        return dict(zip(names, row[0], strict=True))

    # -- audit ---------------------------------------------------------------

    def audit(self, *, expected_failed: bool = False) -> dict[str, Any]:
        """Every guarantee, checked twice: plain SQL, then `signwave verify --json`."""
        counts = independent_check(self.settings.database_url)
        assert counts["open_leases"] == 0, counts
        assert counts["keys_leased"] == 0, counts
        if not expected_failed:
            assert_all_signed_once(self.settings.database_url, self.records)
            assert counts["failed_batches"] == 0, counts
        result = cli(self.settings, "verify", "--json", timeout=120)
        report: dict[str, Any] = json.loads(result.stdout)
        if expected_failed:
            assert result.returncode != 0, result.stdout + result.stderr
        else:
            assert result.returncode == 0, result.stdout + result.stderr
            assert report["ok"], report
            assert report["signatures"] == self.records, report
        for name in (
            "duplicate_signatures",
            "overlapping_leases",
            "signatures_outside_lease",
            "signatures_with_wrong_key",
            "lru_violations",
            "batch_size_violations",
            "unsigned_records",
            "invalid_signatures",
        ):
            assert report["violations"][name] == 0, report
        return {"sql": counts, "verify": report}


def timestamp(value: Any) -> dt.datetime:
    """A timestamp read with plain SQL: text on SQLite, a datetime on PostgreSQL."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def renewed_leases(cluster: Cluster, ttl: float) -> int:
    """Signed leases whose expiry was pushed well past one TTL after they were
    granted: only a renewal while signing does that."""
    return sum(
        1
        for acquired_at, expires_at in cluster.sql(
            "SELECT acquired_at, expires_at FROM key_leases WHERE outcome = 'signed'"
        )
        if (timestamp(expires_at) - timestamp(acquired_at)).total_seconds() > 1.3 * ttl
    )


def wait_until(predicate: Any, *, timeout: float, interval: float = 0.1, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def signing_starts(proc: CeleryProcess) -> list[SigningStart]:
    return [
        SigningStart(batch_id=int(m[1]), records=int(m[2]), key_id=int(m[3]), token=int(m[4]))
        for m in SIGNING.finditer(proc.text())
    ]


def wait_signing_start(
    proc: CeleryProcess,
    *,
    seen: int,
    timeout: float,
    cluster: Cluster | None = None,
    keep_unbatched: int = 0,
) -> SigningStart:
    """The first signing start in ``proc``'s log after the ``seen`` ones already known.

    With ``cluster``, adds records whenever fewer than ``keep_unbatched`` wait
    for a batch, so that the run cannot end before ``proc`` takes one.
    """
    found: list[SigningStart] = []

    def started() -> bool:
        found[:] = signing_starts(proc)
        if len(found) > seen:
            return True
        if cluster is not None:
            cluster.top_up(keep_unbatched)
        return False

    wait_until(started, timeout=timeout, interval=0.02, what=f"a batch started by {proc.log.name}")
    return found[seen]


def wait_ready(*procs: CeleryProcess, timeout: float = 60) -> None:
    for proc in procs:
        wait_until(
            lambda p=proc: READY.search(p.text()) is not None,
            timeout=timeout,
            what=f"{proc.log.name} to be ready",
        )


def pool_children(proc: CeleryProcess) -> list[int]:
    """Pids of a prefork worker's pool processes."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return [c.pid for c in psutil.Process(proc.pid).children()]
    return []


@contextlib.contextmanager
def log_offset(proc: CeleryProcess) -> Iterator[list[str]]:
    """Collect what ``proc`` logs inside the block."""
    start = len(proc.text())
    lines: list[str] = []
    yield lines
    lines.extend(proc.text()[start:].splitlines())
