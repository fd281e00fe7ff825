"""The Redis lock on a signing key, against a real redis-server."""

from __future__ import annotations

import functools
import time

from signwave.ids import KeyId
from signwave.lock import PREFIX, RedisKeyLock
from tests.integration.helpers import race

KEY = KeyId(7)


def pttl(lock: RedisKeyLock, key_id: KeyId = KEY) -> int:
    return int(lock.client.pttl(PREFIX + str(key_id)))


def test_acquire_sets_owner_and_ttl(key_lock: RedisKeyLock) -> None:
    assert key_lock.owner(KEY) is None

    assert key_lock.acquire(KEY, "a", 5.0)

    assert key_lock.owner(KEY) == "a"
    assert 4_000 < pttl(key_lock) <= 5_000
    assert key_lock.owner(KeyId(8)) is None, "locks of other keys are separate"


def test_acquire_without_force_fails_while_held(key_lock: RedisKeyLock) -> None:
    assert key_lock.acquire(KEY, "a", 5.0)

    assert not key_lock.acquire(KEY, "b", 60.0)
    assert not key_lock.acquire(KEY, "a", 60.0), "not re-entrant either"

    assert key_lock.owner(KEY) == "a"
    assert pttl(key_lock) <= 5_000, "a failed acquire leaves the TTL alone"


def test_forced_acquire_takes_over(key_lock: RedisKeyLock) -> None:
    assert key_lock.acquire(KEY, "dead", 60.0)

    assert key_lock.acquire(KEY, "new", 2.0, force=True)

    assert key_lock.owner(KEY) == "new"
    assert pttl(key_lock) <= 2_000


def test_release_only_by_the_owner(key_lock: RedisKeyLock) -> None:
    assert key_lock.acquire(KEY, "owner", 5.0)

    assert not key_lock.release(KEY, "intruder")
    assert key_lock.owner(KEY) == "owner"
    assert pttl(key_lock) > 0

    assert key_lock.release(KEY, "owner")
    assert key_lock.owner(KEY) is None
    assert not key_lock.release(KEY, "owner"), "a second release does nothing"


def test_handover_only_from_the_current_owner(key_lock: RedisKeyLock) -> None:
    assert key_lock.acquire(KEY, "grant", 1.0)

    assert not key_lock.handover(KEY, "someone-else", "thief", 60.0)
    assert key_lock.owner(KEY) == "grant"
    assert pttl(key_lock) <= 1_000

    assert key_lock.handover(KEY, "grant", "signer", 30.0)
    assert key_lock.owner(KEY) == "signer"
    assert 29_000 < pttl(key_lock) <= 30_000
    # The old owner has no say any more.
    assert not key_lock.handover(KEY, "grant", "grant", 30.0)
    assert not key_lock.release(KEY, "grant")
    assert key_lock.owner(KEY) == "signer"


def test_handover_to_oneself_renews(key_lock: RedisKeyLock) -> None:
    assert key_lock.acquire(KEY, "signer", 1.0)

    assert key_lock.handover(KEY, "signer", "signer", 20.0)

    assert key_lock.owner(KEY) == "signer"
    assert pttl(key_lock) > 19_000


def test_handover_recreates_a_lock_lost_with_redis_data(key_lock: RedisKeyLock) -> None:
    # The database lease, checked before, is the authority when Redis forgot the lock.
    assert key_lock.acquire(KEY, "grant", 5.0)
    key_lock.client.flushall()

    assert key_lock.handover(KEY, "grant", "signer", 5.0)

    assert key_lock.owner(KEY) == "signer"
    assert pttl(key_lock) > 0


def test_the_lock_expires(key_lock: RedisKeyLock) -> None:
    assert key_lock.acquire(KEY, "a", 0.1)

    time.sleep(0.25)

    assert key_lock.owner(KEY) is None
    assert key_lock.acquire(KEY, "b", 5.0)


def test_concurrent_acquirers_exactly_one_wins(redis_url: str) -> None:
    locks = [RedisKeyLock.from_url(redis_url) for _ in range(16)]
    try:
        for round_ in range(3):
            key_id = KeyId(100 + round_)
            won = race(
                [
                    functools.partial(lock.acquire, key_id, f"owner-{i}", 10.0)
                    for i, lock in enumerate(locks)
                ]
            )
            assert won.count(True) == 1
            assert locks[0].owner(key_id) == f"owner-{won.index(True)}"
    finally:
        for lock in locks:
            lock.client.close()


def test_lock_values_live_under_the_signwave_prefix(key_lock: RedisKeyLock) -> None:
    assert key_lock.acquire(KEY, "a", 5.0)

    assert key_lock.client.keys("*") == [f"{PREFIX}{KEY}".encode()]
