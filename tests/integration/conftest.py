"""Fixtures and plain-SQL helpers for the integration tests (real Redis, SQLite, PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import insert, text, update

from signwave.ids import BatchId
from signwave.lock import RedisKeyLock
from signwave.pipeline import Pipeline
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from signwave.store.schema import batches, records


def rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Plain SQL, so that assertions do not go through the code under test."""
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def scalar(db: Database, sql: str, **params: Any) -> Any:
    with db.read() as conn:
        return conn.execute(text(sql), params).scalar_one()


def overlapping_lease_pairs(db: Database) -> list[tuple[Any, ...]]:
    """Pairs of leases of one key whose intervals intersect (an open lease runs until expiry)."""
    return rows(
        db,
        "SELECT a.id, b.id, a.key_id FROM key_leases a JOIN key_leases b "
        "ON a.key_id = b.key_id AND a.id < b.id "
        "WHERE a.acquired_at < COALESCE(b.released_at, b.expires_at) "
        "AND b.acquired_at < COALESCE(a.released_at, a.expires_at)",
    )


def fake_keys(count: int) -> list[KeyMaterial]:
    """Key rows for tests that only count keys (claiming); they cannot sign."""
    return [
        KeyMaterial(
            private_key_pem=b"unused",
            public_key_pem=b"unused",
            fingerprint=f"{i:064x}",
            bits=2048,
        )
        for i in range(1, count + 1)
    ]


def make_pending_batches(db: Database, count: int, size: int) -> list[BatchId]:
    """Pending batches of ``size`` unbatched records each, made without the claim logic
    (which never makes more batches than there are keys)."""
    made: list[BatchId] = []
    with db.write() as conn:
        now = db.now(conn)
        for _ in range(count):
            batch_id = conn.execute(
                insert(batches)
                .values(status="pending", size=size, record_count=size, created_at=now)
                .returning(batches.c.id)
            ).scalar_one()
            ids = [
                r[0]
                for r in conn.execute(
                    text("SELECT id FROM records WHERE batch_id IS NULL ORDER BY id LIMIT :n"),
                    {"n": size},
                )
            ]
            assert len(ids) == size, "seed more records"
            conn.execute(update(records).where(records.c.id.in_(ids)).values(batch_id=batch_id))
            made.append(BatchId(batch_id))
    return made


def set_last_used(db: Database, last_used: dict[int, dt.datetime | None]) -> None:
    from signwave.store.schema import keys

    with db.write() as conn:
        for key_id, at in last_used.items():
            conn.execute(update(keys).where(keys.c.id == key_id).values(last_used_at=at))


@pytest.fixture
def key_lock(redis_url: str) -> Iterator[RedisKeyLock]:
    lock = RedisKeyLock.from_url(redis_url)
    yield lock
    lock.client.close()


def make_pipeline(store: Store, lock: RedisKeyLock, settings: Settings, **changes: Any) -> Pipeline:
    return Pipeline(store=store, lock=lock, settings=dataclasses.replace(settings, **changes))


@pytest.fixture
def pipeline(store: Store, key_lock: RedisKeyLock, settings: Settings) -> Pipeline:
    return make_pipeline(store, key_lock, settings)


__all__ = ["insert"]
