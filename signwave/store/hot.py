"""The statements every batch runs, built once.

Building a SQLAlchemy statement and its cache key costs several times more
than running it; these are built at import with named parameters (``p_*``)
and reused, so a batch pays for execution only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Update, bindparam, func, insert, select, update

from signwave.store.schema import batches, key_leases, keys, records

IN_FLIGHT = ("pending", "leased")


def free_key(last_used_at: Any) -> dict[str, Any]:
    """The key columns of a released lease: ``last_used_at`` is when it ended
    (a value, or a bind parameter in a prebuilt statement)."""
    return {
        "lease_token": None,
        "lease_batch_id": None,
        "lease_holder": None,
        "lease_expires_at": None,
        "last_used_at": last_used_at,
    }


# The key's lease ``p_token`` is still its current one and has not expired at ``p_now``.
LEASE_IS_CURRENT = (
    keys.c.id == bindparam("p_key"),
    keys.c.lease_token == bindparam("p_token"),
    keys.c.lease_expires_at > bindparam("p_now"),
)

# -- grant -----------------------------------------------------------------------

_EXPIRED = (keys.c.lease_token.is_not(None), keys.c.lease_expires_at <= bindparam("p_now"))

EXPIRED_LEASES = select(
    keys.c.id, keys.c.lease_token, keys.c.lease_batch_id, keys.c.lease_expires_at
).where(*_EXPIRED)

_LRU = (
    select(keys.c.id, keys.c.lease_counter)
    .where(keys.c.lease_token.is_(None))
    .order_by(keys.c.last_used_at.asc().nulls_first(), keys.c.id)
    .limit(1)
    .subquery()
)

# The least recently used free key, and how many leases have expired (they
# must be reaped first: their keys may be older still). No row: no free key.
LRU_FREE_KEY = select(
    _LRU.c.id,
    _LRU.c.lease_counter,
    select(func.count()).select_from(keys).where(*_EXPIRED).scalar_subquery().label("expired"),
)

BATCH_STATUS = select(batches.c.status).where(batches.c.id == bindparam("p_batch"))

TAKE_BATCH = (
    update(batches)
    .where(batches.c.id == bindparam("p_batch"), batches.c.status == "pending")
    .values(status="leased", key_id=bindparam("p_key"), lease_token=bindparam("p_token"))
)

LEASE_KEY = (
    update(keys)
    .where(keys.c.id == bindparam("p_key"), keys.c.lease_token.is_(None))
    .values(
        lease_counter=bindparam("p_token"),
        lease_token=bindparam("p_token"),
        lease_batch_id=bindparam("p_batch"),
        # None: the sign task that gets the lease sets it; a holder: the lease
        # goes to an execution that starts signing at once.
        lease_holder=bindparam("p_holder"),
        lease_expires_at=bindparam("p_expires"),
    )
)

OPEN_LEASE = insert(key_leases).values(
    key_id=bindparam("p_key"),
    batch_id=bindparam("p_batch"),
    token=bindparam("p_token"),
    acquired_at=bindparam("p_now"),
    expires_at=bindparam("p_expires"),
)

# -- sign ------------------------------------------------------------------------


def _extend_key(holder_matches: ColumnElement[bool]) -> Update:
    return (
        update(keys)
        .where(*LEASE_IS_CURRENT, keys.c.lease_batch_id == bindparam("p_batch"), holder_matches)
        .values(lease_holder=bindparam("p_holder"), lease_expires_at=bindparam("p_expires"))
    )


START_KEY = _extend_key(keys.c.lease_holder.is_(None))
RENEW_KEY = _extend_key(keys.c.lease_holder == bindparam("p_holder"))

EXTEND_LEASE = (
    update(key_leases)
    .where(key_leases.c.key_id == bindparam("p_key"), key_leases.c.token == bindparam("p_token"))
    .values(expires_at=bindparam("p_expires"))
)

PAYLOADS = (
    select(records.c.id, records.c.payload)
    .where(records.c.batch_id == bindparam("p_batch"))
    .order_by(records.c.id)
)

# -- commit ----------------------------------------------------------------------

RELEASE_SIGNED_KEY = (
    update(keys)
    .where(*LEASE_IS_CURRENT, keys.c.lease_holder == bindparam("p_holder"))
    .values(**free_key(bindparam("p_now")), use_count=keys.c.use_count + 1)
)

BATCH_SIGNED = (
    update(batches)
    .where(
        batches.c.id == bindparam("p_batch"),
        batches.c.status == "leased",
        batches.c.lease_token == bindparam("p_token"),
        batches.c.key_id == bindparam("p_key"),
    )
    .values(status="signed", signed_at=bindparam("p_now"), error=None)
)

CLOSE_LEASE = (
    update(key_leases)
    .where(
        key_leases.c.key_id == bindparam("p_key"),
        key_leases.c.token == bindparam("p_token"),
        key_leases.c.released_at.is_(None),
    )
    .values(
        released_at=bindparam("p_now"),
        outcome=bindparam("p_outcome"),
        error=bindparam("p_error"),
    )
)

# -- claim -----------------------------------------------------------------------

# Claims go in id order, so the newest batch holds the highest claimed id, and
# the records after it are unbatched: reading them from the primary key costs
# what it takes. (The unbatched-records index also holds, until vacuum, an
# entry for every record claimed since: scanning it from the start costs more
# as a run goes on.) Read first, and passed as a value: the planner then
# knows how few rows lie past it.
LAST_CLAIMED = select(func.max(records.c.id)).where(
    records.c.batch_id == select(func.max(batches.c.id)).scalar_subquery()
)

# Keys, batches in flight, and the highest claimed record id, in one query.
CLAIM_ROOM = select(
    select(func.count()).select_from(keys).scalar_subquery(),
    select(func.count())
    .select_from(batches)
    .where(batches.c.status.in_(IN_FLIGHT))
    .scalar_subquery(),
    LAST_CLAIMED.scalar_subquery(),
)

NEW_BATCH = (
    insert(batches)
    .values(
        status="pending",
        size=bindparam("p_size"),
        # Sized for a full batch; the last, short one is corrected after.
        record_count=bindparam("p_size"),
        created_at=bindparam("p_now"),
        dispatched_at=bindparam("p_dispatched"),
    )
    .returning(batches.c.id)
)


def _fill(*, after_claimed: bool) -> Update:
    unbatched = select(records.c.id).where(records.c.batch_id.is_(None))
    if after_claimed:
        unbatched = unbatched.where(records.c.id > bindparam("p_after"))
    return (
        update(records)
        .where(
            records.c.id.in_(
                unbatched.order_by(records.c.id)
                .limit(bindparam("p_size"))
                .with_for_update(skip_locked=True)
            )
        )
        .values(batch_id=bindparam("p_batch"))
    )


FILL_AFTER_CLAIMED = _fill(after_claimed=True)
# Anything below that mark left unbatched: records committed out of id order.
FILL_ANY = _fill(after_claimed=False)

DUE_BATCHES = (
    select(batches.c.id)
    .where(
        batches.c.status == "pending",
        batches.c.dispatched_at.is_(None) | (batches.c.dispatched_at < bindparam("p_cutoff")),
    )
    .order_by(batches.c.id)
    .limit(bindparam("p_limit"))
)
