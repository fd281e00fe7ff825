"""Soak: every fault again and again for minutes on one database, then the numbers.

    pytest tests/chaos -m soak --soak [--soak-minutes 5] [--soak-db sqlite|postgresql|URL]

Each round adds records, injects one fault while they are being signed, waits
until every record is signed and checks the invariants with plain SQL; the
last round ends with `signwave verify`. It prints what was injected and
survived and the invariant counts; it asserts invariants, never times.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.chaos.cluster import Cluster, signing_starts, wait_signing_start
from tests.chaos.conftest import SlowKeys
from tests.chaos.faults import (
    Duplicator,
    PgTerminator,
    kill_group,
    kill_pool_child,
    sqlite_write_lock,
)
from tests.conftest import PG_ADMIN_URL, RedisServer
from tests.support import CeleryProcess, independent_check

FAULTS = ("kill-pool-child", "kill-worker", "stall", "redis-restart", "db-outage", "duplicates")
LEASE_TTL = 3.0
ROUND_BATCHES = 6
ROUND_TIMEOUT_S = 240.0
VIOLATIONS = (
    "double_signed",
    "wrong_key",
    "overlapping_leases",
    "signed_outside_lease",
    "lease_order_overlaps",
    "token_order_violations",
    "lease_batch_mismatch",
    "bad_lease_outcomes",
    "half_written_batches",
    "signed_leases_per_batch_errors",
)


@contextlib.contextmanager
def soak_database(choice: str, workdir: Path) -> Iterator[str]:
    """A fresh database: SQLite in ``workdir``, or a new database on a PostgreSQL server."""
    if choice == "sqlite":
        yield f"sqlite:///{workdir / 'soak.db'}"
        return
    if choice.startswith("sqlite"):
        yield choice
        return
    admin_url = PG_ADMIN_URL if choice == "postgresql" else choice
    admin_url = admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"signwave_soak_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Soak:
    def __init__(self, cluster: Cluster, batch: int) -> None:
        self.cluster = cluster
        self.batch = batch
        self.workers = [cluster.worker("w1"), cluster.worker("w2")]
        cluster.beat()
        self.turn = itertools.count()

    def victim(self) -> tuple[int, CeleryProcess]:
        i = next(self.turn) % len(self.workers)
        return i, self.workers[i]

    def mid_batch(self, proc: CeleryProcess) -> None:
        """Wait until ``proc`` starts signing a batch."""
        wait_signing_start(
            proc,
            seen=len(signing_starts(proc)),
            timeout=120,
            cluster=self.cluster,
            keep_unbatched=2 * self.batch,
        )

    def inject(self, fault: str) -> None:
        getattr(self, "_" + fault.replace("-", "_"))()

    def _kill_pool_child(self) -> None:
        _, proc = self.victim()
        self.mid_batch(proc)
        kill_pool_child(proc)

    def _kill_worker(self) -> None:
        i, proc = self.victim()
        self.mid_batch(proc)
        kill_group(proc)
        self.workers[i] = self.cluster.restart(proc)

    def _stall(self) -> None:
        _, proc = self.victim()
        self.mid_batch(proc)
        proc.signal_group(signal.SIGSTOP)
        time.sleep(LEASE_TTL + 2)
        proc.signal_group(signal.SIGCONT)

    def _redis_restart(self) -> None:
        self.mid_batch(self.victim()[1])
        self.cluster.redis.restart_empty()

    def _db_outage(self) -> None:
        self.mid_batch(self.victim()[1])
        if self.cluster.db.is_sqlite:
            with sqlite_write_lock(self.cluster.settings.database_url, 4.0):
                pass
        else:
            with PgTerminator(self.cluster.settings.database_url).running(3.0):
                pass

    def _duplicates(self) -> None:
        duplicator = Duplicator(self.cluster.settings)
        duplicator.start(seconds=ROUND_TIMEOUT_S, copies=2)
        try:
            self.cluster.wait_finished(timeout=ROUND_TIMEOUT_S)
            duplicator.result()
        finally:
            duplicator.stop()


@pytest.mark.soak
def test_soak(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path: Path,
    slow_keys: SlowKeys,
    capsys: pytest.CaptureFixture[str],
) -> None:
    minutes = float(request.config.getoption("--soak-minutes"))
    choice = str(request.config.getoption("--soak-db"))
    redis_server.flush()
    injected: Counter[str] = Counter()
    survived: Counter[str] = Counter()
    counts: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    report: dict[str, object] = {}
    started = time.monotonic()
    with soak_database(choice, tmp_path) as url:
        batch = slow_keys.records_for(1.0)
        cluster = Cluster(
            database_url=url,
            redis=redis_server,
            workdir=tmp_path,
            batch_size=batch,
            lease_ttl=LEASE_TTL,
            max_in_flight=len(slow_keys.keys),
        )
        try:
            cluster.seed(records=0, keys=slow_keys.keys)
            soak = Soak(cluster, batch)
            until = started + minutes * 60
            for fault in itertools.cycle(FAULTS):
                if time.monotonic() >= until:
                    break
                cluster.seed(records=ROUND_BATCHES * batch)
                soak.inject(fault)
                injected[fault] += 1
                cluster.wait_finished(timeout=ROUND_TIMEOUT_S, what=f"the round with {fault}")
                counts = independent_check(url)
                assert all(counts[name] == 0 for name in VIOLATIONS), (fault, counts)
                assert counts["unsigned"] == 0, (fault, counts)
                survived[fault] += 1
            report = cluster.audit()
            counts = independent_check(url)
        finally:
            with contextlib.suppress(Exception):
                outcomes = {
                    str(o): int(n)
                    for o, n in cluster.sql(
                        "SELECT outcome, count(*) FROM key_leases GROUP BY outcome"
                    )
                }
            with capsys.disabled():
                print_figures(
                    choice,
                    time.monotonic() - started,
                    injected,
                    survived,
                    counts,
                    outcomes,
                    report,
                )
            cluster.close()


def print_figures(
    choice: str,
    seconds: float,
    injected: Counter[str],
    survived: Counter[str],
    counts: dict[str, int],
    outcomes: dict[str, int],
    report: dict[str, object],
) -> None:
    verify = report.get("verify", {})
    print()
    print(f"soak on {choice}: {seconds / 60:.1f} min")
    print(f"  {'fault':<16} {'injected':>8} {'survived':>8}")
    for fault in FAULTS:
        print(f"  {fault:<16} {injected[fault]:>8} {survived[fault]:>8}")
    print(f"  {'total':<16} {sum(injected.values()):>8} {sum(survived.values()):>8}")
    print(f"  records {counts.get('records', 0)}, signed {counts.get('signatures', 0)}")
    print(f"  double signatures {counts.get('double_signed', 0)}")
    overlaps = counts.get("overlapping_leases", 0) + counts.get("lease_order_overlaps", 0)
    print(f"  overlapping leases {overlaps}")
    print(f"  lost records {counts.get('unsigned', 0)}")
    print(f"  failed batches {counts.get('failed_batches', 0)}")
    print(f"  leases by outcome {outcomes}")
    print(f"  other invariant violations {sum(counts.get(n, 0) for n in VIOLATIONS[3:])}")
    if isinstance(verify, dict):
        print(f"  signwave verify: ok={verify.get('ok')} leases={verify.get('leases')}")
    print("  " + json.dumps({"injected": injected, "survived": survived, "sql": counts}))
