"""A worker paused with SIGSTOP past its lease, then woken up (SPEC G1, G2, G6)."""

from __future__ import annotations

import signal
from collections.abc import Callable

from tests.chaos.cluster import (
    Cluster,
    log_offset,
    renewed_leases,
    wait_signing_start,
    wait_until,
)
from tests.chaos.conftest import SlowKeys


def test_stalled_worker_loses_key_and_batch_and_stores_nothing(
    make_cluster: Callable[..., Cluster], slow_keys: SlowKeys
) -> None:
    # Given one key, so that only a new lease of that very key lets the run go on,
    # and batches that take longer than the lease to sign (they must renew, even
    # if the machine runs faster than when the signing speed was measured)
    ttl = 3.0
    batch = slow_keys.records_for(1.5 * ttl)
    cluster = make_cluster(batch_size=batch, lease_ttl=ttl, max_in_flight=1)
    cluster.seed(records=2 * batch, keys=slow_keys.keys[:1])
    sleeper = cluster.worker("sleeper")
    cluster.beat()

    # When the sleeper is stopped in the middle of a batch...
    start = wait_signing_start(sleeper, seen=0, timeout=60)
    sleeper.signal_group(signal.SIGSTOP)
    rescuer = cluster.worker("rescuer")

    # ...the rescuer takes the key under a newer lease and signs the batch
    def taken_over() -> bool:
        return bool(
            cluster.scalar(
                "SELECT count(*) FROM batches WHERE id = :b AND status = 'signed' "
                "AND key_id = :k AND lease_token > :t",
                b=start.batch_id,
                k=start.key_id,
                t=start.token,
            )
        )

    wait_until(taken_over, timeout=60, what="the stalled batch signed under a newer lease")

    # ...and when the sleeper runs again, it stops on its own deadline, at once
    with log_offset(sleeper) as woken:
        sleeper.signal_group(signal.SIGCONT)
        wait_until(
            lambda: f"lease {start.token} of key {start.key_id} ran out" in sleeper.text(),
            timeout=30,
            what="the woken worker to give the batch up",
        )
    cluster.wait_finished(timeout=60)

    # Then it stored nothing, its lease is recorded as expired, and all holds
    cluster.audit()
    assert any("ran out while signing" in line for line in woken), woken
    stale = cluster.lease(start.key_id, start.token)
    assert stale["outcome"] == "expired"
    assert stale["batch_id"] == start.batch_id
    assert (
        cluster.scalar(
            "SELECT count(*) FROM signatures WHERE key_id = :k AND lease_token = :t",
            k=start.key_id,
            t=start.token,
        )
        == 0
    )
    assert "signed with key" in rescuer.text()
    # Long batches renewed their lease while signing: a signed lease's expiry
    # was pushed further than the start of signing can explain
    assert renewed_leases(cluster, ttl) >= 1
