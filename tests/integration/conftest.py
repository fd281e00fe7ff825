"""Fixtures for the integration tests: real Redis, a real SQLite file, real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from signwave.lock import RedisKeyLock
from signwave.pipeline import Pipeline
from signwave.settings import Settings
from signwave.store import Store


@pytest.fixture
def key_lock(redis_url: str) -> Iterator[RedisKeyLock]:
    lock = RedisKeyLock.from_url(redis_url)
    yield lock
    lock.client.close()


@pytest.fixture
def pipeline(store: Store, key_lock: RedisKeyLock, settings: Settings) -> Pipeline:
    return Pipeline(store=store, lock=key_lock, settings=settings)
