"""Fault paths of Pipeline.sign against real databases and Redis: a renewal refused
because the key was leased again meanwhile, and a key that parses but cannot sign."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from signwave.ids import KeyId
from signwave.lock import RedisKeyLock
from signwave.pipeline import Pipeline
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from signwave.store.store import Lease
from tests.chaos.faults import unusable_key
from tests.conftest import seed
from tests.integration.helpers import rows, scalar


class PauseBlindClock:
    """A monotonic clock that did not see the process pause (CLOCK_MONOTONIC does
    not count a suspended machine): it stands still until its ``pause_at``-th
    reading, runs ``pause`` then, and from there on reads ``after``."""

    def __init__(self, *, pause_at: int, pause: Callable[[], None], after: float) -> None:
        self.readings = 0
        self.pause_at = pause_at
        self.pause = pause
        self.after = after

    def monotonic(self) -> float:
        self.readings += 1
        if self.readings == self.pause_at:
            self.pause()
        return 0.0 if self.readings < self.pause_at else self.after


def test_a_refused_renewal_stops_the_batch_and_stores_nothing(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    # Given one key, and a signer whose lease expires while it is paused,
    # without its own clock noticing
    ttl = 1.0
    seed(store, key_pool, records=5, keys=1)
    config = dataclasses.replace(settings, batch_size=5, lease_ttl=ttl, max_in_flight=1)
    other = Pipeline(store=store, lock=key_lock, settings=config)
    (batch_id,) = other.emit().claimed
    stale = other.ingest(batch_id)
    assert stale is not None
    regranted: list[Lease] = []

    def pause() -> None:
        time.sleep(ttl + 0.3)
        # ...during which another worker leases the same key to the same batch
        lease = other.ingest(batch_id)
        assert lease is not None
        regranted.append(lease)

    # (readings: one before the lease starts, then one per signature; the third
    # signature finds half the lease gone and renews)
    clock = PauseBlindClock(pause_at=4, pause=pause, after=0.6 * ttl)
    paused = Pipeline(store=store, lock=key_lock, settings=config, clock=clock)

    # When the paused signer goes on
    outcome = paused.sign(stale)

    # Then its renewal was refused and it stopped: nothing stored, the new
    # holder's Redis lock left alone, the stale lease recorded as expired
    assert outcome == "lost"
    (new,) = regranted
    assert (new.key_id, new.batch_id) == (stale.key_id, stale.batch_id)
    assert new.token > stale.token
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 0
    assert key_lock.owner(new.key_id) == new.lock_owner
    assert rows(db, "SELECT token, outcome FROM key_leases ORDER BY id") == [
        (stale.token, "expired"),
        (new.token, None),
    ]
    # And the new lease signs the batch
    assert other.sign(new) == "signed"
    assert rows(db, "SELECT DISTINCT lease_token FROM signatures") == [(new.token,)]


def test_a_key_that_parses_but_cannot_sign_fails_a_bounded_number_of_attempts(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    # Given a key that every signature fails with (the first a grant takes) and a good one
    store.add_keys([unusable_key(), key_pool[0]])
    seed(store, key_pool, records=4, keys=0)
    config = dataclasses.replace(settings, batch_size=2, max_attempts=2, max_in_flight=2)
    pipeline = Pipeline(store=store, lock=key_lock, settings=config)
    poisoned, healthy = pipeline.emit().claimed

    # When each attempt is made in turn
    outcomes = []
    for batch_id in (poisoned, healthy, poisoned):
        lease = pipeline.ingest(batch_id)
        assert lease is not None
        outcomes.append((lease.key_id, pipeline.sign(lease)))

    # Then the broken key failed twice and the batch is marked failed with its
    # reason; the key is free again, and the other batch was signed
    assert outcomes == [(1, "pending"), (2, "signed"), (1, "failed")]
    assert rows(db, "SELECT id, status, failures, error FROM batches ORDER BY id") == [
        (poisoned, "failed", 2, "ValueError while signing with key 1"),
        (healthy, "signed", 0, None),
    ]
    assert rows(db, "SELECT key_id, outcome FROM key_leases ORDER BY id") == [
        (1, "failed"),
        (2, "signed"),
        (1, "failed"),
    ]
    assert scalar(db, "SELECT COUNT(*) FROM keys WHERE lease_token IS NOT NULL") == 0
    assert key_lock.owner(KeyId(1)) is None
    assert pipeline.ingest(poisoned) is None, "a failed batch is not leased again"


def test_a_batch_committed_as_dispatched_survives_a_broker_that_is_gone(tmp_path: Path) -> None:
    # The sign task's sender runs after a commit: with the broker gone it must
    # return (the batch is re-sent by emit later), not fail the task and leave
    # the batch the task goes on with to expire.
    script = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.WARNING)\n"
        "from signwave.tasks import _dispatch\n"
        "_dispatch([7, 8])\n"
        "print('returned')\n"
    )
    env = {
        **os.environ,
        "SIGNWAVE_DATABASE_URL": f"sqlite:///{tmp_path}/unused.db",
        "SIGNWAVE_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "could not send ingest for 2 batches" in done.stdout
    assert done.stdout.rstrip().endswith("returned")
