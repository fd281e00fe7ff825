"""Pipeline.emit / ingest / sign in-process, against real databases and Redis (no Celery)."""

from __future__ import annotations

import dataclasses
import itertools
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from signwave import signing
from signwave.errors import NoKeyAvailable, RedisUnavailable
from signwave.ids import BatchId, KeyId
from signwave.keycache import KeyCache
from signwave.lock import RedisKeyLock
from signwave.pipeline import Pipeline
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from signwave.store.store import Lease
from signwave.verify import run_verify
from tests.conftest import seed
from tests.integration.helpers import fake_keys, make_pending_batches, rows, scalar

PSS_32 = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def make(store: Store, lock: RedisKeyLock, settings: Settings, **changes: object) -> Pipeline:
    return Pipeline(store=store, lock=lock, settings=dataclasses.replace(settings, **changes))


def lease_the_claimed_batch(pipeline: Pipeline) -> Lease:
    """Emit, which must claim exactly one batch, and lease that batch."""
    (batch_id,) = pipeline.emit().claimed
    lease = pipeline.ingest(batch_id)
    assert lease is not None
    return lease


class SteppingClock:
    """A monotonic clock that moves ``step`` seconds at every reading."""

    def __init__(self, step: float) -> None:
        self._ticks = itertools.count()
        self.step = step

    def monotonic(self) -> float:
        return next(self._ticks) * self.step


class ScriptedClock:
    def __init__(self, *readings: float) -> None:
        self._readings = iter(readings)
        self.last = 0.0

    def monotonic(self) -> float:
        self.last = next(self._readings, self.last)
        return self.last


def test_sign_stores_every_signature_under_the_one_leased_key(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    # Given 25 records, 2 keys and batches of 10
    seed(store, key_pool, records=25, keys=2)
    pipeline = make(store, key_lock, settings, batch_size=10, max_in_flight=4)
    report = pipeline.emit()
    assert len(report.claimed) == 2 and report.dispatch == report.claimed
    batch_id = report.claimed[0]
    lease = pipeline.ingest(batch_id)
    assert lease is not None
    assert key_lock.owner(lease.key_id) == lease.lock_owner

    # When it is signed
    assert pipeline.sign(lease) == "signed"

    # Then all its records are signed with the leased key, under its token (G3)
    sigs = rows(
        db,
        "SELECT r.id, r.payload, s.signature, s.key_id, s.lease_token, s.batch_id, s.signed_at "
        "FROM records r JOIN signatures s ON s.record_id = r.id WHERE r.batch_id = :b",
        b=batch_id,
    )
    assert len(sigs) == 10
    assert {(s[3], s[4], s[5]) for s in sigs} == {(lease.key_id, lease.token, batch_id)}
    public = signing.load_public_key(key_pool[lease.key_id - 1].public_key_pem)
    for _, payload, sig, *_ in sigs:
        public.verify(bytes(sig), bytes(payload), PSS_32, hashes.SHA256())
    other = signing.load_public_key(key_pool[2 - lease.key_id].public_key_pem)
    assert not signing.verify(other, bytes(sigs[0][1]), bytes(sigs[0][2]))
    # ... and only those records
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 10
    # The batch, the lease row and the key tell the same story.
    ((status, signed_at, key_id, token),) = rows(
        db, "SELECT status, signed_at, key_id, lease_token FROM batches WHERE id = :b", b=batch_id
    )
    assert (status, key_id, token) == ("signed", lease.key_id, lease.token)
    ((outcome, acquired_at, released_at),) = rows(
        db,
        "SELECT outcome, acquired_at, released_at FROM key_leases WHERE batch_id = :b",
        b=batch_id,
    )
    assert outcome == "signed"
    ((last_used_at, use_count, lease_token, holder, expires),) = rows(
        db,
        "SELECT last_used_at, use_count, lease_token, lease_holder, lease_expires_at "
        "FROM keys WHERE id = :k",
        k=lease.key_id,
    )
    assert use_count == 1
    assert (lease_token, holder, expires) == (None, None, None)
    assert released_at is not None
    assert acquired_at < released_at == last_used_at == signed_at == sigs[0][6]
    assert scalar(db, "SELECT use_count FROM keys WHERE id <> :k", k=lease.key_id) == 0
    assert key_lock.owner(lease.key_id) is None, "the Redis lock is released"

    # When the rest is signed too, verify finds nothing wrong
    second = pipeline.ingest(report.claimed[1])
    assert second is not None and second.key_id != lease.key_id
    assert pipeline.sign(second) == "signed"
    for _ in range(3):
        for b in pipeline.emit().dispatch:
            leased = pipeline.ingest(b)
            assert leased is not None
            assert pipeline.sign(leased) == "signed"
    verdict = run_verify(db)
    assert verdict.ok, verdict.as_dict()
    assert verdict.signatures == 25
    assert rows(db, "SELECT COUNT(*), SUM(use_count) FROM keys") == [(2, 3)]


def test_emit_backpressure(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    # Given 5 keys and an in-flight limit of 3
    seed(store, key_pool, records=100, keys=5)
    pipeline = make(store, key_lock, settings, batch_size=4, max_in_flight=3)

    first = pipeline.emit()
    again = pipeline.emit()

    assert len(first.claimed) == 3 and sorted(first.dispatch) == sorted(first.claimed)
    assert again.claimed == [] and again.dispatch == [], "dispatched batches wait for redispatch"
    # When one batch is signed, exactly one more is claimed
    lease = pipeline.ingest(first.claimed[0])
    assert lease is not None
    assert pipeline.sign(lease) == "signed"
    topped_up = pipeline.emit()
    assert len(topped_up.claimed) == 1
    assert scalar(db, "SELECT COUNT(*) FROM batches WHERE status IN ('pending', 'leased')") == 3
    # With a limit above the number of keys, the keys are the limit.
    roomy = make(store, key_lock, settings, batch_size=4, max_in_flight=50)
    assert len(roomy.emit().claimed) == 2
    assert roomy.emit().claimed == []
    assert scalar(db, "SELECT COUNT(*) FROM batches WHERE status IN ('pending', 'leased')") == 5


def test_emit_reopens_a_batch_whose_lease_expired(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    # Given a batch leased with a short TTL whose signer never came
    seed(store, key_pool, records=6, keys=2)
    short = make(store, key_lock, settings, batch_size=3, max_in_flight=1, lease_ttl=0.3)
    (batch_id,) = short.emit().claimed
    lease = short.ingest(batch_id)
    assert lease is not None and lease.key_id == 1
    assert short.emit().reopened == [], "a live lease is not reaped"
    time.sleep(0.45)

    # When emit runs after the expiry
    report = short.emit()

    # Then the batch is pending again and dispatched anew, the lease closed as expired
    assert report.reopened == [batch_id]
    assert batch_id in report.dispatch
    assert rows(
        db, "SELECT status, key_id, lease_token FROM batches WHERE id = :b", b=batch_id
    ) == [("pending", None, None)]
    ((outcome, released_at, expires_at),) = rows(
        db, "SELECT outcome, released_at, expires_at FROM key_leases"
    )
    assert outcome == "expired"
    assert released_at == expires_at
    ((last_used, token, use_count),) = rows(
        db, "SELECT last_used_at, lease_token, use_count FROM keys WHERE id = 1"
    )
    assert (last_used, token, use_count) == (expires_at, None, 0)
    assert short.store.reap_expired() == []
    # The late signer is turned away; the batch goes to the never-used key.
    assert short.sign(lease) == "skipped"
    again = short.ingest(batch_id)
    assert again is not None and again.key_id == 2
    assert short.sign(again) == "signed"
    assert scalar(db, "SELECT COUNT(*) FROM signatures WHERE key_id = 2") == 3


def test_a_signer_stalled_past_its_lease_stores_nothing(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    seed(store, key_pool, records=3, keys=1)
    pipeline = make(store, key_lock, settings, batch_size=3, max_in_flight=1, lease_ttl=0.4)
    lease = lease_the_claimed_batch(pipeline)
    batch_id = lease.batch_id

    def stalled_loader(key_id: KeyId) -> bytes:
        time.sleep(0.6)  # as if SIGSTOPped after starting
        return store.private_key(key_id)[1]

    pipeline.keys = KeyCache(stalled_loader)

    assert pipeline.sign(lease) == "lost"
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 0
    assert key_lock.owner(lease.key_id) is None
    assert store.reap_expired() == [batch_id]


def test_the_local_deadline_stops_signing_before_the_database_would(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    # Given a signer whose clock jumps past the lease between two signatures,
    # while the database still holds the lease (renewed a moment earlier)
    seed(store, key_pool, records=3, keys=1)
    clock = ScriptedClock(0.0, 0.0, 0.0, 6.0, 20.0)
    pipeline = Pipeline(
        store=store,
        lock=key_lock,
        settings=dataclasses.replace(settings, batch_size=3, lease_ttl=10.0),
        clock=clock,
    )
    lease = lease_the_claimed_batch(pipeline)

    assert pipeline.sign(lease) == "lost"
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 0


def test_long_batches_renew_their_lease(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    seed(store, key_pool, records=6, keys=1)
    pipeline = Pipeline(
        store=store,
        lock=key_lock,
        settings=dataclasses.replace(settings, batch_size=6, lease_ttl=10.0),
        clock=SteppingClock(3.0),
    )
    lease = lease_the_claimed_batch(pipeline)
    ((first_expiry,),) = rows(db, "SELECT expires_at FROM key_leases")

    assert pipeline.sign(lease) == "signed"

    ((expiry, outcome),) = rows(db, "SELECT expires_at, outcome FROM key_leases")
    assert outcome == "signed"
    assert expiry > first_expiry, "the lease was renewed while signing"
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 6


def test_signing_survives_redis_losing_its_data(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    seed(store, key_pool, records=4, keys=1)
    pipeline = make(store, key_lock, settings, batch_size=4)
    lease = lease_the_claimed_batch(pipeline)
    key_lock.client.flushall()

    assert pipeline.sign(lease) == "signed"
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 4


def test_a_broken_key_fails_the_attempt_without_leaking_it(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
) -> None:
    # Given a key whose private PEM cannot be parsed
    store.add_keys(fake_keys(1))
    seed(store, [], records=2, keys=0)
    pipeline = make(store, key_lock, settings, batch_size=2, max_attempts=2)
    (batch_id,) = pipeline.emit().claimed

    outcomes = []
    for _ in range(2):
        lease = pipeline.ingest(batch_id)
        assert lease is not None
        outcomes.append(pipeline.sign(lease))

    assert outcomes == ["pending", "failed"]
    ((status, error),) = rows(db, "SELECT status, error FROM batches")
    assert status == "failed"
    assert "unused" not in error and "ValueError" in error
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 0
    assert scalar(db, "SELECT lease_token FROM keys") is None
    assert pipeline.ingest(batch_id) is None


def test_ingest_without_a_free_key_is_retryable(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    seed(store, key_pool, records=4, keys=1)
    pipeline = make(store, key_lock, settings, batch_size=2)
    first, second = make_pending_batches(db, 2, 2)
    assert pipeline.ingest(first) is not None

    with pytest.raises(NoKeyAvailable):
        pipeline.ingest(second)

    assert scalar(db, "SELECT status FROM batches WHERE id = :b", b=second) == "pending"
    assert scalar(db, "SELECT COUNT(*) FROM key_leases") == 1


def test_a_signed_batch_claims_the_room_it_frees_in_its_own_commit(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    # Given 12 records, batches of 5 and one batch allowed in flight
    seed(store, key_pool, records=12, keys=3)
    pipeline = make(store, key_lock, settings, batch_size=5, max_in_flight=1, chain_seconds=0)
    [first] = pipeline.emit().claimed
    statuses = "SELECT id, status, record_count, dispatched_at IS NOT NULL FROM batches ORDER BY id"
    batches_seen: list[int] = [first]
    # When each batch is signed with a top-up
    for expected_next in (5, 2, None):
        lease = pipeline.ingest(BatchId(batches_seen[-1]))
        assert lease is not None
        sent: list[list[BatchId]] = []
        assert pipeline.sign_and_top_up(lease, sent.append) == "signed"
        [dispatch] = sent
        # Then the next batch is claimed at once, within the limit, marked dispatched
        if expected_next is None:
            assert dispatch == []
            break
        [following] = dispatch
        assert rows(db, statuses)[-1] == (following, "pending", expected_next, True)
        batches_seen.append(following)
    assert [r[1] for r in rows(db, statuses)] == ["signed"] * 3
    assert scalar(db, "SELECT COUNT(*) FROM signatures") == 12
    assert run_verify(db).ok


@pytest.mark.parametrize("n_keys, keys_in_turn", [(2, [1, 2, 1]), (1, [1, 1, 1])])
def test_a_chained_sign_goes_on_with_the_batches_its_commits_lease_to_it(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
    n_keys: int,
    keys_in_turn: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given 12 records, batches of 5 and one batch allowed in flight
    seed(store, key_pool, records=12, keys=n_keys)
    # ...and a sign that may go on for a minute
    pipeline = make(store, key_lock, settings, batch_size=5, max_in_flight=1, chain_seconds=60)
    lease = lease_the_claimed_batch(pipeline)
    # When it signs
    sent: list[list[BatchId]] = []
    assert pipeline.sign_and_top_up(lease, sent.append) == "signed"
    # Then it signed every batch itself: nothing was left for a message
    assert sent == [[], [], []]
    assert rows(db, "SELECT status, record_count FROM batches ORDER BY id") == [
        ("signed", 5),
        ("signed", 5),
        ("signed", 2),
    ]
    # Each next lease was granted in the commit of the one before, to the
    # least recently used key (the same one when there is only one)
    leases = rows(
        db, "SELECT key_id, acquired_at, released_at, outcome FROM key_leases ORDER BY id"
    )
    assert [row[0] for row in leases] == keys_in_turn
    assert [row[3] for row in leases] == ["signed"] * 3
    assert leases[1][1] == leases[0][2] and leases[2][1] == leases[1][2]
    assert all(key_lock.owner(KeyId(k)) is None for k in range(1, n_keys + 1))
    assert "took over the Redis lock" not in caplog.text, "each lock passed on, none was taken"
    verdict = run_verify(db)
    assert verdict.ok, verdict.as_dict()
    assert verdict.signatures == 12


def test_a_chain_ends_when_its_time_is_up(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    seed(store, key_pool, records=10, keys=2)
    # Signing the first batch takes longer than the chain may last
    pipeline = make(store, key_lock, settings, batch_size=5, max_in_flight=1, chain_seconds=1e-6)
    lease = lease_the_claimed_batch(pipeline)
    sent: list[list[BatchId]] = []
    assert pipeline.sign_and_top_up(lease, sent.append) == "signed"
    [[following]] = sent
    assert rows(
        db, "SELECT status, dispatched_at IS NOT NULL FROM batches WHERE id = :b", b=following
    ) == [("pending", True)]
    assert scalar(db, "SELECT COUNT(*) FROM key_leases") == 1


class LockWithoutTakeover(RedisKeyLock):
    """Redis is gone for every lock taken outside an ingest."""

    def acquire(self, key_id: KeyId, owner: str, ttl: float, *, force: bool = False) -> bool:
        if not owner.startswith("grant:"):
            raise RedisUnavailable("Redis is down")
        return super().acquire(key_id, owner, ttl, force=force)


def test_a_chain_that_cannot_lock_the_next_key_sends_the_batch_instead(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
) -> None:
    seed(store, key_pool, records=10, keys=2)
    lock = LockWithoutTakeover(key_lock.client)
    pipeline = make(store, lock, settings, batch_size=5, max_in_flight=1, chain_seconds=60)
    lease = lease_the_claimed_batch(pipeline)
    first = lease.batch_id

    sent: list[list[BatchId]] = []
    assert pipeline.sign_and_top_up(lease, sent.append) == "signed"

    # The signed batch is committed; the one it claimed waits for its message, unleased
    [[following]] = sent
    assert rows(db, "SELECT id, status FROM batches ORDER BY id") == [
        (first, "signed"),
        (following, "pending"),
    ]
    assert scalar(db, "SELECT COUNT(*) FROM key_leases") == 1
    assert scalar(db, "SELECT COUNT(*) FROM keys WHERE lease_token IS NOT NULL") == 0


class Killed(BaseException):
    """The process died here: nothing after it runs, no handler catches it."""


def test_a_chain_cut_short_by_a_dead_process_leaves_a_lease_that_expires(
    db: Database,
    store: Store,
    key_lock: RedisKeyLock,
    settings: Settings,
    key_pool: list[KeyMaterial],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a chained sign whose process dies in the batch its commit leased to it
    seed(store, key_pool, records=10, keys=2)
    pipeline = make(
        store, key_lock, settings, batch_size=5, max_in_flight=1, lease_ttl=0.5, chain_seconds=60
    )
    lease = lease_the_claimed_batch(pipeline)
    first = lease.batch_id
    real_sign = signing.sign
    signatures = itertools.count()

    def dies_in_the_second_batch(key: object, payload: bytes) -> bytes:
        if next(signatures) == 7:
            raise Killed
        return real_sign(key, payload)  # type: ignore[arg-type]

    monkeypatch.setattr(signing, "sign", dies_in_the_second_batch)
    with pytest.raises(Killed):
        pipeline.sign_and_top_up(lease, lambda _ids: None)
    monkeypatch.undo()

    # Then the first batch is signed and the second is leased to the dead
    # execution, with no message to bring it back
    ((second,),) = rows(db, "SELECT id FROM batches WHERE id <> :b", b=first)
    assert rows(db, "SELECT status, dispatched_at IS NOT NULL FROM batches ORDER BY id") == [
        ("signed", True),
        ("leased", True),
    ]
    assert scalar(db, "SELECT COUNT(*) FROM keys WHERE lease_holder IS NOT NULL") == 1
    # When its lease has expired, emit re-opens the batch and sends it again
    time.sleep(0.7)
    report = pipeline.emit()
    assert report.reopened == [second] and report.dispatch == [second]
    again = pipeline.ingest(second)
    assert again is not None
    assert pipeline.sign(again) == "signed"
    # ...and nothing was signed twice, no lease overlapped, nothing was lost
    verdict = run_verify(db)
    assert verdict.ok, verdict.as_dict()
    assert verdict.signatures == 10
    assert rows(db, "SELECT outcome FROM key_leases ORDER BY id") == [
        ("signed",),
        ("expired",),
        ("signed",),
    ]
