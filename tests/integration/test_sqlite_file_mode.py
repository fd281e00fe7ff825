"""The SQLite file, and its -wal and -shm companions, are readable by their owner only (SPEC §8).

SQLite-only by nature: PostgreSQL keeps its files to itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from signwave.settings import Settings
from signwave.store import Database, Store
from signwave.store.migrate import upgrade
from tests.support import cli


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    # The usual umask, under which a file created without care is world-readable.
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_database_wal_and_shm_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "signwave.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    Store(db).add_records([b"x"] * 10)
    # While a connection is open, SQLite keeps the -wal and -shm files.
    with db.engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM records")).scalar_one()
        companions = [Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(p.exists() for p in companions)
        assert {p.name: mode(p) for p in [path, *companions]} == {
            "signwave.db": 0o600,
            "signwave.db-wal": 0o600,
            "signwave.db-shm": 0o600,
        }
    db.dispose()


@pytest.mark.usefixtures("permissive_umask")
def test_db_init_creates_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"

    result = cli(Settings(database_url=f"sqlite:///{path}"), "db", "init")

    assert result.returncode == 0, result.stderr
    assert mode(path) == 0o600
