"""Per-process singletons: the settings (read once) and the pipeline built on them."""

from __future__ import annotations

import functools

from signwave.keycrypt import KeyCipher
from signwave.lock import RedisKeyLock
from signwave.pipeline import Pipeline
from signwave.settings import Settings
from signwave.store import Store, open_database


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def pipeline() -> Pipeline:
    s = settings()
    return Pipeline(
        # Private keys are decrypted here only, in the worker that signs with them.
        store=Store(open_database(s.database_url), cipher=KeyCipher(s.key_encryption_key)),
        lock=RedisKeyLock.from_url(s.redis_url),
        settings=s,
    )
