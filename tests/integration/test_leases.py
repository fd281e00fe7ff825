"""Key leases: exclusivity (G2), least recently used first (G4) and fencing (G1)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time

import pytest

from signwave.errors import LeaseLost, NoKeyAvailable
from signwave.ids import BatchId, HolderId, KeyId, LeaseToken, RecordId
from signwave.lock import RedisKeyLock
from signwave.pipeline import Pipeline
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store, audit
from signwave.store.store import Lease
from signwave.verify import lru_violations, overlapping_leases
from tests.conftest import seed
from tests.integration.helpers import (
    ingest_each,
    make_pending_batches,
    overlapping_lease_pairs,
    race,
    rows,
    scalar,
    set_last_used,
    unsigned_count,
    work_until_signed,
)

T0 = dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def no_lock(_lease: Lease) -> None:
    pass


def grant(store: Store, batch_id: BatchId, *, ttl: float = 10.0) -> Lease:
    result = store.grant_lease(batch_id, ttl=ttl, lock=no_lock)
    assert result.lease is not None, result.reason
    return result.lease


def signatures_for(store: Store, batch_id: BatchId) -> list[tuple[RecordId, bytes]]:
    return [(rid, b"sig-%d" % rid) for rid, _ in store.batch_payloads(batch_id)]


def open_leases(db: Database) -> list[tuple[int, int]]:
    return [
        (r[0], r[1])
        for r in rows(db, "SELECT key_id, batch_id FROM key_leases WHERE released_at IS NULL")
    ]


# -- concurrent grants ---------------------------------------------------------


def test_concurrent_ingests_never_give_one_key_to_two_batches(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    # Given 5 keys and 12 pending batches
    seed(store, key_pool, records=24, keys=5)
    batch_ids = make_pending_batches(db, 12, 2)
    pipeline = Pipeline(store=store, lock=key_lock, settings=settings)

    def ingest(batch_id: BatchId) -> tuple[int, int | None]:
        try:
            lease = pipeline.ingest(batch_id)
        except NoKeyAvailable:
            return batch_id, None
        assert lease is not None
        return batch_id, lease.key_id

    # When 8 threads and 2 processes ingest distinct batches at once
    results = race(
        [functools.partial(ingest, b) for b in batch_ids[:8]],
        [(ingest_each, (settings, batch_ids[8:10])), (ingest_each, (settings, batch_ids[10:]))],
    )
    outcomes = dict([r for r in results[:8]] + [pair for r in results[8:] for pair in r])
    # Then exactly 5 batches got a key, each a different one, and the rest none
    assert sorted(outcomes) == sorted(batch_ids)
    leased = {b: k for b, k in outcomes.items() if k is not None}
    assert len(leased) == 5
    assert sorted(leased.values()) == sorted(k for (k,) in rows(db, "SELECT id FROM keys"))
    # The tables agree: one open lease per key, batches point at their key.
    assert sorted(open_leases(db)) == sorted((k, b) for b, k in leased.items())
    assert overlapping_lease_pairs(db) == []
    assert sorted(rows(db, "SELECT id, key_id FROM batches WHERE status = 'leased'")) == sorted(
        leased.items()
    )
    assert scalar(db, "SELECT COUNT(*) FROM batches WHERE status = 'pending'") == 7
    # No key was used before: whoever came first got key 1, and so on (G4).
    assert rows(db, "SELECT key_id FROM key_leases ORDER BY acquired_at, id") == [
        (k,) for k in range(1, 6)
    ]
    assert lru_violations(audit.leases(db), audit.all_keys(db)) == []
    # Each key's Redis lock belongs to its grant.
    for batch_id, key_id in leased.items():
        token = scalar(db, "SELECT lease_token FROM batches WHERE id = :b", b=batch_id)
        lease = Lease(batch_id=batch_id, key_id=KeyId(key_id), token=LeaseToken(token))
        assert key_lock.owner(KeyId(key_id)) == lease.lock_owner


def test_concurrent_grants_of_the_same_batch_lease_it_once(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    seed(store, key_pool, records=4, keys=4)
    (batch_id,) = make_pending_batches(db, 1, 4)

    results = race([functools.partial(store.grant_lease, batch_id, ttl=10.0, lock=no_lock)] * 8)

    assert sorted(r.reason for r in results) == ["leased"] + ["not-pending"] * 7
    assert scalar(db, "SELECT COUNT(*) FROM key_leases") == 1


@pytest.mark.parametrize("chain", [0.0, 60.0], ids=["sign", "chained-sign"])
def test_many_signers_share_few_keys_without_overlap_and_in_lru_order(
    db: Database, store: Store, settings: Settings, key_pool: list[KeyMaterial], chain: float
) -> None:
    # Given 3 keys for 15 batches of 3 records
    seed(store, key_pool, records=45, keys=3)
    s = dataclasses.replace(settings, batch_size=3, max_in_flight=3, chain_seconds=chain)
    # When 6 threads and 2 processes each emit, lease and sign until all is
    # signed (chained: each commit also leases a batch it claims to its signer)
    results = race(
        [functools.partial(work_until_signed, s, 90.0)] * 6,
        [(work_until_signed, (s, 90.0))] * 2,
    )
    # Then every record is signed once, and keys were taken in turn
    assert unsigned_count(db) == 0
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 45
    signed_by_ingest = sum(r.get("signed", 0) for r in results)
    if chain:
        assert 1 <= signed_by_ingest < 15, "some batches were signed by chains"
    else:
        assert signed_by_ingest == 15
    leases = audit.leases(db)
    assert len(leases) >= 15
    assert overlapping_lease_pairs(db) == []
    assert overlapping_leases(leases) == []
    assert lru_violations(leases, audit.all_keys(db)) == []
    assert scalar(db, "SELECT COUNT(*) FROM key_leases WHERE released_at IS NULL") == 0
    # Each batch was signed under exactly one lease, by the key on the batch row.
    assert (
        rows(
            db,
            "SELECT b.id FROM batches b LEFT JOIN key_leases l ON l.batch_id = b.id "
            "AND l.outcome = 'signed' AND l.key_id = b.key_id AND l.token = b.lease_token "
            "GROUP BY b.id HAVING COUNT(l.id) <> 1",
        )
        == []
    )
    assert rows(db, "SELECT SUM(use_count) FROM keys") == [(15,)]


# -- LRU order, step by step ----------------------------------------------------


def test_grant_takes_never_used_then_oldest_then_lowest_id(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    # Given keys 1..5 with known last uses: 2 never, 3 and 4 tied oldest, 5 newer, 1 newest
    seed(store, key_pool, records=16, keys=5)
    set_last_used(
        db,
        {
            1: T0 + dt.timedelta(hours=2),
            2: None,
            3: T0,
            4: T0,
            5: T0 + dt.timedelta(microseconds=1),
        },
    )
    batch_ids = make_pending_batches(db, 8, 2)

    # When batches are leased one after the other
    got = [store.grant_lease(b, ttl=10.0, lock=no_lock) for b in batch_ids[:6]]

    # Then keys come in LRU order, and the sixth batch finds none
    assert [g.lease.key_id if g.lease else None for g in got] == [2, 3, 4, 5, 1, None]
    assert got[-1].reason == "no-key"
    # A key released later goes behind one released earlier.
    by_key = {g.lease.key_id: g.lease for g in got if g.lease}
    for key_id in (4, 2):
        assert store.start_signing(by_key[key_id], HolderId("h"), ttl=10.0)
        lease = by_key[key_id]
        store.commit_signatures(lease, HolderId("h"), signatures_for(store, lease.batch_id))
    assert [grant(store, b).key_id for b in batch_ids[5:7]] == [4, 2]


def test_grant_reaps_an_expired_lease_first_when_its_key_is_older(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    # Given key 1's lease expired (unreaped), then key 2 used after that expiry
    seed(store, key_pool, records=9, keys=2)
    batch_a, batch_b, batch_c = make_pending_batches(db, 3, 3)
    stale = grant(store, batch_a, ttl=0.3)
    assert stale.key_id == 1
    assert store.start_signing(stale, HolderId("stalled"), ttl=0.3)
    time.sleep(0.45)
    used = grant(store, batch_b)
    assert used.key_id == 2
    assert store.start_signing(used, HolderId("h"), ttl=10.0)
    store.commit_signatures(used, HolderId("h"), signatures_for(store, batch_b))

    # When a batch needs a key while key 2 is free
    got = grant(store, batch_c)

    # Then the expired lease is closed first, and key 1, last used when it expired, wins
    assert got.key_id == 1
    assert rows(db, "SELECT key_id, outcome FROM key_leases ORDER BY id") == [
        (1, "expired"),
        (2, "signed"),
        (1, None),
    ]
    assert lru_violations(audit.leases(db), audit.all_keys(db)) == []


# -- fencing -------------------------------------------------------------------


def test_stale_token_commit_after_expiry_and_regrant_stores_nothing(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    # Given a lease that expired while its holder was stalled
    seed(store, key_pool, records=4, keys=2)
    (batch_id,) = make_pending_batches(db, 1, 4)
    old = grant(store, batch_id, ttl=0.3)
    holder = HolderId("stalled")
    assert store.start_signing(old, holder, ttl=0.3)
    sigs = signatures_for(store, batch_id)
    time.sleep(0.45)
    # ... was reaped, and the batch went to another key
    assert store.reap_expired() == [batch_id]
    new = grant(store, batch_id)
    assert new.key_id != old.key_id

    # When the stalled holder wakes up and commits
    with pytest.raises(LeaseLost):
        store.commit_signatures(old, holder, sigs)

    # Then nothing was stored and the new lease is untouched
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 0
    assert rows(db, "SELECT status, key_id, lease_token FROM batches") == [
        ("leased", new.key_id, new.token)
    ]
    assert rows(db, "SELECT key_id, outcome FROM key_leases ORDER BY id") == [
        (old.key_id, "expired"),
        (new.key_id, None),
    ]
    # The new lease still commits.
    assert store.start_signing(new, HolderId("new"), ttl=10.0)
    store.commit_signatures(new, HolderId("new"), sigs)
    assert scalar(db, "SELECT COUNT(*) FROM signatures WHERE key_id = :k", k=new.key_id) == 4


def test_stale_token_of_the_same_key_is_rejected(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    # Given one key, leased with a short TTL that ran out before the commit
    seed(store, key_pool, records=6, keys=1)
    batch_a, batch_b = make_pending_batches(db, 2, 3)
    sigs = signatures_for(store, batch_a)
    old = grant(store, batch_a, ttl=0.3)
    assert store.start_signing(old, HolderId("old"), ttl=0.3)
    time.sleep(0.45)
    # Expired but not yet reaped: no commit, no renewal.
    with pytest.raises(LeaseLost):
        store.commit_signatures(old, HolderId("old"), sigs)
    assert not store.renew(old, HolderId("old"), ttl=10.0)

    # When the key is leased to another batch (the grant reaps the old lease), then
    # back to the first batch
    other = grant(store, batch_b)
    assert other.key_id == old.key_id and other.token > old.token
    with pytest.raises(LeaseLost):
        store.commit_signatures(old, HolderId("old"), sigs)
    assert store.start_signing(other, HolderId("b"), ttl=10.0)
    store.commit_signatures(other, HolderId("b"), signatures_for(store, batch_b))
    new = grant(store, batch_a)
    assert (new.key_id, new.batch_id) == (old.key_id, old.batch_id)
    assert new.token > other.token

    # Then the stale token never commits, nor may a holder that did not start the new one
    with pytest.raises(LeaseLost):
        store.commit_signatures(old, HolderId("old"), sigs)
    with pytest.raises(LeaseLost):
        store.commit_signatures(new, HolderId("old"), sigs)
    assert scalar(db, "SELECT COUNT(*) FROM signatures WHERE batch_id = :a", a=batch_a) == 0
    assert rows(db, "SELECT token, outcome FROM key_leases ORDER BY id") == [
        (old.token, "expired"),
        (other.token, "signed"),
        (new.token, None),
    ]


def test_wrong_holder_is_rejected(db: Database, store: Store, key_pool: list[KeyMaterial]) -> None:
    seed(store, key_pool, records=3, keys=1)
    (batch_id,) = make_pending_batches(db, 1, 3)
    lease = grant(store, batch_id)
    sigs = signatures_for(store, batch_id)
    # Nobody may commit before signing has started.
    with pytest.raises(LeaseLost):
        store.commit_signatures(lease, HolderId("early"), sigs)
    assert store.start_signing(lease, HolderId("right"), ttl=10.0)

    with pytest.raises(LeaseLost):
        store.commit_signatures(lease, HolderId("wrong"), sigs)
    assert not store.renew(lease, HolderId("wrong"), ttl=10.0)
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 0

    assert store.renew(lease, HolderId("right"), ttl=10.0)
    store.commit_signatures(lease, HolderId("right"), sigs)
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 3
    # A lease commits once.
    with pytest.raises(LeaseLost):
        store.commit_signatures(lease, HolderId("right"), sigs)


def test_only_one_execution_may_start_a_lease(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    seed(store, key_pool, records=2, keys=1)
    (batch_id,) = make_pending_batches(db, 1, 2)
    lease = grant(store, batch_id)

    started = race(
        [
            functools.partial(store.start_signing, lease, HolderId(f"h{i}"), ttl=10.0)
            for i in range(8)
        ]
    )

    # One start succeeds, and hands over the batch's records to sign
    winners = [i for i, payloads in enumerate(started) if payloads is not None]
    assert len(winners) == 1
    assert [record_id for record_id, _ in started[winners[0]]] == [
        r[0] for r in rows(db, "SELECT id FROM records WHERE batch_id = :b ORDER BY id", b=batch_id)
    ]
    holder = scalar(db, "SELECT lease_holder FROM keys")
    assert holder == f"h{winners[0]}"
    # The same holder starting again (a duplicate delivery) is refused as well.
    assert store.start_signing(lease, HolderId(holder), ttl=10.0) is None
    other = Lease(batch_id=batch_id, key_id=lease.key_id, token=LeaseToken(lease.token + 1))
    assert store.start_signing(other, HolderId("x"), ttl=10.0) is None


def test_duplicate_sign_delivery_is_skipped(
    db: Database, pipeline: Pipeline, store: Store, key_pool: list[KeyMaterial]
) -> None:
    seed(store, key_pool, records=3, keys=1)
    (batch_id,) = make_pending_batches(db, 1, 3)
    lease = pipeline.ingest(batch_id)
    assert lease is not None

    outcomes = race([functools.partial(pipeline.sign, lease)] * 4)

    assert sorted(outcomes) == ["signed"] + ["skipped"] * 3
    assert pipeline.sign(lease) == "skipped"
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 3
    assert pipeline.ingest(batch_id) is None, "a signed batch is not leased again"


def test_a_failed_attempt_releases_the_key_and_reopens_the_batch(
    db: Database, store: Store, key_pool: list[KeyMaterial]
) -> None:
    seed(store, key_pool, records=2, keys=1)
    (batch_id,) = make_pending_batches(db, 1, 2)
    for attempt in (1, 2):
        lease = grant(store, batch_id)
        assert store.start_signing(lease, HolderId("h"), ttl=10.0)
        status = store.record_failure(lease, HolderId("h"), "boom", max_failures=2)
        assert status == ("pending" if attempt == 1 else "failed")
        # The failure is final for that lease: it cannot commit afterwards.
        with pytest.raises(LeaseLost):
            store.commit_signatures(lease, HolderId("h"), signatures_for(store, batch_id))
    assert rows(db, "SELECT status, failures FROM batches") == [("failed", 2)]
    assert rows(db, "SELECT outcome FROM key_leases ORDER BY id") == [("failed",), ("failed",)]
    assert scalar(db, "SELECT lease_token FROM keys") is None
    assert store.grant_lease(batch_id, ttl=10.0, lock=no_lock).reason == "not-pending"
