"""Read-only queries from which `signwave verify` checks the guarantees."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

from sqlalchemy import and_, func, or_, select

from signwave.ids import BatchId, KeyId, LeaseToken, RecordId
from signwave.store.engine import Database
from signwave.store.schema import batches, key_leases, keys, records, signatures

SAMPLE = 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeaseRow:
    id: int
    key_id: KeyId
    batch_id: BatchId
    token: LeaseToken
    acquired_at: dt.datetime
    expires_at: dt.datetime
    released_at: dt.datetime | None
    outcome: str | None

    @property
    def end(self) -> dt.datetime | None:
        """When the lease stopped; None while it may still be in use."""
        return self.released_at


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyRow:
    id: KeyId
    created_at: dt.datetime
    public_key_pem: bytes


def _ids(db: Database, statement: object) -> tuple[int, list[int]]:
    """(count, first ids) of a query that selects one id column."""
    with db.read() as conn:
        sub = statement.subquery()  # type: ignore[attr-defined]
        count = int(conn.execute(select(func.count()).select_from(sub)).scalar_one())
        sample = [int(i) for i in conn.execute(select(sub).limit(SAMPLE)).scalars()]
    return count, sample


def counts(db: Database) -> tuple[int, int]:
    with db.read() as conn:
        n_records = conn.execute(select(func.count()).select_from(records)).scalar_one()
        n_signatures = conn.execute(select(func.count()).select_from(signatures)).scalar_one()
    return int(n_records), int(n_signatures)


def unsigned(db: Database, *, in_failed: bool) -> tuple[int, list[int]]:
    """Records without a signature, in failed batches or not (G6)."""
    j = records.outerjoin(signatures, signatures.c.record_id == records.c.id).outerjoin(
        batches, batches.c.id == records.c.batch_id
    )
    failed = batches.c.status == "failed"
    cond = failed if in_failed else or_(batches.c.status.is_(None), batches.c.status != "failed")
    q = select(records.c.id).select_from(j).where(signatures.c.record_id.is_(None), cond)
    return _ids(db, q.order_by(records.c.id))


def duplicate_signatures(db: Database) -> tuple[int, list[int]]:
    """Records with more than one signature (G1); the primary key forbids it."""
    q = select(signatures.c.record_id).group_by(signatures.c.record_id).having(func.count() > 1)
    return _ids(db, q)


def wrong_key_or_batch(db: Database) -> tuple[int, list[int]]:
    """Signatures not made with their batch's key, or stored under another batch (G3)."""
    q = (
        select(signatures.c.record_id)
        .select_from(
            signatures.join(batches, batches.c.id == signatures.c.batch_id).join(
                records, records.c.id == signatures.c.record_id
            )
        )
        .where(
            or_(
                signatures.c.key_id != batches.c.key_id,
                records.c.batch_id != signatures.c.batch_id,
                signatures.c.lease_token != batches.c.lease_token,
            )
        )
    )
    return _ids(db, q)


def signatures_outside_lease(db: Database) -> tuple[int, list[int]]:
    """Signatures without a matching, successfully closed lease of their key and batch,
    or stored outside its interval (G2)."""
    lease = key_leases
    q = (
        select(signatures.c.record_id)
        .select_from(
            signatures.outerjoin(
                lease,
                and_(
                    lease.c.key_id == signatures.c.key_id, lease.c.token == signatures.c.lease_token
                ),
            )
        )
        .where(
            or_(
                lease.c.id.is_(None),
                lease.c.batch_id != signatures.c.batch_id,
                lease.c.outcome.is_(None),
                lease.c.outcome != "signed",
                signatures.c.signed_at < lease.c.acquired_at,
                signatures.c.signed_at > lease.c.released_at,
            )
        )
    )
    return _ids(db, q)


def batch_size_violations(db: Database) -> tuple[int, list[int]]:
    """Batches whose recorded size disagrees with their records (G5)."""
    members = (
        select(records.c.batch_id, func.count().label("n"))
        .where(records.c.batch_id.is_not(None))
        .group_by(records.c.batch_id)
        .subquery()
    )
    q = (
        select(batches.c.id)
        .select_from(batches.outerjoin(members, members.c.batch_id == batches.c.id))
        .where(
            or_(
                func.coalesce(members.c.n, 0) != batches.c.record_count,
                batches.c.record_count > batches.c.size,
            )
        )
    )
    return _ids(db, q)


def batch_sizes(db: Database) -> list[int]:
    with db.read() as conn:
        return sorted(int(s) for s in conn.execute(select(batches.c.size).distinct()).scalars())


def failed_batches(db: Database) -> list[tuple[int, str | None]]:
    with db.read() as conn:
        rows = conn.execute(
            select(batches.c.id, batches.c.error)
            .where(batches.c.status == "failed")
            .order_by(batches.c.id)
        ).all()
    return [(int(i), e) for i, e in rows]


def leases(db: Database) -> list[LeaseRow]:
    with db.read() as conn:
        rows = conn.execute(
            select(
                key_leases.c.id,
                key_leases.c.key_id,
                key_leases.c.batch_id,
                key_leases.c.token,
                key_leases.c.acquired_at,
                key_leases.c.expires_at,
                key_leases.c.released_at,
                key_leases.c.outcome,
            ).order_by(key_leases.c.acquired_at, key_leases.c.id)
        ).all()
    return [
        LeaseRow(
            id=r[0],
            key_id=KeyId(r[1]),
            batch_id=BatchId(r[2]),
            token=LeaseToken(r[3]),
            acquired_at=r[4],
            expires_at=r[5],
            released_at=r[6],
            outcome=r[7],
        )
        for r in rows
    ]


def all_keys(db: Database) -> list[KeyRow]:
    with db.read() as conn:
        rows = conn.execute(
            select(keys.c.id, keys.c.created_at, keys.c.public_key_pem).order_by(keys.c.id)
        ).all()
    return [KeyRow(id=KeyId(r[0]), created_at=r[1], public_key_pem=r[2].encode()) for r in rows]


def signed_payloads(
    db: Database, *, chunk: int = 5_000
) -> Iterator[list[tuple[RecordId, KeyId, bytes, bytes]]]:
    """(record, key, payload, signature) for every signature, in chunks, by record id."""
    last = -1
    while True:
        with db.read() as conn:
            rows = conn.execute(
                select(
                    signatures.c.record_id,
                    signatures.c.key_id,
                    records.c.payload,
                    signatures.c.signature,
                )
                .select_from(signatures.join(records, records.c.id == signatures.c.record_id))
                .where(signatures.c.record_id > last)
                .order_by(signatures.c.record_id)
                .limit(chunk)
            ).all()
        if not rows:
            return
        yield [(RecordId(r[0]), KeyId(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]
        last = rows[-1][0]
