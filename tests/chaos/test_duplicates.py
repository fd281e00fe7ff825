"""The same messages delivered twice or more, some at the same time, and a second
beat sending emit (SPEC §2: tasks are idempotent; G1, G2)."""

from __future__ import annotations

import time
from collections.abc import Callable

from signwave.signing import KeyMaterial
from tests.chaos.cluster import Cluster
from tests.chaos.faults import Duplicator
from tests.support import wait_until

RECORDS = 1500


def test_duplicate_deliveries_have_no_effect_beyond_the_first(
    make_cluster: Callable[..., Cluster], key_pool: list[KeyMaterial]
) -> None:
    # Given a run on two workers of two processes each, and two beats; the
    # lease outlives any queueing delay, so one grant per batch is all it takes
    cluster = make_cluster(batch_size=100, lease_ttl=15.0, max_in_flight=4)
    cluster.seed(records=RECORDS, keys=key_pool[:4])
    workers = [cluster.worker("w1", concurrency=2), cluster.worker("w2", concurrency=2)]
    cluster.beat("beat1")
    cluster.beat("beat2")

    # When every ingest and sign is sent again, twice at once, as long as the
    # run lasts, and finished leases are replayed long after the fact
    duplicator = Duplicator(cluster.settings)
    duplicator.start(seconds=90, copies=2)
    try:
        cluster.wait_finished(timeout=120)
        sent = duplicator.result()
    finally:
        duplicator.stop()

    # Then replayed signs reach the workers and do nothing (the last ones are
    # sent once all is signed)...
    wait_until(
        lambda: any("not startable (duplicate delivery" in w.text() for w in workers),
        timeout=30,
        what="a duplicate sign to reach a worker",
    )
    time.sleep(1.0)
    # ...every record is signed once, by one lease per batch, with no overlap
    cluster.audit()
    assert sent["ingest"] > 0 and sent["sign"] > 0 and sent["replayed_sign"] > 0, sent
    batches = cluster.scalar("SELECT count(*) FROM batches")
    assert cluster.scalar("SELECT count(*) FROM key_leases") == batches
    assert cluster.scalar("SELECT count(DISTINCT batch_id) FROM key_leases") == batches
    assert cluster.scalar("SELECT count(*) FROM key_leases WHERE outcome <> 'signed'") == 0
