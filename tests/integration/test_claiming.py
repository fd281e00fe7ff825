"""Claiming records into batches under concurrency, and emit's backpressure (G5)."""

from __future__ import annotations

import functools

import pytest
from sqlalchemy import text

from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from tests.conftest import seed
from tests.integration.helpers import (
    batch_membership_errors,
    claim_until_done,
    fake_keys,
    race,
    rows,
    scalar,
)

BATCH = 7
RECORDS = 600


def in_flight(db: Database) -> int:
    return int(scalar(db, "SELECT COUNT(*) FROM batches WHERE status IN ('pending', 'leased')"))


def test_concurrent_claimers_never_put_a_record_in_two_batches(
    db: Database, store: Store, database_url: str
) -> None:
    # Given more records than fit in whole batches, and keys enough for every batch
    store.add_keys(fake_keys(100))
    seed(store, [], records=RECORDS, keys=0)
    # When eight threads and two processes claim at once, with a high limit
    once = functools.partial(store.claim_batches, batch_size=BATCH, limit=10_000)
    loop = functools.partial(claim_until_done, database_url, BATCH, 10_000)
    results = race(
        [once] * 4 + [loop] * 4,
        [(claim_until_done, (database_url, BATCH, 10_000))] * 2,
    )
    # Then every record is batched, and each batch holds exactly what it says it holds
    claimed = [batch_id for result in results for batch_id in result]
    assert len(claimed) == len(set(claimed)), "a batch id was handed out twice"
    stored = {r[0] for r in rows(db, "SELECT id FROM batches")}
    assert set(claimed) == stored
    assert scalar(db, "SELECT COUNT(*) FROM records WHERE batch_id IS NULL") == 0
    assert batch_membership_errors(db, BATCH) == []
    assert scalar(db, "SELECT SUM(record_count) FROM batches") == RECORDS
    assert len(stored) >= -(-RECORDS // BATCH)


def test_claim_rules_one_claimer(db: Database, store: Store, key_pool: list[KeyMaterial]) -> None:
    # No keys: nothing is claimed, and no empty batch is left behind.
    seed(store, key_pool, records=28, keys=0)
    assert store.claim_batches(batch_size=5, limit=10) == []
    assert scalar(db, "SELECT COUNT(*) FROM batches") == 0
    store.add_keys(key_pool[:3])

    # Records go into batches in id order, up to the in-flight limit.
    first = store.claim_batches(batch_size=5, limit=2)
    assert len(first) == 2
    assert store.claim_batches(batch_size=5, limit=2) == []
    low = int(scalar(db, "SELECT MIN(id) FROM records"))
    spans = rows(
        db,
        "SELECT batch_id, MIN(id), MAX(id) FROM records WHERE batch_id IS NOT NULL "
        "GROUP BY batch_id ORDER BY batch_id",
    )
    assert spans == [(first[0], low, low + 4), (first[1], low + 5, low + 9)]
    assert (
        rows(db, "SELECT size, record_count, status FROM batches ORDER BY id")
        == [(5, 5, "pending")] * 2
    )
    # A higher limit is capped by the three keys.
    assert len(store.claim_batches(batch_size=5, limit=50)) == 1
    assert store.claim_batches(batch_size=5, limit=50) == []
    assert in_flight(db) == 3
    # Signed batches no longer count; the last batch takes what is left.
    with db.write() as conn:
        conn.exec_driver_sql("UPDATE batches SET status = 'signed'")
    rest = store.claim_batches(batch_size=5, limit=50)
    assert len(rest) == 3
    pending = "SELECT id, record_count FROM batches WHERE status = 'pending' ORDER BY id"
    assert rows(db, pending) == [(rest[0], 5), (rest[1], 5), (rest[2], 3)]
    assert store.claim_batches(batch_size=5, limit=50) == []
    assert scalar(db, "SELECT COUNT(*) FROM records WHERE batch_id IS NULL") == 0
    assert batch_membership_errors(db, 5) == []


def test_concurrent_emits_respect_the_in_flight_limit(db: Database, store: Store) -> None:
    # Given plenty of records and keys
    store.add_keys(fake_keys(50))
    seed(store, [], records=500, keys=0)
    limit = 3
    # When eight claimers race, twice
    for _ in range(2):
        results = race([functools.partial(store.claim_batches, batch_size=5, limit=limit)] * 8)
        # Then no more than `limit` batches are ever in flight
        assert sum(len(r) for r in results) <= limit
        assert in_flight(db) == limit
    assert batch_membership_errors(db, 5) == []


def test_records_committed_out_of_id_order_are_still_claimed(db: Database, store: Store) -> None:
    # Given records 1-10 and 100-105, all claimed in batches of 5
    store.add_keys(fake_keys(10))
    with db.write() as conn:
        for record_id in [*range(1, 11), *range(100, 106)]:
            conn.execute(
                text("INSERT INTO records (id, payload) VALUES (:i, :p)"),
                {"i": record_id, "p": b"x%d" % record_id},
            )
    claimed = store.claim_batches(batch_size=5, limit=10)
    assert len(claimed) == 4
    # When a record below the highest claimed id appears later (an import that
    # committed after one holding higher ids)
    with db.write() as conn:
        conn.execute(text("INSERT INTO records (id, payload) VALUES (50, :p)"), {"p": b"late"})
    # Then the next claim still takes it
    [late] = store.claim_batches(batch_size=5, limit=10)
    assert rows(db, "SELECT id FROM records WHERE batch_id = :b", b=late) == [(50,)]
    assert scalar(db, "SELECT COUNT(*) FROM records WHERE batch_id IS NULL") == 0


def test_a_claim_fills_past_the_newest_batch_then_below_it(db: Database, store: Store) -> None:
    # Given records 1-5 and 20-24 claimed into two batches, both signed
    store.add_keys(fake_keys(10))
    insert = text("INSERT INTO records (id, payload) VALUES (:i, :p)")
    with db.write() as conn:
        for record_id in [*range(1, 6), *range(20, 25)]:
            conn.execute(insert, {"i": record_id, "p": b"x%d" % record_id})
    assert len(store.claim_batches(batch_size=5, limit=2)) == 2
    # And then a straggler below the newest batch, and two records after it
    with db.write() as conn:
        conn.exec_driver_sql("UPDATE batches SET status = 'signed'")
        for record_id in (10, 30, 31):
            conn.execute(insert, {"i": record_id, "p": b"late"})
    # When one batch of 5 is claimed
    [batch] = store.claim_batches(batch_size=5, limit=1)
    # Then it holds all three, and says so
    members = rows(db, "SELECT id FROM records WHERE batch_id = :b ORDER BY id", b=batch)
    assert [m[0] for m in members] == [10, 30, 31]
    assert scalar(db, "SELECT record_count FROM batches WHERE id = :b", b=batch) == 3


def test_postgresql_knows_the_size_of_a_seeded_table(db: Database, store: Store) -> None:
    # A fresh table's statistics say "empty": the planner then sorts every
    # unbatched record for each claim. Seeding refreshes them.
    if db.is_sqlite:
        pytest.skip("PostgreSQL's planner statistics")
    seed(store, [], records=2_000, keys=0)
    assert scalar(db, "SELECT reltuples FROM pg_class WHERE relname = 'records'") == 2_000
