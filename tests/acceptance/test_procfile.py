"""`honcho start` runs the Procfile: beat, a worker and Flower, and they sign everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from signwave.settings import Settings
from signwave.store import Database
from signwave.store.status import read_progress
from tests.support import ROOT, assert_all_signed_once, child_env, cli, wait_until

RECORDS = 1200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flower_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_honcho_start_runs_beat_worker_and_flower(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        batch_size=200,
        lease_ttl=15,
        emit_interval=0.5,
    )
    assert cli(settings, "db", "init").returncode == 0
    assert cli(settings, "seed", "--records", str(RECORDS), "--keys", "4").returncode == 0
    port = _free_port()
    env = child_env(
        settings,
        SIGNWAVE_FLOWER_PORT=str(port),
        SIGNWAVE_BEAT_SCHEDULE=str(tmp_path / "beat-schedule"),
        PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
    )
    env.pop("SIGNWAVE_FLOWER_BASIC_AUTH", None)
    log = (tmp_path / "honcho.log").open("wb")
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    db = Database(database_url)
    try:
        wait_until(
            lambda: read_progress(db).signed == RECORDS,
            timeout=120,
            what="the Procfile's processes to sign every record",
        )
        wait_until(lambda: _flower_answers(port), timeout=30, what="Flower on 127.0.0.1")
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
        log.close()
        db.dispose()
    text = (tmp_path / "honcho.log").read_text(errors="replace")
    assert "beat" in text and "worker" in text and "flower" in text
    assert_all_signed_once(database_url, RECORDS)
