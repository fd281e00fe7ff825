"""Bulk writes (binary COPY, executemany): what they store, and errors as SQLAlchemy's."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from signwave.errors import DatabaseUnavailable
from signwave.store import Database, bulk
from signwave.store.schema import records, signatures
from signwave.store.store import SIGNATURE_COLUMNS

AT = dt.datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=dt.UTC)


def _signature_rows(ids: range) -> list[tuple[object, ...]]:
    return [(i, 7, 3, 11, bytes([i % 256]) * 256, AT) for i in ids]


def _add_records(db: Database, n: int) -> None:
    with db.write() as conn:
        bulk.insert_rows(db, conn, records, ("payload",), [(b"p%d" % i,) for i in range(n)])


def test_rows_come_back_as_written(db: Database) -> None:
    _add_records(db, 3)
    with db.write() as conn:
        bulk.insert_rows(db, conn, signatures, SIGNATURE_COLUMNS, _signature_rows(range(1, 4)))

    with db.read() as conn:
        stored = conn.execute(select(signatures).order_by(signatures.c.record_id)).all()
        payloads = conn.execute(select(records.c.payload).order_by(records.c.id)).scalars()
        assert [bytes(p) for p in payloads] == [b"p0", b"p1", b"p2"]
    assert [tuple(r) for r in stored] == _signature_rows(range(1, 4))
    # Timestamps are stored as every other statement stores them: comparable in SQL.
    with db.read() as conn:
        later = conn.execute(
            select(signatures.c.record_id).where(signatures.c.signed_at > AT - dt.timedelta(0, 1))
        ).all()
    assert len(later) == 3


def test_a_rejected_row_is_an_integrity_error_and_nothing_is_kept(db: Database) -> None:
    _add_records(db, 2)
    rows = _signature_rows(range(1, 3))

    with pytest.raises(IntegrityError), db.write() as conn:
        bulk.insert_rows(db, conn, signatures, SIGNATURE_COLUMNS, rows + rows[:1])

    with db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM signatures")).scalar_one() == 0


def test_a_lost_session_is_reported_as_for_any_statement(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("a SQLite connection has no server session to lose")
    _add_records(db, 2)

    # An SQLAlchemy OperationalError, which the store reports as the database
    # being unreachable and the pipeline retries.
    with pytest.raises(DatabaseUnavailable), db.write() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        bulk.insert_rows(db, conn, signatures, SIGNATURE_COLUMNS, _signature_rows(range(1, 3)))

    # The pool does not hand the dead connection out again.
    with db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM signatures")).scalar_one() == 0
