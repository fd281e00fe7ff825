"""Fault injection with real processes: options for the soak mode, the cluster fixture."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from signwave import signing
from signwave.seeding import generate_keys
from signwave.signing import KeyMaterial
from tests.chaos.cluster import Cluster
from tests.conftest import RedisServer

SLOW_KEY_BITS = 4096


@pytest.fixture
def make_cluster(
    database_url: str, redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Callable[..., Cluster]]:
    """Build the test's cluster with settings overrides; its processes die with the test."""
    made: list[Cluster] = []

    def make(**overrides: Any) -> Cluster:
        cluster = Cluster(
            database_url=database_url, redis=redis_server, workdir=tmp_path, **overrides
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


class SlowKeys:
    """RSA-4096 keys: signing with them is slow enough for a fault to land mid-batch."""

    def __init__(self, keys: list[KeyMaterial]) -> None:
        self.keys = keys
        key = signing.load_private_key(keys[0].private_key_pem)
        # The fastest of a few rounds: measured while other tests load the
        # machine, a slow round would make batches shorter than meant.
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(8):
                signing.sign(key, b"x" * 64)
            rounds.append((time.perf_counter() - started) / 8)
        self.seconds_per_signature = min(rounds)

    def records_for(self, seconds: float) -> int:
        """How many records one batch needs to take about ``seconds`` to sign here."""
        return max(50, int(seconds / self.seconds_per_signature))


@pytest.fixture(scope="session")
def slow_keys() -> SlowKeys:
    return SlowKeys(generate_keys(3, SLOW_KEY_BITS))
