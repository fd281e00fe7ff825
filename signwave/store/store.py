"""Every SQL statement signwave runs against its own tables.

Lease state changes (grant, start, renew, commit, fail, expire) all run under
the lease lock: SQLite's write lock, or a transaction-scoped advisory lock on
PostgreSQL. Decisions are therefore serial, and the database clock read inside
the lock orders them; the audit trail in ``key_leases`` can be replayed exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import Connection, func, insert, select, update

from signwave.errors import LeaseLost, RunInProgress
from signwave.ids import BatchId, HolderId, KeyId, LeaseToken, RecordId
from signwave.keycrypt import PLAINTEXT, KeyCipher
from signwave.signing import ALGORITHM, KeyMaterial
from signwave.store import bulk, claims, hot
from signwave.store.claims import TopUp
from signwave.store.engine import Database
from signwave.store.schema import batches, keys, records, signatures

logger = logging.getLogger(__name__)


Payloads = list[tuple[RecordId, bytes]]
"""A batch's records, (id, payload), in id order."""

SIGNATURE_COLUMNS = ("record_id", "key_id", "batch_id", "lease_token", "signature", "signed_at")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lease:
    batch_id: BatchId
    key_id: KeyId
    token: LeaseToken

    @property
    def lock_owner(self) -> str:
        """The Redis lock's value between grant and the start of signing."""
        return f"grant:{self.key_id}:{self.token}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Started:
    """A lease that ``holder`` has started signing under, and its batch's records."""

    lease: Lease
    holder: HolderId
    payloads: Payloads


@dataclasses.dataclass(frozen=True, kw_only=True)
class Follow:
    """Asks a commit to lease a batch it claims to ``holder`` at once, started.

    ``lock`` takes the key's Redis lock for ``holder`` before anything is
    written; if it returns False, the batch is dispatched like the others."""

    holder: HolderId
    ttl: float
    lock: Callable[[Lease], bool]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Committed:
    """What a commit with a top-up claimed: batches whose ingest must be sent,
    and the one leased to the committing execution, if it asked to follow on."""

    dispatch: list[BatchId]
    next: Started | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Grant:
    """What `Store.grant_lease` decided."""

    lease: Lease | None
    reason: str  # "leased", "not-pending", "no-key"


class Store:
    def __init__(self, db: Database, *, cipher: KeyCipher = PLAINTEXT) -> None:
        self.db = db
        self.cipher = cipher

    # -- seeding -------------------------------------------------------------

    def add_records(self, payloads: Iterable[bytes], *, chunk: int = 5_000) -> int:
        """Insert payloads in one transaction (all or nothing); return how many."""
        count = 0
        with self.db.write() as conn:
            for group in bulk.batched(payloads, chunk):
                bulk.insert_rows(self.db, conn, records, ("payload",), [(p,) for p in group])
                count += len(group)
        self.db.analyze(records.name)
        return count

    def add_keys(self, materials: Sequence[KeyMaterial]) -> tuple[list[KeyId], list[str]]:
        """Insert keys not yet present; return (new ids, fingerprints already present)."""
        # Under the lease lock: a key's created_at must not precede a grant that
        # could not see it yet, or verify's LRU replay (G4) would blame that grant.
        with self.db.locked(lease_lock=True) as (conn, now):
            present = set(
                conn.execute(
                    select(keys.c.fingerprint).where(
                        keys.c.fingerprint.in_([m.fingerprint for m in materials])
                    )
                ).scalars()
            )
            new: list[KeyId] = []
            skipped: list[str] = []
            for m in materials:
                if m.fingerprint in present:
                    skipped.append(m.fingerprint)
                    continue
                present.add(m.fingerprint)
                key_id = conn.execute(
                    insert(keys)
                    .values(
                        algorithm=ALGORITHM,
                        bits=m.bits,
                        public_key_pem=m.public_key_pem.decode(),
                        private_key_pem=self.cipher.seal(m.private_key_pem),
                        fingerprint=m.fingerprint,
                        created_at=now,
                    )
                    .returning(keys.c.id)
                ).scalar_one()
                new.append(KeyId(key_id))
        return new, skipped

    def has_keys(self) -> bool:
        with self.db.read() as conn:
            return conn.execute(select(keys.c.id).limit(1)).first() is not None

    def refuse_if_running(self) -> None:
        with self.db.read() as conn:
            n = conn.execute(
                select(func.count())
                .select_from(batches)
                .where(batches.c.status.in_(claims.IN_FLIGHT))
            ).scalar_one()
        if n:
            raise RunInProgress(
                f"a signing run is in progress ({n} batches in flight): "
                "wait until `signwave status` shows none, then try again"
            )

    # -- emit ----------------------------------------------------------------

    def reap_expired(self) -> list[BatchId]:
        """Close expired leases, free their keys and re-open their batches."""
        with self.db.locked(lease_lock=True) as (conn, now):
            return self._reap(conn, now)

    def _reap(self, conn: Connection, now: dt.datetime) -> list[BatchId]:
        expired = conn.execute(hot.EXPIRED_LEASES, {"p_now": now}).all()
        reopened: list[BatchId] = []
        for key_id, token, batch_id, expires_at in expired:
            # The lease ended when it expired, not when we noticed: that is the
            # interval the audit trail must show, and the key's last use.
            conn.execute(
                update(keys)
                .where(keys.c.id == key_id, keys.c.lease_token == token)
                .values(hot.free_key(expires_at))
            )
            _close_lease(conn, KeyId(key_id), LeaseToken(token), expires_at, "expired", None)
            done = conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.status == "leased",
                    batches.c.key_id == key_id,
                    batches.c.lease_token == token,
                )
                .values(status="pending", key_id=None, lease_token=None, dispatched_at=None)
            )
            if done.rowcount:
                reopened.append(BatchId(batch_id))
            logger.warning(
                "lease of key %s for batch %s expired; batch re-opened",
                key_id,
                batch_id,
                extra={"action": "lease_expired", "key_id": key_id, "batch_id": batch_id},
            )
        return reopened

    def claim_batches(self, *, batch_size: int, limit: int) -> list[BatchId]:
        """Claim unbatched records into at most as many new batches as keep
        ``limit`` batches in flight (backpressure); return the new batch ids."""
        with self.db.locked(claim_lock=True) as (conn, now):
            return claims.claim(conn, now, batch_size, limit, dispatched=False)

    def claim_and_dispatch(self, top_up: TopUp) -> tuple[list[BatchId], list[BatchId]]:
        """`claim_batches`, then the pending batches whose ingest was never sent
        or was sent longer than ``top_up.older_than`` ago (its message may be lost), in
        one transaction: (new batches, every batch whose ingest must be sent now)."""
        with self.db.locked(claim_lock=True) as (conn, now):
            return claims.top_up(conn, now, top_up)

    # -- ingest --------------------------------------------------------------

    def grant_lease(self, batch_id: BatchId, *, ttl: float, lock: Callable[[Lease], None]) -> Grant:
        """Lease the least recently used free key to a pending batch (G4).

        ``lock`` takes the Redis lock before the lease commits; if it raises,
        nothing is leased.
        """
        with self.db.locked(lease_lock=True) as (conn, now):
            row = self._lru_free_key(conn, now)
            if row is None:
                status = conn.execute(hot.BATCH_STATUS, {"p_batch": batch_id}).scalar_one_or_none()
                return Grant(lease=None, reason="no-key" if status == "pending" else "not-pending")
            lease = _next_lease(batch_id, row)
            if not _open_lease(conn, now, lease, ttl=ttl, holder=None):
                return Grant(lease=None, reason="not-pending")
            lock(lease)
        return Grant(lease=lease, reason="leased")

    def _lru_free_key(self, conn: Connection, now: dt.datetime) -> tuple[KeyId, int] | None:
        """(id, lease counter) of the least recently used free key (G4), after
        reaping expired leases if there are any: their keys may be older still.
        None if no key is free."""
        row = conn.execute(hot.LRU_FREE_KEY, {"p_now": now}).first()
        if row is None or row.expired:
            self._reap(conn, now)
            row = conn.execute(hot.LRU_FREE_KEY, {"p_now": now}).first()
        return None if row is None else (KeyId(row[0]), row[1])

    def _follow(
        self, conn: Connection, now: dt.datetime, batch_id: BatchId, follow: Follow
    ) -> Started | None:
        """Lease ``batch_id``, just claimed in this transaction, to ``follow.holder``,
        started, by the same rule as `grant_lease`; None if no key is free or
        the Redis lock could not be taken (nothing is then written)."""
        row = self._lru_free_key(conn, now)
        if row is None:
            return None
        lease = _next_lease(batch_id, row)
        if not follow.lock(lease):
            return None
        if not _open_lease(conn, now, lease, ttl=follow.ttl, holder=follow.holder):
            raise LeaseLost(f"batch {batch_id}, claimed in this transaction, is not pending")
        return Started(lease=lease, holder=follow.holder, payloads=_payloads(conn, batch_id))

    # -- sign ----------------------------------------------------------------

    def start_signing(self, lease: Lease, holder: HolderId, *, ttl: float) -> Payloads | None:
        """Make ``holder`` the one execution that signs under ``lease``, renew
        it, and return the batch's records to sign. None if the lease is gone,
        expired or already being used."""
        with self.db.locked(lease_lock=True) as (conn, now):
            if not self._extend(conn, now, lease, holder, ttl, first=True):
                return None
            return _payloads(conn, lease.batch_id)

    def renew(self, lease: Lease, holder: HolderId, *, ttl: float) -> bool:
        with self.db.locked(lease_lock=True) as (conn, now):
            return self._extend(conn, now, lease, holder, ttl, first=False)

    def _extend(
        self,
        conn: Connection,
        now: dt.datetime,
        lease: Lease,
        holder: HolderId,
        ttl: float,
        *,
        first: bool,
    ) -> bool:
        params = _lease_params(
            lease, now, p_holder=holder, p_expires=now + dt.timedelta(seconds=ttl)
        )
        if not conn.execute(hot.START_KEY if first else hot.RENEW_KEY, params).rowcount:
            return False
        conn.execute(hot.EXTEND_LEASE, params)
        return True

    def batch_payloads(self, batch_id: BatchId) -> Payloads:
        with self.db.read() as conn:
            return _payloads(conn, batch_id)

    def private_key(self, key_id: KeyId) -> tuple[str, bytes]:
        """(fingerprint, private PEM) of a key."""
        with self.db.read() as conn:
            row = conn.execute(
                select(keys.c.fingerprint, keys.c.private_key_pem).where(keys.c.id == key_id)
            ).one()
        return row[0], self.cipher.open(row[1], key_id=key_id)

    def commit_signatures(
        self,
        lease: Lease,
        holder: HolderId,
        sigs: Sequence[tuple[RecordId, bytes]],
        *,
        top_up: TopUp | None = None,
        follow: Follow | None = None,
    ) -> Committed:
        """Store a batch's signatures in one transaction, accepted only if
        ``lease`` is still current and held by ``holder`` (G1, G2); release it.

        With ``top_up``, the same transaction claims the batches the freed key
        makes room for; with ``follow`` too, it leases the first of them to
        ``follow.holder``, started, so that it is signed without a message."""
        with self.db.locked(lease_lock=True, claim_lock=top_up is not None) as (conn, now):
            params = _lease_params(lease, now, p_holder=holder)
            if not conn.execute(hot.RELEASE_SIGNED_KEY, params).rowcount:
                raise LeaseLost(
                    f"lease {lease.token} of key {lease.key_id} for batch {lease.batch_id} "
                    "is no longer held: nothing stored"
                )
            if not conn.execute(hot.BATCH_SIGNED, params).rowcount:
                raise LeaseLost(f"batch {lease.batch_id} is not leased to key {lease.key_id}")
            rows = ((rid, lease.key_id, lease.batch_id, lease.token, sig, now) for rid, sig in sigs)
            bulk.insert_rows(self.db, conn, signatures, SIGNATURE_COLUMNS, rows)
            _close_lease(conn, lease.key_id, lease.token, now, "signed", None)
            if top_up is None:
                return Committed(dispatch=[])
            # Only new batches: re-opened and stale ones are beat's (emit's) to send.
            claimed = claims.claim(conn, now, top_up.batch_size, top_up.limit, dispatched=True)
            started = None
            if follow is not None and claimed:
                started = self._follow(conn, now, claimed[0], follow)
            return Committed(dispatch=claimed[1:] if started else claimed, next=started)

    def record_failure(
        self, lease: Lease, holder: HolderId | None, error: str, *, max_failures: int
    ) -> str | None:
        """Release ``lease`` after a failed attempt; the batch goes back to
        pending, or to failed after ``max_failures``. Returns the batch's new
        status, or None if the lease was not ours any more."""
        with self.db.locked(lease_lock=True) as (conn, now):
            holder_clause = (
                keys.c.lease_holder.is_(None) if holder is None else keys.c.lease_holder == holder
            )
            released = conn.execute(
                update(keys).where(*hot.LEASE_IS_CURRENT, holder_clause).values(hot.free_key(now)),
                _lease_params(lease, now),
            ).rowcount
            if not released:
                return None
            _close_lease(conn, lease.key_id, lease.token, now, "failed", error)
            failures = (
                conn.execute(
                    select(batches.c.failures).where(batches.c.id == lease.batch_id)
                ).scalar_one()
                + 1
            )
            status = "failed" if failures >= max_failures else "pending"
            conn.execute(
                update(batches)
                .where(batches.c.id == lease.batch_id, batches.c.lease_token == lease.token)
                .values(
                    status=status,
                    failures=failures,
                    error=error[:2000],
                    dispatched_at=None,
                    **({} if status == "failed" else {"key_id": None, "lease_token": None}),
                )
            )
            return status


def _next_lease(batch_id: BatchId, key: tuple[KeyId, int]) -> Lease:
    key_id, counter = key
    return Lease(batch_id=batch_id, key_id=key_id, token=LeaseToken(counter + 1))


def _open_lease(
    conn: Connection, now: dt.datetime, lease: Lease, *, ttl: float, holder: HolderId | None
) -> bool:
    """Give ``lease``'s key to its batch if the batch is pending; False if not."""
    params = _lease_params(lease, now, p_holder=holder, p_expires=now + dt.timedelta(seconds=ttl))
    if not conn.execute(hot.TAKE_BATCH, params).rowcount:
        return False
    conn.execute(hot.LEASE_KEY, params)
    conn.execute(hot.OPEN_LEASE, params)
    return True


def _payloads(conn: Connection, batch_id: BatchId) -> Payloads:
    rows = conn.execute(hot.PAYLOADS, {"p_batch": batch_id}).all()
    return [(RecordId(r[0]), bytes(r[1])) for r in rows]


def _lease_params(lease: Lease, now: dt.datetime, **more: object) -> dict[str, object]:
    """The bind parameters of `hot`'s statements about ``lease`` at ``now``."""
    return {
        "p_key": lease.key_id,
        "p_token": lease.token,
        "p_batch": lease.batch_id,
        "p_now": now,
        **more,
    }


def _close_lease(
    conn: Connection,
    key_id: KeyId,
    token: LeaseToken,
    at: dt.datetime,
    outcome: str,
    error: str | None,
) -> None:
    conn.execute(
        hot.CLOSE_LEASE,
        {"p_key": key_id, "p_token": token, "p_now": at, "p_outcome": outcome, "p_error": error},
    )
