"""Tables of SPEC §3, as SQLAlchemy Core metadata (the migrations create them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC

BATCH_STATUSES = ("pending", "leased", "signed", "failed")
LEASE_OUTCOMES = ("signed", "expired", "failed")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes with microseconds, on SQLite (as text) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

keys = Table(
    "keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("algorithm", String(32), nullable=False),
    Column("bits", Integer, nullable=False),
    Column("public_key_pem", Text, nullable=False),
    Column("private_key_pem", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("use_count", Integer, nullable=False, server_default="0"),
    # The durable lease: the database, not Redis, decides who holds a key.
    Column("lease_counter", BigInteger, nullable=False, server_default="0"),
    Column("lease_token", BigInteger),
    Column("lease_batch_id", Id),
    Column("lease_holder", String(64)),
    Column("lease_expires_at", UTCDateTime),
    UniqueConstraint("fingerprint", name="uq_keys_fingerprint"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", Id, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("size", Integer, nullable=False),
    Column("record_count", Integer, nullable=False),
    Column("key_id", Id, ForeignKey("keys.id")),
    Column("lease_token", BigInteger),
    Column("created_at", UTCDateTime, nullable=False),
    Column("dispatched_at", UTCDateTime),
    Column("signed_at", UTCDateTime),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    CheckConstraint(
        "status IN ('pending', 'leased', 'signed', 'failed')", name="ck_batches_status"
    ),
    Index("ix_batches_status", "status"),
)

records = Table(
    "records",
    metadata,
    Column("id", Id, primary_key=True),
    Column("payload", LargeBinary, nullable=False),
    Column("batch_id", Id, ForeignKey("batches.id")),
    # The records of batch N, in id order.
    Index("ix_records_batch_id_id", "batch_id", "id"),
    # Unbatched ids in order: a claim reads as many entries as it takes.
    Index(
        "ix_records_unbatched",
        "id",
        postgresql_where=text("batch_id IS NULL"),
        sqlite_where=text("batch_id IS NULL"),
    ),
)

signatures = Table(
    "signatures",
    metadata,
    # UNIQUE(record_id), as a primary key: the last line of defence of G1.
    Column("record_id", Id, ForeignKey("records.id"), primary_key=True),
    # No foreign keys on key_id and batch_id: they would cost two lookups per
    # signature on PostgreSQL (a third of a batch's commit), and the fenced
    # commit already writes them from the lease row; `signwave verify` checks them.
    Column("key_id", Id, nullable=False),
    Column("batch_id", Id, nullable=False),
    Column("lease_token", BigInteger, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("signed_at", UTCDateTime, nullable=False),
)

key_leases = Table(
    "key_leases",
    metadata,
    Column("id", Id, primary_key=True),
    Column("key_id", Id, ForeignKey("keys.id"), nullable=False),
    Column("batch_id", Id, ForeignKey("batches.id"), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("released_at", UTCDateTime),
    Column("outcome", String(16)),
    Column("error", Text),
    UniqueConstraint("key_id", "token", name="uq_key_leases_key_token"),
    CheckConstraint(
        "outcome IS NULL OR outcome IN ('signed', 'expired', 'failed')",
        name="ck_key_leases_outcome",
    ),
    Index("ix_key_leases_acquired_at", "acquired_at"),
)
