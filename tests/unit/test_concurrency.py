"""How many signing processes start by default: one more than the CPUs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from signwave.runner import Runner
from signwave.settings import Settings, signing_processes
from signwave.store.engine import Database
from tests.support import ROOT


def test_one_process_more_than_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)

    assert signing_processes() == 7
    assert Settings().in_flight_limit == 14
    assert Settings(max_in_flight=3).in_flight_limit == 3


def test_an_unknown_cpu_count_means_one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)

    assert signing_processes() == 2


def test_run_starts_that_many_unless_told() -> None:
    db = Database("sqlite://")
    try:
        assert Runner(Settings(), db, workers=None).workers == (os.cpu_count() or 1) + 1
        assert Runner(Settings(), db, workers=2).workers == 2
    finally:
        db.dispose()


def test_a_plain_celery_worker_starts_that_many() -> None:
    # celeryconfig is read once per process: read it in a process of its own.
    probe = "from signwave.celery import app; print(app.conf.worker_concurrency)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    assert int(out.stdout) == (os.cpu_count() or 1) + 1
