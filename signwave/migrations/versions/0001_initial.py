"""The five tables of SPEC §3.

Revision ID: 0001
Revises:

Written out in full rather than taken from `signwave.store.schema`: a revision
must stay what it was when databases were created with it. Later schema
changes get revisions of their own.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("id", Id, primary_key=True),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("bits", sa.Integer, nullable=False),
        sa.Column("public_key_pem", sa.Text, nullable=False),
        sa.Column("private_key_pem", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_used_at", Timestamp),
        sa.Column("use_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_counter", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lease_token", sa.BigInteger),
        sa.Column("lease_batch_id", Id),
        sa.Column("lease_holder", sa.String(64)),
        sa.Column("lease_expires_at", Timestamp),
        sa.UniqueConstraint("fingerprint", name="uq_keys_fingerprint"),
    )
    op.create_table(
        "batches",
        sa.Column("id", Id, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("key_id", Id, sa.ForeignKey("keys.id")),
        sa.Column("lease_token", sa.BigInteger),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("dispatched_at", Timestamp),
        sa.Column("signed_at", Timestamp),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "status IN ('pending', 'leased', 'signed', 'failed')", name="ck_batches_status"
        ),
    )
    op.create_index("ix_batches_status", "batches", ["status"])
    op.create_table(
        "records",
        sa.Column("id", Id, primary_key=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("batch_id", Id, sa.ForeignKey("batches.id")),
    )
    op.create_index("ix_records_batch_id_id", "records", ["batch_id", "id"])
    op.create_table(
        "signatures",
        sa.Column("record_id", Id, sa.ForeignKey("records.id"), primary_key=True),
        sa.Column("key_id", Id, nullable=False),
        sa.Column("batch_id", Id, nullable=False),
        sa.Column("lease_token", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("signed_at", Timestamp, nullable=False),
    )
    op.create_table(
        "key_leases",
        sa.Column("id", Id, primary_key=True),
        sa.Column("key_id", Id, sa.ForeignKey("keys.id"), nullable=False),
        sa.Column("batch_id", Id, sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("acquired_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("released_at", Timestamp),
        sa.Column("outcome", sa.String(16)),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("key_id", "token", name="uq_key_leases_key_token"),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('signed', 'expired', 'failed')",
            name="ck_key_leases_outcome",
        ),
    )
    op.create_index("ix_key_leases_acquired_at", "key_leases", ["acquired_at"])


def downgrade() -> None:
    for table in ("key_leases", "signatures", "records", "batches", "keys"):
        op.drop_table(table)
