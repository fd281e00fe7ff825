"""Claiming unbatched records into batches, and finding batches whose ingest must be sent.

Functions of an open write transaction; `Store` decides which locks it holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import Connection, delete, update

from signwave.ids import BatchId
from signwave.store import hot
from signwave.store.hot import IN_FLIGHT
from signwave.store.schema import batches

__all__ = ["IN_FLIGHT", "TopUp", "claim", "due", "top_up"]


@dataclasses.dataclass(frozen=True)
class TopUp:
    """What an emit claims: batches of ``batch_size`` while fewer than
    ``limit`` are in flight, and which pending batches it (re-)dispatches."""

    batch_size: int
    limit: int
    older_than: float


def claim(
    conn: Connection, now: dt.datetime, batch_size: int, limit: int, *, dispatched: bool
) -> list[BatchId]:
    """New batches of up to ``batch_size`` records, in record id order, while
    fewer than ``limit`` (and than the number of keys) are in flight."""
    claimed: list[BatchId] = []
    usable_keys, in_flight, after = conn.execute(hot.CLAIM_ROOM).one()
    params = {"p_size": batch_size, "p_now": now, "p_dispatched": now if dispatched else None}
    for n_claimed in range(min(limit, usable_keys) - in_flight):
        if n_claimed:
            after = conn.execute(hot.LAST_CLAIMED).scalar_one_or_none()
        batch_id = conn.execute(hot.NEW_BATCH, params).scalar_one()
        n = _fill(conn, batch_id, batch_size, after)
        if n == 0:
            conn.execute(delete(batches).where(batches.c.id == batch_id))
            break
        claimed.append(BatchId(batch_id))
        if n < batch_size:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(record_count=n))
            break
    return claimed


def _fill(conn: Connection, batch_id: int, size: int, after: int | None) -> int:
    """Put up to ``size`` unbatched records, lowest ids first, into ``batch_id``."""
    n = 0
    if after is not None:
        n = conn.execute(
            hot.FILL_AFTER_CLAIMED, {"p_batch": batch_id, "p_size": size, "p_after": after}
        ).rowcount
    if n < size:
        n += conn.execute(hot.FILL_ANY, {"p_batch": batch_id, "p_size": size - n}).rowcount
    return n


def top_up(conn: Connection, now: dt.datetime, t: TopUp) -> tuple[list[BatchId], list[BatchId]]:
    """(new batches, every batch whose ingest must be sent now), in one transaction."""
    claimed = claim(conn, now, t.batch_size, t.limit, dispatched=True)
    return claimed, claimed + due(conn, now, t.older_than, 1000)


def due(conn: Connection, now: dt.datetime, older_than: float, limit: int) -> list[BatchId]:
    """Pending batches never dispatched, or dispatched more than ``older_than``
    seconds ago (their message may be lost); marks them dispatched now."""
    cutoff = now - dt.timedelta(seconds=older_than)
    ids = list(conn.execute(hot.DUE_BATCHES, {"p_cutoff": cutoff, "p_limit": limit}).scalars())
    if ids:
        conn.execute(update(batches).where(batches.c.id.in_(ids)).values(dispatched_at=now))
    return [BatchId(i) for i in ids]
