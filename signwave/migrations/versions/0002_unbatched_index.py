"""An index of the records not yet in a batch, in id order.

Revision ID: 0002
Revises: 0001

Claiming takes the lowest unbatched ids. `ix_records_batch_id_id` finds
unbatched records but not in id order (PostgreSQL does not treat IS NULL as
an equality for ordering), so a claim sorted every unbatched record: its cost
grew with the table. This partial index holds only unbatched ids, in order.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNBATCHED = sa.text("batch_id IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_records_unbatched",
        "records",
        ["id"],
        postgresql_where=UNBATCHED,
        sqlite_where=UNBATCHED,
    )


def downgrade() -> None:
    op.drop_index("ix_records_unbatched", "records")
