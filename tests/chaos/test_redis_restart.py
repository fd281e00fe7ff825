"""Redis restarted empty in the middle of a run: locks and queued messages are gone
(SPEC §2, G2, G6)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import redis
from celery import Celery

from signwave.signing import KeyMaterial
from tests.chaos.cluster import Cluster, wait_until

RECORDS = 2000
QUEUES = ("signwave", "signing")


def test_run_finishes_after_redis_restarts_empty(
    make_cluster: Callable[..., Cluster], key_pool: list[KeyMaterial]
) -> None:
    # Given a run under way on two workers
    cluster = make_cluster(batch_size=100, lease_ttl=3.0, redispatch_after=2.0, max_in_flight=4)
    cluster.seed(records=RECORDS, keys=key_pool[:4])
    workers = [cluster.worker("w1"), cluster.worker("w2")]
    cluster.beat()
    broker = redis.Redis.from_url(cluster.settings.broker)

    # When Redis restarts empty while batches are queued, leased and signing
    cluster.wait_signed(at_least=RECORDS // 5, timeout=90)
    cluster.redis.restart_empty()
    # ...and again while both workers are paused, so that messages waiting in
    # the queues are surely lost with it
    cluster.wait_signed(at_least=RECORDS // 2, timeout=90)
    starts = [len(worker.text()) for worker in workers]
    for worker in workers:
        worker.signal_group(signal.SIGSTOP)
    wait_until(
        lambda: sum(int(broker.llen(q)) for q in QUEUES) > 0,
        timeout=10,
        what="messages waiting in the broker",
    )
    in_flight = cluster.scalar("SELECT count(*) FROM batches WHERE status IN ('pending', 'leased')")
    cluster.redis.restart_empty()
    for worker in workers:
        worker.signal_group(signal.SIGCONT)
    cluster.wait_finished(timeout=120)
    broker.close()

    # Then the run finished without any key leased twice at once, and both
    # workers reconnected by themselves (a chained signer can finish the run
    # before its consumer notices the restart, so the reconnection is waited
    # for): they answer a ping sent through the restarted broker (their queue
    # bindings were declared again)
    assert in_flight > 0
    cluster.audit()
    for worker, start in zip(workers, starts, strict=True):
        wait_until(
            lambda w=worker, s=start: "Connected to redis" in w.text()[s:],
            timeout=30,
            what=f"{worker.log.name} to reconnect to the restarted broker",
        )
    answering: set[str] = set()

    def both_answer() -> bool:
        try:
            replies = control.control.ping(timeout=1.0)
        except redis.ConnectionError:  # a pooled connection from before the restart
            return False
        answering.update(name.split("-")[0] for reply in replies for name in reply)
        return {"w1", "w2"} <= answering

    control = Celery(broker=cluster.settings.broker)
    try:
        wait_until(both_answer, timeout=30, what="both workers to answer a ping")
    finally:
        control.close()
