"""Helpers for tests that run real processes: celery workers, beat, the CLI."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import create_engine, text

from signwave.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# What a worker logs at INFO when a sign task (one message) has ended.
SIGN_SUCCEEDED = re.compile(r"Task signwave\.sign\[[0-9a-f-]+\] succeeded")


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {**os.environ, **settings.to_env(), **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def cli(
    settings: Settings, *args: str, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the real `signwave` command line."""
    return subprocess.run(
        [sys.executable, "-m", "signwave", *args],
        env=child_env(settings, **extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class CeleryProcess:
    """A real `celery -A signwave ...` process, logging to a file."""

    def __init__(
        self, settings: Settings, args: list[str], log: Path, *, cwd: Path = ROOT, **extra: str
    ) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "signwave", *args],
            env=child_env(settings, **extra),
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @classmethod
    def worker(
        cls,
        settings: Settings,
        log: Path,
        *,
        concurrency: int = 1,
        name: str = "w",
        queues: str = "signwave,signing",
        pool: str = "prefork",
        **extra: str,
    ) -> CeleryProcess:
        return cls(
            settings,
            [
                "worker",
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--queues",
                queues,
                "--hostname",
                f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            log,
            **extra,
        )

    @classmethod
    def beat(cls, settings: Settings, log: Path, **extra: str) -> CeleryProcess:
        schedule = log.with_suffix(".schedule")
        return cls(
            settings, ["beat", "--schedule", str(schedule), "--loglevel", "INFO"], log, **extra
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait()
        self.signal_group(signal.SIGKILL)  # stray pool children
        self._out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running(*procs: CeleryProcess) -> Iterator[tuple[CeleryProcess, ...]]:
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


LEASE_INVARIANTS = (
    "lease_order_overlaps",
    "token_order_violations",
    "lease_batch_mismatch",
    "bad_lease_outcomes",
    "half_written_batches",
    "signed_leases_per_batch_errors",
)


def independent_check(database_url: str) -> dict[str, int]:
    """Count violations with plain SQL, without any signwave code."""
    url = database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    engine = create_engine(url)
    with engine.connect() as conn:
        q = lambda sql: int(conn.execute(text(sql)).scalar_one())  # noqa: E731
        result = {
            "records": q("SELECT count(*) FROM records"),
            "signatures": q("SELECT count(*) FROM signatures"),
            "unsigned": q(
                "SELECT count(*) FROM records r LEFT JOIN signatures s ON s.record_id = r.id "
                "WHERE s.record_id IS NULL"
            ),
            "double_signed": q(
                "SELECT count(*) FROM (SELECT record_id FROM signatures GROUP BY record_id "
                "HAVING count(*) > 1) d"
            ),
            "wrong_key": q(
                "SELECT count(*) FROM signatures s JOIN batches b ON b.id = s.batch_id "
                "WHERE s.key_id <> b.key_id"
            ),
            "overlapping_leases": q(
                "SELECT count(*) FROM key_leases a JOIN key_leases b "
                "ON a.key_id = b.key_id AND a.id < b.id "
                "WHERE a.acquired_at < COALESCE(b.released_at, b.expires_at) "
                "AND b.acquired_at < COALESCE(a.released_at, a.expires_at)"
            ),
            "signed_outside_lease": q(
                "SELECT count(*) FROM signatures s LEFT JOIN key_leases l "
                "ON l.key_id = s.key_id AND l.token = s.lease_token "
                "WHERE l.id IS NULL OR s.signed_at > l.released_at OR s.signed_at < l.acquired_at"
            ),
            # Each key's leases in order of acquisition: every one begins after the
            # previous one ended (an open lease runs until its expiry)...
            "lease_order_overlaps": q(
                "SELECT count(*) FROM (SELECT acquired_at, LAG(COALESCE(released_at, expires_at)) "
                "OVER (PARTITION BY key_id ORDER BY acquired_at, id) AS prev_end "
                "FROM key_leases) t WHERE prev_end IS NOT NULL AND acquired_at < prev_end"
            ),
            # ...and carries a higher fencing token.
            "token_order_violations": q(
                "SELECT count(*) FROM (SELECT token, LAG(token) "
                "OVER (PARTITION BY key_id ORDER BY acquired_at, id) AS prev "
                "FROM key_leases) t WHERE prev IS NOT NULL AND token <= prev"
            ),
            "lease_batch_mismatch": q(
                "SELECT count(*) FROM signatures s JOIN key_leases l "
                "ON l.key_id = s.key_id AND l.token = s.lease_token "
                "WHERE l.batch_id <> s.batch_id OR COALESCE(l.outcome, '') <> 'signed'"
            ),
            "bad_lease_outcomes": q(
                "SELECT count(*) FROM key_leases "
                "WHERE (released_at IS NULL AND outcome IS NOT NULL) "
                "OR (released_at IS NOT NULL AND (outcome IS NULL "
                "OR outcome NOT IN ('signed', 'expired', 'failed')))"
            ),
            # A batch is all signed or not signed at all, by exactly one lease.
            "half_written_batches": q(
                "SELECT count(*) FROM batches b LEFT JOIN (SELECT batch_id, count(*) AS n "
                "FROM signatures GROUP BY batch_id) s ON s.batch_id = b.id "
                "WHERE (b.status = 'signed' AND COALESCE(s.n, 0) <> b.record_count) "
                "OR (b.status <> 'signed' AND COALESCE(s.n, 0) > 0)"
            ),
            "signed_leases_per_batch_errors": q(
                "SELECT count(*) FROM batches b LEFT JOIN (SELECT batch_id, count(*) AS n "
                "FROM key_leases WHERE outcome = 'signed' GROUP BY batch_id) l "
                "ON l.batch_id = b.id "
                "WHERE COALESCE(l.n, 0) <> CASE WHEN b.status = 'signed' THEN 1 ELSE 0 END"
            ),
            # Not violations while a run is going on; none may be left once it is over.
            "open_leases": q("SELECT count(*) FROM key_leases WHERE released_at IS NULL"),
            "keys_leased": q("SELECT count(*) FROM keys WHERE lease_token IS NOT NULL"),
            "failed_batches": q("SELECT count(*) FROM batches WHERE status = 'failed'"),
        }
    engine.dispose()
    return result


def assert_all_signed_once(database_url: str, expected_records: int) -> dict[str, int]:
    counts = independent_check(database_url)
    assert counts["records"] == expected_records, counts
    assert counts["signatures"] == expected_records, counts
    for name in (
        "unsigned",
        "double_signed",
        "wrong_key",
        "overlapping_leases",
        "signed_outside_lease",
        *LEASE_INVARIANTS,
    ):
        assert counts[name] == 0, counts
    return counts
