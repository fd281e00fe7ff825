"""Schema creation and upgrades, readiness checks, and how timestamps round-trip."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import inspect, select, update
from sqlalchemy.exc import StatementError

from signwave.errors import DatabaseNotInitialised
from signwave.ids import HolderId
from signwave.settings import Settings
from signwave.signing import KeyMaterial
from signwave.store import Database, Store, audit
from signwave.store.migrate import check_ready, head_revision, upgrade
from signwave.store.schema import batches, keys, signatures
from tests.conftest import seed
from tests.integration.helpers import make_pending_batches, scalar
from tests.support import cli

TABLES = {"records", "keys", "batches", "signatures", "key_leases"}


@pytest.fixture
def empty_db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def test_db_init_creates_the_schema_and_is_idempotent(
    empty_db: Database, database_url: str
) -> None:
    # Given a database without a schema, nothing may use it
    with pytest.raises(DatabaseNotInitialised) as info:
        check_ready(empty_db)
    assert "signwave db init" in info.value.message
    assert "\n" not in info.value.message
    settings = Settings(database_url=database_url)

    # When the schema is created, then `signwave db init` runs on it again
    assert upgrade(empty_db) == (None, head_revision())
    again = cli(settings, "db", "init", timeout=60)

    # Then the command succeeds without changes, and the schema exists once, at head
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    check_ready(empty_db)
    assert TABLES <= set(inspect(empty_db.engine).get_table_names())
    assert scalar(empty_db, "SELECT COUNT(*) FROM alembic_version") == 1
    assert scalar(empty_db, "SELECT version_num FROM alembic_version") == head_revision()


def test_upgrade_keeps_data_and_old_schemas_are_not_ready(
    db: Database, key_pool: list[KeyMaterial]
) -> None:
    seed(Store(db), key_pool, records=5, keys=1)
    head = head_revision()

    assert upgrade(db) == (head, head)

    check_ready(db)
    assert scalar(db, "SELECT COUNT(*) FROM records") == 5
    assert scalar(db, "SELECT COUNT(*) FROM keys") == 1
    with db.write() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(DatabaseNotInitialised, match="older schema"):
        check_ready(db)


def test_timestamps_are_aware_utc_with_microseconds(
    db: Database, key_pool: list[KeyMaterial]
) -> None:
    store = Store(db)
    seed(store, key_pool, records=2, keys=1)
    written = dt.datetime(2024, 5, 6, 9, 8, 7, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with db.write() as conn:
        conn.execute(update(keys).values(last_used_at=written))
        now = db.now(conn)
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)

    with db.read() as conn:
        last_used, created = conn.execute(select(keys.c.last_used_at, keys.c.created_at)).one()

    assert last_used == written
    assert last_used.tzinfo == dt.UTC
    assert (last_used.hour, last_used.microsecond) == (7, 123456)
    assert created.tzinfo == dt.UTC
    assert abs(created - now) < dt.timedelta(minutes=5)

    # Timestamps the store writes come back the same way, and agree with each other.
    (batch_id,) = make_pending_batches(db, 1, 2)
    lease = store.grant_lease(batch_id, ttl=1.5, lock=lambda _lease: None).lease
    assert lease is not None
    assert store.start_signing(lease, HolderId("h"), ttl=1.5)
    store.commit_signatures(
        lease, HolderId("h"), [(r, b"s") for r, _ in store.batch_payloads(batch_id)]
    )
    (row,) = audit.leases(db)
    with db.read() as conn:
        signed_at = conn.execute(select(batches.c.signed_at)).scalar_one()
        sig_times = set(conn.execute(select(signatures.c.signed_at)).scalars())
    for value in (row.acquired_at, row.expires_at, row.released_at, signed_at, *sig_times):
        assert value is not None and value.tzinfo == dt.UTC
    assert sig_times == {signed_at} == {row.released_at}
    assert row.acquired_at < signed_at < row.expires_at
    # start_signing renewed the lease for its TTL, counted from a later moment.
    assert row.expires_at - row.acquired_at > dt.timedelta(seconds=1.5)

    # Naive datetimes are refused rather than guessed.
    with pytest.raises(StatementError), db.write() as conn:
        conn.execute(update(keys).values(last_used_at=dt.datetime(2024, 1, 1)))  # noqa: DTZ001
    assert scalar(db, "SELECT COUNT(*) FROM keys WHERE last_used_at IS NULL") == 0
