"""Plain-SQL checks and race helpers for the integration tests.

Functions run in other processes live here, at module level, so that a
``spawn``-ed process can import them.
"""

from __future__ import annotations

import collections
import datetime as dt
import multiprocessing
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import insert, select, text, update

from signwave.errors import NoKeyAvailable
from signwave.ids import BatchId
from signwave.lock import RedisKeyLock
from signwave.pipeline import Pipeline
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store
from signwave.store.schema import batches, keys, records

# Not fork: a forked child would inherit the test's pooled connections and threads.
# A fork server imports signwave once and then starts processes quickly.
_SPAWN = multiprocessing.get_context("forkserver")
_SPAWN.set_forkserver_preload([__name__])
READY_TIMEOUT_S = 60.0


# -- plain SQL ----------------------------------------------------------------


def rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Plain SQL, so that assertions do not go through the code under test."""
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def scalar(db: Database, sql: str, **params: Any) -> Any:
    with db.read() as conn:
        return conn.execute(text(sql), params).scalar_one()


def overlapping_lease_pairs(db: Database) -> list[tuple[Any, ...]]:
    """Pairs of leases of one key whose intervals intersect (an open lease runs until expiry)."""
    return rows(
        db,
        "SELECT a.id, b.id, a.key_id FROM key_leases a JOIN key_leases b "
        "ON a.key_id = b.key_id AND a.id < b.id "
        "WHERE a.acquired_at < COALESCE(b.released_at, b.expires_at) "
        "AND b.acquired_at < COALESCE(a.released_at, a.expires_at)",
    )


def batch_membership_errors(db: Database, batch_size: int) -> list[tuple[Any, ...]]:
    """Batches whose recorded count is not their number of records, or too big, or empty."""
    return rows(
        db,
        "SELECT b.id, b.record_count, b.size, COUNT(r.id) FROM batches b "
        "LEFT JOIN records r ON r.batch_id = b.id "
        "GROUP BY b.id, b.record_count, b.size "
        "HAVING COUNT(r.id) <> b.record_count OR COUNT(r.id) = 0 "
        "OR b.size <> :size OR b.record_count > :size",
        size=batch_size,
    )


def unsigned_count(db: Database) -> int:
    return int(
        scalar(
            db,
            "SELECT COUNT(*) FROM records r LEFT JOIN signatures s ON s.record_id = r.id "
            "WHERE s.record_id IS NULL",
        )
    )


# -- test data ----------------------------------------------------------------


def fake_keys(count: int) -> list[KeyMaterial]:
    """Key rows for tests that only count keys (claiming); they cannot sign."""
    return [
        KeyMaterial(
            private_key_pem=b"unused",
            public_key_pem=b"unused",
            fingerprint=f"{i:064x}",
            bits=2048,
        )
        for i in range(1, count + 1)
    ]


def make_pending_batches(db: Database, count: int, size: int) -> list[BatchId]:
    """Pending batches of ``size`` unbatched records each, made without the claim
    logic (which never makes more batches than there are keys)."""
    made: list[BatchId] = []
    with db.write() as conn:
        now = db.now(conn)
        for _ in range(count):
            batch_id = conn.execute(
                insert(batches)
                .values(status="pending", size=size, record_count=size, created_at=now)
                .returning(batches.c.id)
            ).scalar_one()
            ids = list(
                conn.execute(
                    select(records.c.id)
                    .where(records.c.batch_id.is_(None))
                    .order_by(records.c.id)
                    .limit(size)
                ).scalars()
            )
            assert len(ids) == size, "seed more records"
            conn.execute(update(records).where(records.c.id.in_(ids)).values(batch_id=batch_id))
            made.append(BatchId(batch_id))
    return made


def set_last_used(db: Database, last_used: dict[int, dt.datetime | None]) -> None:
    with db.write() as conn:
        for key_id, at in last_used.items():
            conn.execute(update(keys).where(keys.c.id == key_id).values(last_used_at=at))


# -- races --------------------------------------------------------------------


def _in_process(
    index: int,
    barrier: Any,
    results: Any,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    try:
        barrier.wait(READY_TIMEOUT_S)
        results.put((index, True, fn(*args)))
    except BaseException as exc:
        results.put((index, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def race(
    threads: Sequence[Callable[[], Any]],
    processes: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]] = (),
    *,
    timeout: float = 120.0,
) -> list[Any]:
    """Start every call at once, in threads of this process and in spawned
    processes; return their results (threads first). Any failure fails the test."""
    p_barrier = _SPAWN.Barrier(len(processes) + 1)
    t_barrier = threading.Barrier(len(threads) + 1)
    queue = _SPAWN.Queue()
    procs = [
        _SPAWN.Process(target=_in_process, args=(i, p_barrier, queue, fn, args), daemon=True)
        for i, (fn, args) in enumerate(processes)
    ]
    for p in procs:
        p.start()

    def in_thread(call: Callable[[], Any]) -> Any:
        t_barrier.wait(READY_TIMEOUT_S)
        return call()

    try:
        with ThreadPoolExecutor(max(1, len(threads))) as pool:
            futures = [pool.submit(in_thread, call) for call in threads]
            p_barrier.wait(READY_TIMEOUT_S)  # every process has started and imported
            t_barrier.wait(READY_TIMEOUT_S)
            results = [f.result(timeout) for f in futures]
        from_procs: dict[int, Any] = {}
        for _ in procs:
            index, ok, value = queue.get(timeout=timeout)
            assert ok, f"process {index} failed: {value}"
            from_procs[index] = value
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        queue.close()
        queue.join_thread()
    return results + [from_procs[i] for i in range(len(procs))]


def claim_until_done(database_url: str, batch_size: int, limit: int) -> list[int]:
    """Claim batches until there is nothing left to claim."""
    db = Database(database_url)
    try:
        store = Store(db)
        claimed: list[int] = []
        empty = 0
        while empty < 3:
            got = store.claim_batches(batch_size=batch_size, limit=limit)
            claimed.extend(got)
            empty = 0 if got else empty + 1
        return claimed
    finally:
        db.dispose()


def ingest_each(settings: Settings, batch_ids: list[int]) -> list[tuple[int, int | None]]:
    """(batch id, leased key id or None) for an ingest of each batch."""
    db = Database(settings.database_url)
    lock = RedisKeyLock.from_url(settings.redis_url)
    try:
        p = Pipeline(store=Store(db), lock=lock, settings=settings)
        out: list[tuple[int, int | None]] = []
        for batch_id in batch_ids:
            try:
                lease = p.ingest(BatchId(batch_id))
            except NoKeyAvailable:
                out.append((batch_id, None))
                continue
            assert lease is not None, "a pending batch was not leased"
            out.append((batch_id, lease.key_id))
        return out
    finally:
        lock.client.close()
        db.dispose()


def work_until_signed(settings: Settings, seconds: float) -> dict[str, int]:
    """One signer: emit, try to lease pending batches in random order, sign what
    it got (and, with ``settings.chain_seconds``, what its commits lease to it
    for that long); until every record is signed. Returns how often each outcome of a
    leased batch happened."""
    db = Database(settings.database_url)
    lock = RedisKeyLock.from_url(settings.redis_url)
    outcomes: collections.Counter[str] = collections.Counter()
    try:
        p = Pipeline(store=Store(db), lock=lock, settings=settings)
        deadline = time.monotonic() + seconds
        while unsigned_count(db):
            assert time.monotonic() < deadline, f"not all signed in {seconds} s: {outcomes}"
            p.emit()
            pending = [r[0] for r in rows(db, "SELECT id FROM batches WHERE status = 'pending'")]
            random.shuffle(pending)
            for batch_id in pending:
                try:
                    lease = p.ingest(BatchId(batch_id))
                except NoKeyAvailable:
                    outcomes["no-key"] += 1
                    continue
                if lease is None:
                    outcomes["not-pending"] += 1
                    continue
                if settings.chain_seconds:
                    outcomes[p.sign_and_top_up(lease, lambda _ids: None)] += 1
                else:
                    outcomes[p.sign(lease)] += 1
            if not pending:
                time.sleep(0.005)
        return dict(outcomes)
    finally:
        lock.client.close()
        db.dispose()
