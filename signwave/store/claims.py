"""Claiming unbatched records into batches, and finding batches whose ingest must be sent.

Functions of an open write transaction; `Store` decides which locks it holds.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, delete, func, insert, select, update

from signwave.ids import BatchId
from signwave.store.schema import batches, keys, records

IN_FLIGHT = ("pending", "leased")


def count_in_flight(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(batches).where(batches.c.status.in_(IN_FLIGHT))
        ).scalar_one()
    )


def claim(
    conn: Connection, now: dt.datetime, batch_size: int, limit: int, *, dispatched: bool
) -> list[BatchId]:
    """New batches of up to ``batch_size`` records, in record id order, while
    fewer than ``limit`` (and than the number of keys) are in flight."""
    claimed: list[BatchId] = []
    usable_keys = conn.execute(select(func.count()).select_from(keys)).scalar_one()
    wanted = min(limit, usable_keys) - count_in_flight(conn)
    for _ in range(wanted):
        batch_id = conn.execute(
            insert(batches)
            .values(
                status="pending",
                size=batch_size,
                record_count=0,
                created_at=now,
                dispatched_at=now if dispatched else None,
            )
            .returning(batches.c.id)
        ).scalar_one()
        unbatched = (
            select(records.c.id)
            .where(records.c.batch_id.is_(None))
            .order_by(records.c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        n = conn.execute(
            update(records).where(records.c.id.in_(unbatched)).values(batch_id=batch_id)
        ).rowcount
        if n == 0:
            conn.execute(delete(batches).where(batches.c.id == batch_id))
            break
        conn.execute(update(batches).where(batches.c.id == batch_id).values(record_count=n))
        claimed.append(BatchId(batch_id))
    return claimed


def due(conn: Connection, now: dt.datetime, older_than: float, limit: int) -> list[BatchId]:
    """Pending batches never dispatched, or dispatched more than ``older_than``
    seconds ago (their message may be lost); marks them dispatched now."""
    cutoff = now - dt.timedelta(seconds=older_than)
    ids = list(
        conn.execute(
            select(batches.c.id)
            .where(
                batches.c.status == "pending",
                (batches.c.dispatched_at.is_(None)) | (batches.c.dispatched_at < cutoff),
            )
            .order_by(batches.c.id)
            .limit(limit)
        ).scalars()
    )
    if ids:
        conn.execute(update(batches).where(batches.c.id.in_(ids)).values(dispatched_at=now))
    return [BatchId(i) for i in ids]
