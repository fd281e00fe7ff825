"""The per-process cache of parsed private keys."""

from __future__ import annotations

import collections

import pytest

from signwave import signing
from signwave.ids import KeyId
from signwave.keycache import KeyCache
from signwave.signing import KeyMaterial


class CountingLoader:
    def __init__(self, pool: list[KeyMaterial]) -> None:
        self.pool = pool
        self.calls: collections.Counter[KeyId] = collections.Counter()

    def __call__(self, key_id: KeyId) -> bytes:
        self.calls[key_id] += 1
        return self.pool[key_id].private_key_pem


@pytest.fixture
def loader(key_pool: list[KeyMaterial]) -> CountingLoader:
    return CountingLoader(key_pool)


def test_loads_each_key_once(loader: CountingLoader, key_pool: list[KeyMaterial]) -> None:
    cache = KeyCache(loader)

    first = cache.get(KeyId(3))
    second = cache.get(KeyId(3))

    assert first is second
    assert loader.calls == {3: 1}
    assert signing.material_of(first).fingerprint == key_pool[3].fingerprint
    assert len(cache) == 1


def test_keys_are_kept_apart(loader: CountingLoader, key_pool: list[KeyMaterial]) -> None:
    cache = KeyCache(loader)

    a, b = cache.get(KeyId(0)), cache.get(KeyId(1))

    assert signing.material_of(a).fingerprint == key_pool[0].fingerprint
    assert signing.material_of(b).fingerprint == key_pool[1].fingerprint


def test_bounded_and_evicts_the_least_recently_used(loader: CountingLoader) -> None:
    cache = KeyCache(loader, capacity=2)
    cache.get(KeyId(1))
    cache.get(KeyId(2))
    cache.get(KeyId(1))  # 2 is now the least recently used

    cache.get(KeyId(3))

    assert len(cache) == 2
    cache.get(KeyId(1))
    assert loader.calls[KeyId(1)] == 1, "key 1 was used recently and must still be cached"
    cache.get(KeyId(2))
    assert loader.calls[KeyId(2)] == 2, "key 2 was evicted and had to be loaded again"
    assert len(cache) == 2


def test_forget_drops_a_key(loader: CountingLoader) -> None:
    cache = KeyCache(loader)
    cache.get(KeyId(5))

    cache.forget(KeyId(5))
    cache.forget(KeyId(6))  # unknown: no error

    assert len(cache) == 0
    cache.get(KeyId(5))
    assert loader.calls[KeyId(5)] == 2


def test_a_broken_key_is_not_cached() -> None:
    calls: list[KeyId] = []

    def broken(key_id: KeyId) -> bytes:
        calls.append(key_id)
        return b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"

    cache = KeyCache(broken)
    for _ in range(2):
        with pytest.raises(ValueError):
            cache.get(KeyId(1))

    assert len(cache) == 0
    assert calls == [1, 1]


def test_repr_shows_ids_and_no_key_material(
    loader: CountingLoader, key_pool: list[KeyMaterial]
) -> None:
    cache = KeyCache(loader)
    cache.get(KeyId(4))
    cache.get(KeyId(7))

    shown = repr(cache)

    assert shown == "KeyCache(key_ids=[4, 7])"
    for k in (key_pool[4], key_pool[7]):
        body = b"".join(k.private_key_pem.splitlines()[1:-1]).decode()
        assert body[40:80] not in shown
        assert "PRIVATE" not in shown
