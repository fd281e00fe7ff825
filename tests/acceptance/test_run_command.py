"""`signwave run`: the private Redis fallback, clean interruption, a clear error without Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil

from signwave.settings import Settings
from signwave.store import Database
from signwave.store.status import read_progress
from tests.support import ROOT, assert_all_signed_once, child_env, cli, wait_until

DEAD_REDIS = "redis://:hunter2@127.0.0.1:1/0"


def test_run_starts_a_private_redis_when_none_answers(database_url: str) -> None:
    settings = Settings(database_url=database_url, redis_url=DEAD_REDIS, lease_ttl=15)
    result = cli(
        settings, "run", "--workers", "2", "--batch-size", "200", "--records", "800", "--keys", "4"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started a private redis-server" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert_all_signed_once(database_url, 800)


def test_run_without_redis_and_without_redis_server_says_what_to_do(database_url: str) -> None:
    settings = Settings(database_url=database_url, redis_url=DEAD_REDIS)
    bare_path = os.path.dirname(sys.executable)  # python, but no redis-server
    result = cli(settings, "run", "--records", "10", "--keys", "1", PATH=bare_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in lines[0]
    assert "redis-server" in lines[0]
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def signing_run(database_url: str, redis_url: str) -> Iterator[subprocess.Popen[str]]:
    """A long `signwave run`, yielded once it has signed its first batch."""
    settings = Settings(database_url=database_url, redis_url=redis_url, lease_ttl=15)
    argv = ["run", "--workers", "1", "--batch-size", "100", "--records", "20000", "--keys", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "signwave", *argv],
        env=child_env(settings),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = Database(database_url)
    try:
        wait_until(lambda: _signed(db) > 0, timeout=120, what="signing to start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        db.dispose()


def _signed(db: Database) -> int:
    try:
        return read_progress(db).signed
    except Exception:  # the schema may not exist yet
        return 0


def _survivors(children: list[psutil.Process]) -> list[int]:
    time.sleep(0.5)
    return [c.pid for c in children if c.is_running() and c.status() != "zombie"]


def test_interrupting_run_stops_every_child(database_url: str, redis_url: str) -> None:
    with signing_run(database_url, redis_url) as proc:
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("worker" in " ".join(c.cmdline()) for c in children)
        # When the user presses Ctrl-C
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    # Then run exits 130 with a message, and no child survives it
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert _survivors(children) == []


def test_a_crashed_worker_stops_run_with_a_clear_message(database_url: str, redis_url: str) -> None:
    with signing_run(database_url, redis_url) as proc:
        children = psutil.Process(proc.pid).children(recursive=True)
        (worker,) = [c for c in psutil.Process(proc.pid).children() if "worker" in c.cmdline()]
        # When the celery worker dies under run's feet
        worker.kill()
        _, err = proc.communicate(timeout=60)
    # Then run stops the other children and says which one died
    assert proc.returncode == 1, err
    assert "signwave: error: celery worker exited with code -9" in err
    assert "Traceback" not in err
    assert _survivors(children) == []
