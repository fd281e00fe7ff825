"""The database goes away under the workers (SPEC G1, G6): PostgreSQL cuts every
session again and again, as a restart does; SQLite stays locked by another writer."""

from __future__ import annotations

import time
from collections.abc import Callable

from signwave.signing import KeyMaterial
from tests.chaos.cluster import Cluster
from tests.chaos.faults import PgTerminator, sqlite_write_lock

RECORDS = 2000
OUTAGE_S = 5.0


def test_run_survives_database_outages(
    make_cluster: Callable[..., Cluster], key_pool: list[KeyMaterial]
) -> None:
    # Given a run under way on two workers
    cluster = make_cluster(batch_size=100, lease_ttl=3.0, max_in_flight=4)
    cluster.seed(records=RECORDS, keys=key_pool[:4])
    workers = [cluster.worker("w1"), cluster.worker("w2")]
    cluster.beat()
    cluster.wait_signed(at_least=RECORDS // 10, timeout=90)

    if cluster.db.is_sqlite:
        # When another process holds the write lock for several seconds
        with sqlite_write_lock(cluster.settings.database_url, OUTAGE_S):
            before = cluster.signed()
            time.sleep(OUTAGE_S - 1)
            # (nobody could commit meanwhile: the fault did bite)
            assert cluster.signed() == before
    else:
        # When every session of the database is cut, again and again
        with PgTerminator(cluster.settings.database_url).running(OUTAGE_S) as cuts:
            pass
        assert cuts.terminated > 0
    cluster.wait_finished(timeout=120)

    # Then the run finished, nothing is half-written, every guarantee holds
    cluster.audit()
    if not cluster.db.is_sqlite:
        logs = "".join(w.text() for w in workers)
        assert "retry: Retry in" in logs, "no task was retried: the fault did not bite"
