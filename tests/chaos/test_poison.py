"""Keys that cannot sign: their batches are retried a bounded number of times, then
marked failed with a reason, and the rest of the run goes on (SPEC G6, §5 verify)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

from sqlalchemy import text

from signwave.signing import KeyMaterial
from tests.chaos.cluster import Cluster
from tests.chaos.faults import unusable_key
from tests.support import LEASE_INVARIANTS, cli, independent_check

RECORDS = 1000
MAX_ATTEMPTS = 2


def test_batches_of_broken_keys_fail_after_max_attempts_and_the_run_goes_on(
    make_cluster: Callable[..., Cluster], key_pool: list[KeyMaterial]
) -> None:
    # Given four keys: one whose stored PEM is garbage, one that parses but
    # cannot sign, two good ones (the broken ones are the first a grant takes)
    cluster = make_cluster(batch_size=100, max_attempts=MAX_ATTEMPTS, max_in_flight=4)
    cluster.seed(records=RECORDS, keys=[key_pool[0], unusable_key(), *key_pool[1:3]])
    garbage, small = (row[0] for row in cluster.sql("SELECT id FROM keys ORDER BY id LIMIT 2"))
    with cluster.db.write() as conn:
        conn.execute(
            text("UPDATE keys SET private_key_pem = 'not a key' WHERE id = :k"), {"k": garbage}
        )

    # When the workers run until no batch is left in flight
    cluster.worker("w1")
    cluster.worker("w2")
    cluster.beat()
    cluster.wait_finished(timeout=120)

    # Then every attempt with a broken key failed, was recorded with its reason
    # (never the key's material) and released the key...
    failed_leases = cluster.sql(
        "SELECT key_id, batch_id, error FROM key_leases WHERE outcome = 'failed'"
    )
    assert {key_id for key_id, _, _ in failed_leases} == {garbage, small}
    for key_id, _, error in failed_leases:
        assert f"while signing with key {key_id}" in error, error
        assert "not a key" not in error and "BEGIN" not in error, error
    assert not cluster.sql(
        "SELECT id FROM key_leases WHERE outcome = 'signed' AND key_id IN (:a, :b)",
        a=garbage,
        b=small,
    )
    # ...no batch was tried more than MAX_ATTEMPTS times, and exactly the batches
    # that failed that often are marked failed, with their reason
    attempts = Counter(batch_id for _, batch_id, _ in failed_leases)
    assert max(attempts.values()) <= MAX_ATTEMPTS
    failed = {
        batch_id: error
        for batch_id, error in cluster.sql(
            "SELECT id, error FROM batches WHERE status = 'failed' ORDER BY id"
        )
    }
    assert set(failed) == {b for b, n in attempts.items() if n == MAX_ATTEMPTS}
    assert all(error and "while signing with key" in error for error in failed.values())
    # ...every other batch was signed, once, by a good key
    counts = independent_check(cluster.settings.database_url)
    for name in ("double_signed", "wrong_key", "overlapping_leases", "signed_outside_lease"):
        assert counts[name] == 0, counts
    for name in (*LEASE_INVARIANTS, "open_leases", "keys_leased"):
        assert counts[name] == 0, counts
    in_failed = cluster.scalar(
        "SELECT coalesce(sum(record_count), 0) FROM batches WHERE status = 'failed'"
    )
    assert counts["signatures"] == RECORDS - in_failed
    assert counts["failed_batches"] == len(failed)

    # And `signwave status` and `signwave verify` report the failed batches
    status = json.loads(cli(cluster.settings, "status", "--json").stdout)
    assert status["batches"]["failed"] == len(failed)
    assert status["failed_records"] == in_failed
    assert status["batches"]["pending"] == status["batches"]["leased"] == 0
    result = cli(cluster.settings, "verify", "--json")
    report = json.loads(result.stdout)
    assert report["failed_batches"] == sorted(failed)
    assert report["violations"]["unsigned_records"] == 0
    assert report["violations"]["duplicate_signatures"] == 0
    assert report["violations"]["overlapping_leases"] == 0
    assert (result.returncode == 0) == (not failed), result.stdout
    assert failed, "no batch reached MAX_ATTEMPTS: the broken keys were never retried"
