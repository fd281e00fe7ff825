"""SQL of import and export: records in, keys listed and re-encrypted, signatures
and public keys out.

Imports run in one transaction, so a bad file leaves nothing behind; exports
stream rows in chunks from one read transaction, a consistent snapshot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator

from sqlalchemy import Connection, bindparam, func, select, update

from signwave.errors import RunInProgress
from signwave.ids import BatchId, KeyId, RecordId
from signwave.keycrypt import PREFIX, KeyCipher
from signwave.store import bulk
from signwave.store.engine import Database
from signwave.store.schema import batches, keys, records, signatures

CHUNK_ROWS = 5_000
CHUNK_BYTES = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyInfo:
    """What `signwave keys list` shows of a key: never its private part."""

    id: KeyId
    fingerprint: str
    bits: int
    use_count: int
    last_used_at: dt.datetime | None
    leased: bool
    encrypted: bool

    def as_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["last_used_at"] = _iso(self.last_used_at) if self.last_used_at else None
        return d


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class SignatureRow:
    record_id: RecordId
    key_id: KeyId
    batch_id: BatchId
    payload: bytes
    signature: bytes
    signed_at: dt.datetime

    def __repr__(self) -> str:
        # Payloads stay out of logs and tracebacks.
        return f"SignatureRow(record_id={self.record_id}, key_id={self.key_id})"

    @property
    def signed_at_iso(self) -> str:
        return _iso(self.signed_at)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


# -- records -------------------------------------------------------------------


def import_records(
    db: Database,
    payloads: Iterable[bytes],
    *,
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> int:
    """Insert payloads as they come, in chunks, in one transaction: an exception
    from ``payloads`` (a bad line) rolls everything back. Refused while a run
    is in progress; the check is inside the transaction, so on SQLite no batch
    can be claimed between the check and the commit."""
    count = 0
    with db.write() as conn:
        _refuse_if_running(conn)
        chunk: list[tuple[bytes]] = []
        size = 0
        for payload in payloads:
            chunk.append((payload,))
            size += len(payload)
            if len(chunk) >= chunk_rows or size >= chunk_bytes:
                bulk.insert_rows(db, conn, records, ("payload",), chunk)
                count += len(chunk)
                chunk, size = [], 0
        if chunk:
            bulk.insert_rows(db, conn, records, ("payload",), chunk)
            count += len(chunk)
    db.analyze(records.name)
    return count


def _refuse_if_running(conn: Connection) -> None:
    n = conn.execute(
        select(func.count()).select_from(batches).where(batches.c.status.in_(("pending", "leased")))
    ).scalar_one()
    if n:
        raise RunInProgress(
            f"a signing run is in progress ({n} batches in flight): "
            "wait until `signwave status` shows none, then try again"
        )


# -- keys ----------------------------------------------------------------------


def list_keys(db: Database) -> list[KeyInfo]:
    with db.read() as conn:
        now = db.now(conn)
        rows = conn.execute(
            select(
                keys.c.id,
                keys.c.fingerprint,
                keys.c.bits,
                keys.c.use_count,
                keys.c.last_used_at,
                keys.c.lease_token.is_not(None) & (keys.c.lease_expires_at > now),
                keys.c.private_key_pem.startswith(PREFIX, autoescape=True),
            ).order_by(keys.c.id)
        ).all()
    return [
        KeyInfo(
            id=KeyId(r[0]),
            fingerprint=r[1],
            bits=int(r[2]),
            use_count=int(r[3]),
            last_used_at=r[4],
            leased=bool(r[5]),
            encrypted=bool(r[6]),
        )
        for r in rows
    ]


def iter_public_keys(db: Database, *, chunk: int = 500) -> Iterator[tuple[KeyId, str]]:
    """(key id, SubjectPublicKeyInfo PEM) of every key, in id order."""
    with db.read() as conn:
        result = conn.execution_options(yield_per=chunk).execute(
            select(keys.c.id, keys.c.public_key_pem).order_by(keys.c.id)
        )
        # Closed even when the caller stops early: on PostgreSQL this is a server-side cursor.
        with contextlib.closing(result):
            for key_id, pem in result:
                yield KeyId(key_id), pem


def check_key_encryption(db: Database, cipher: KeyCipher, *, chunk: int = 500) -> None:
    """Raise `KeyEncryptionError` naming the first stored encrypted key that ``cipher``
    cannot open. Each is decrypted and dropped at once (Fernet is cheap; no key is parsed)."""
    last = -1
    while True:
        with db.read() as conn:
            rows = conn.execute(
                select(keys.c.id, keys.c.private_key_pem)
                .where(
                    keys.c.id > last,
                    keys.c.private_key_pem.startswith(PREFIX, autoescape=True),
                )
                .order_by(keys.c.id)
                .limit(chunk)
            ).all()
        if not rows:
            return
        for key_id, stored in rows:
            cipher.open(stored, key_id=KeyId(key_id))
        last = rows[-1][0]


def reseal_private_keys(
    db: Database, current: KeyCipher, new: KeyCipher, *, chunk: int = 500
) -> int:
    """Re-encrypt every private key from ``current`` to ``new``, all or nothing.

    Serialised with lease decisions and refused while a run is in progress:
    a worker that loads a key mid-rotation would hold the wrong encryption key.
    """
    count = 0
    with db.locked(lease_lock=True) as (conn, _):
        _refuse_if_running(conn)
        last = -1
        while True:
            rows = conn.execute(
                select(keys.c.id, keys.c.private_key_pem)
                .where(keys.c.id > last)
                .order_by(keys.c.id)
                .limit(chunk)
            ).all()
            if not rows:
                break
            conn.execute(
                update(keys)
                .where(keys.c.id == bindparam("key_id"))
                .values(private_key_pem=bindparam("sealed")),
                [
                    {"key_id": kid, "sealed": new.seal(current.open(stored, key_id=KeyId(kid)))}
                    for kid, stored in rows
                ],
            )
            count += len(rows)
            last = rows[-1][0]
    return count


# -- signatures ----------------------------------------------------------------


def iter_signatures(db: Database, *, chunk: int = CHUNK_ROWS) -> Iterator[SignatureRow]:
    """Every signature with its payload, in record id order, fetched ``chunk`` rows at a time."""
    statement = (
        select(
            signatures.c.record_id,
            signatures.c.key_id,
            signatures.c.batch_id,
            records.c.payload,
            signatures.c.signature,
            signatures.c.signed_at,
        )
        .join(records, records.c.id == signatures.c.record_id)
        .order_by(signatures.c.record_id)
    )
    with db.read() as conn:
        result = conn.execution_options(yield_per=chunk).execute(statement)
        with contextlib.closing(result):
            for r in result:
                yield SignatureRow(
                    record_id=RecordId(r[0]),
                    key_id=KeyId(r[1]),
                    batch_id=BatchId(r[2]),
                    payload=bytes(r[3]),
                    signature=bytes(r[4]),
                    signed_at=r[5],
                )
