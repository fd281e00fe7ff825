"""Parsed private keys, cached per worker process.

Parsing and checking an RSA key costs far more than one signature, so a
worker parses each key once. Entries are never printed: the cache's repr
shows key ids only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import rsa

from signwave.ids import KeyId
from signwave.signing import load_private_key

Loader = Callable[[KeyId], bytes]


class KeyCache:
    def __init__(self, loader: Loader, *, capacity: int = 1024) -> None:
        self._loader = loader
        self._capacity = capacity
        self._keys: OrderedDict[KeyId, rsa.RSAPrivateKey] = OrderedDict()

    def get(self, key_id: KeyId) -> rsa.RSAPrivateKey:
        key = self._keys.get(key_id)
        if key is None:
            # Keys were validated when stored; re-checking costs more than a batch.
            key = load_private_key(self._loader(key_id), validated=True)
            self._keys[key_id] = key
            if len(self._keys) > self._capacity:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key_id)
        return key

    def forget(self, key_id: KeyId) -> None:
        self._keys.pop(key_id, None)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyCache(key_ids={list(self._keys)})"
