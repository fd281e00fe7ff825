"""Random payloads and new keys for `signwave seed`; keys are generated on every core."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from signwave.signing import MIN_KEY_BITS, KeyMaterial, generate_key

PAYLOAD_BYTES = 64


def generate_keys(count: int, bits: int = MIN_KEY_BITS) -> list[KeyMaterial]:
    if count <= 0:
        return []
    workers = min(count, os.cpu_count() or 1)
    if workers == 1:
        return [generate_key(bits) for _ in range(count)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(generate_key, [bits] * count, chunksize=max(1, count // workers)))


def random_payloads(count: int, size: int = PAYLOAD_BYTES) -> Iterator[bytes]:
    for _ in range(count):
        yield os.urandom(size)
