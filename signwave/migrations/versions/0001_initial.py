"""The five tables of SPEC §3.

Revision ID: 0001
Revises:
"""

from alembic import op

from signwave.store.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("keys", "batches", "records", "signatures", "key_leases")


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES])


def downgrade() -> None:
    bind = op.get_bind()
    metadata.drop_all(bind, tables=[metadata.tables[name] for name in TABLES])
