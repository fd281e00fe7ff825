"""The real CLI and real Celery workers sign a few thousand records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signwave.settings import Settings
from signwave.store import Database
from signwave.store.status import read_progress
from tests.support import (
    SIGN_SUCCEEDED,
    CeleryProcess,
    assert_all_signed_once,
    cli,
    running,
    wait_until,
)

RECORDS = 3000


def test_celery_workers_and_beat_sign_every_record_once(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        batch_size=200,
        lease_ttl=15,
        emit_interval=0.5,
        max_in_flight=4,
    )
    # Given a database initialised and seeded through the CLI
    assert cli(settings, "db", "init").returncode == 0
    seeded = cli(settings, "seed", "--records", str(RECORDS), "--keys", "8")
    assert seeded.returncode == 0, seeded.stderr
    # When two workers and beat run
    db = Database(database_url)
    with running(
        CeleryProcess.worker(settings, tmp_path / "w1.log", name="w1"),
        CeleryProcess.worker(settings, tmp_path / "w2.log", name="w2"),
        CeleryProcess.beat(settings, tmp_path / "beat.log"),
    ) as procs:
        wait_until(
            lambda: read_progress(db).signed == RECORDS, timeout=120, what="every record signed"
        )
    # Then both workers took part, sign tasks went on with batches their
    # commits leased to them, verify passes, and plain SQL agrees
    assert all("signed with key" in p.text() for p in procs[:2])
    assert any("batches its commits leased on" in p.text() for p in procs[:2])
    result = cli(settings, "verify", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["signatures"] == RECORDS
    assert report["batch_sizes"] == [200]
    assert_all_signed_once(database_url, RECORDS)
    db.dispose()


def test_signwave_run_signs_everything_and_verifies(database_url: str, redis_url: str) -> None:
    settings = Settings(database_url=database_url, redis_url=redis_url, lease_ttl=15)
    result = cli(
        settings, "run", "--workers", "2", "--batch-size", "250", "--records", "2000", "--keys", "6"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: all guarantees hold" in result.stdout
    assert "signed 2000 records" in result.stdout
    assert_all_signed_once(database_url, 2000)


@pytest.mark.parametrize("chain_seconds", [0.0, 2.0])
def test_sign_tasks_chain_for_the_time_set(
    redis_url: str, tmp_path: Path, chain_seconds: float
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'chain.db'}",
        redis_url=redis_url,
        batch_size=100,
        emit_interval=0.5,
        max_in_flight=2,
        chain_seconds=chain_seconds,
    )
    batches = 15
    # Given a database seeded through the CLI
    assert cli(settings, "db", "init").returncode == 0
    seeded = cli(settings, "seed", "--records", str(100 * batches), "--keys", "4")
    assert seeded.returncode == 0, seeded.stderr
    # When one worker and beat run with SIGNWAVE_CHAIN_SECONDS set
    db = Database(settings.database_url)
    with running(
        CeleryProcess.worker(settings, tmp_path / "w.log", name="w"),
        CeleryProcess.beat(settings, tmp_path / "beat.log"),
    ) as (worker, _beat):
        wait_until(
            lambda: read_progress(db).signed == 100 * batches,
            timeout=60,
            what="every record signed",
        )
        # (a task's "succeeded" line comes a little after its last commit)
        chained = chain_seconds > 0

        def logged() -> bool:
            log = worker.text()
            if chained:
                return (
                    "batches its commits leased on" in log
                    and SIGN_SUCCEEDED.search(log) is not None
                )
            return len(SIGN_SUCCEEDED.findall(log)) >= batches

        wait_until(logged, timeout=30, what="the sign tasks' ends logged")
        log = worker.text()
    # Then with chains off every batch took a sign message of its own, and
    # with chains on a sign task went on with the batches its commits leased
    sign_tasks = len(SIGN_SUCCEEDED.findall(log))
    if chained:
        assert sign_tasks < batches, log
    else:
        assert sign_tasks >= batches, log
        assert "batches its commits leased on" not in log
    assert_all_signed_once(settings.database_url, 100 * batches)
