"""Workers killed with SIGKILL in the middle of a batch, again and again (SPEC G1, G6)."""

from __future__ import annotations

from collections.abc import Callable

from tests.chaos.cluster import Cluster, SigningStart, signing_starts, wait_signing_start
from tests.chaos.conftest import SlowKeys
from tests.chaos.faults import kill_group, kill_pool_child

KILLS = ("pool-child", "group", "pool-child")


def test_sigkilled_batches_are_taken_up_again_after_their_lease_expires(
    make_cluster: Callable[..., Cluster], slow_keys: SlowKeys
) -> None:
    # Given batches that take about a second to sign, and two workers
    batch = slow_keys.records_for(1.2)
    cluster = make_cluster(batch_size=batch, lease_ttl=3.0, max_in_flight=3)
    cluster.seed(records=4 * batch, keys=slow_keys.keys)
    steady = cluster.worker("steady")
    victim = cluster.worker("victim")
    cluster.beat()

    # When the victim is killed mid-batch three times: its pool process, then
    # the whole worker (restarted), then its pool process again
    killed: list[SigningStart] = []
    for how in KILLS:
        start = wait_signing_start(
            victim,
            seen=len(signing_starts(victim)),
            timeout=60,
            cluster=cluster,
            keep_unbatched=2 * batch,
        )
        if how == "pool-child":
            kill_pool_child(victim)
        else:
            kill_group(victim)
            victim = cluster.restart(victim)
        killed.append(start)
    cluster.wait_finished(timeout=120)

    # Then every record is signed exactly once, and every killed batch was signed
    # by a later lease, taken only once the killed lease had expired
    cluster.audit()
    assert "signed with key" in steady.text()
    for start in killed:
        lease = cluster.lease(start.key_id, start.token)
        assert lease["outcome"] == "expired", (start, lease)
        assert lease["released_at"] == lease["expires_at"]
        signed = cluster.sql(
            "SELECT l.acquired_at, l.token FROM key_leases l JOIN batches b "
            "ON b.id = l.batch_id AND b.key_id = l.key_id AND b.lease_token = l.token "
            "WHERE b.id = :b AND b.status = 'signed' AND l.outcome = 'signed'",
            b=start.batch_id,
        )
        assert len(signed) == 1, (start, signed)
        assert signed[0][0] >= lease["expires_at"], (start, lease, signed)
        assert (
            cluster.scalar(
                "SELECT count(*) FROM signatures WHERE key_id = :k AND lease_token = :t",
                k=start.key_id,
                t=start.token,
            )
            == 0
        )
