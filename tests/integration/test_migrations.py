"""The migrations create exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from signwave.store import Database
from signwave.store.schema import metadata


def test_migrated_schema_matches_the_declared_tables(db: Database) -> None:
    with db.read() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
