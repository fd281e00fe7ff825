"""Shared pieces of the benchmarks: raw signing rate, a fresh database, a real run."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, text

from signwave import signing
from signwave.seeding import generate_keys, random_payloads
from signwave.settings import Settings
from signwave.store import Database, Store
from signwave.store.migrate import upgrade
from signwave.store.status import read_progress

ROOT = Path(__file__).resolve().parent.parent


def _sign_for(args: tuple[bytes, int, int]) -> int:
    pem, count, size = args
    key = signing.load_private_key(pem)
    payloads = [os.urandom(size) for _ in range(256)]
    for i in range(count):
        signing.sign(key, payloads[i % 256])
    return count


def raw_sign_rate(processes: int, count: int, bits: int = 2048) -> float:
    """Signatures per second of `processes` processes doing nothing but RSA-PSS signing."""
    pem = generate_keys(1, bits)[0].private_key_pem
    per = max(1, count // processes)
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_sign_for, [(pem, 50, 64)] * processes))  # warm up
        started = time.perf_counter()
        done = sum(pool.map(_sign_for, [(pem, per, 64)] * processes))
        return done / (time.perf_counter() - started)


@contextlib.contextmanager
def fresh_database(url: str | None) -> Iterator[str]:
    """A new empty database: a temporary SQLite file, or a new PostgreSQL database
    on the server of ``url`` (dropped afterwards)."""
    if url is None or url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="signwave-bench-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    admin_url = url if "+psycopg" in url else url.replace("postgresql://", "postgresql+psycopg://")
    name = f"signwave_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed(url: str, records: int, keys: int) -> float:
    """Seed through the real CLI; return its wall time."""
    env = {**os.environ, "SIGNWAVE_DATABASE_URL": url}
    started = time.perf_counter()
    for args in (["db", "init"], ["seed", "--records", str(records), "--keys", str(keys)]):
        subprocess.run(
            [sys.executable, "-m", "signwave", *args],
            env=env,
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    return time.perf_counter() - started


def seed_in_process(url: str, records: int, keys: int) -> None:
    db = Database(url)
    upgrade(db)
    store = Store(db)
    store.add_keys(generate_keys(keys))
    store.add_records(random_payloads(records))
    db.dispose()


def cpu_jiffies() -> tuple[int, int, int]:
    """(total, idle + iowait, steal) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal
    fields = (fields + [0] * 8)[:8]
    return sum(fields), fields[3] + fields[4], fields[7]


def rss_kib(pid: int) -> int:
    """Peak resident set (VmHWM) of a process and its children, in KiB."""
    total = 0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
    return total


def _children(pid: int) -> list[int]:
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    kids = [int(c) for c in out]
    return kids + [g for c in kids for g in _children(c)]


def run_workers(
    settings: Settings, records: int, workers: int, *, timeout: float = 3600
) -> dict[str, float]:
    """Run real celery worker + beat processes until every record is signed.

    Returns the end-to-end window measured from the tables (first lease acquired
    to last signature committed) and the peak RSS of the worker processes.
    """
    env = {**os.environ, **settings.to_env()}
    celery = [sys.executable, "-m", "celery", "-A", "signwave"]
    with tempfile.TemporaryDirectory(prefix="signwave-bench-") as tmp:
        logs = [open(Path(tmp) / f"{n}.log", "wb") for n in ("worker", "beat")]
        worker = subprocess.Popen(
            [
                *celery,
                "worker",
                "--concurrency",
                str(workers),
                "--pool",
                "prefork",
                "--queues",
                "signwave,signing",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
                "--hostname",
                f"bench-{os.getpid()}@%h",
            ],
            env=env,
            stdout=logs[0],
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        beat = subprocess.Popen(
            [*celery, "beat", "--schedule", f"{tmp}/schedule", "--loglevel", "WARNING"],
            env=env,
            stdout=logs[1],
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        db = Database(settings.database_url)
        peak = 0
        cpu_before = cpu_jiffies()
        try:
            deadline = time.monotonic() + timeout
            while read_progress(db).signed < records:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"run did not finish; see {tmp}/worker.log")
                peak = max(peak, rss_kib(worker.pid))
                time.sleep(0.5)
            peak = max(peak, rss_kib(worker.pid))
            cpu_after = cpu_jiffies()
        finally:
            for proc in (beat, worker):
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
                if proc.poll() is None:
                    proc.kill()
            for f in logs:
                f.close()
        with db.read() as conn:
            first, last = conn.execute(
                text(
                    "SELECT (SELECT min(acquired_at) FROM key_leases), "
                    "(SELECT max(signed_at) FROM batches)"
                )
            ).one()
        db.dispose()
    from signwave.store.schema import UTCDateTime

    parse = UTCDateTime().process_result_value
    start = parse(first, db.engine.dialect)
    end = parse(last, db.engine.dialect)
    assert start is not None and end is not None
    total = max(1, cpu_after[0] - cpu_before[0])
    return {
        "seconds": (end - start).total_seconds(),
        "worker_peak_rss_kib": float(peak),
        # Shares of all CPU time while the run went on: idle time is lost
        # throughput; steal is time the hypervisor gave to other machines.
        "cpu_idle": (cpu_after[1] - cpu_before[1]) / total,
        "cpu_steal": (cpu_after[2] - cpu_before[2]) / total,
    }
