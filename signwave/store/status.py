"""What `signwave status` and the progress bar of `signwave run` show."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import Connection, func, select

from signwave.store.engine import Database
from signwave.store.schema import batches, keys, records

RATE_WINDOW_S = 10.0
FAILED_SHOWN = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class Progress:
    signed: int
    """Records in signed batches."""
    failed: int
    """Records in failed batches."""
    in_flight_batches: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Status:
    records: int
    signed: int
    unbatched: int
    failed_records: int
    batches: dict[str, int]
    keys: int
    keys_leased: int
    signatures_per_second: float
    failed_batches: list[tuple[int, str | None]] = dataclasses.field(default_factory=list)
    """(batch id, reason) of the first failed batches."""

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def read_progress(db: Database) -> Progress:
    """Cheap: reads the batches table only, whatever the number of records."""
    with db.read() as conn:
        rows = conn.execute(
            select(
                batches.c.status, func.count(), func.coalesce(func.sum(batches.c.record_count), 0)
            ).group_by(batches.c.status)
        ).all()
    by_status = {status: (int(n), int(total)) for status, n, total in rows}
    return Progress(
        signed=by_status.get("signed", (0, 0))[1],
        failed=by_status.get("failed", (0, 0))[1],
        in_flight_batches=by_status.get("pending", (0, 0))[0] + by_status.get("leased", (0, 0))[0],
    )


def count_records(db: Database) -> int:
    """Records in the database, from the batches and the unbatched index range:
    no full scan of the records table."""
    with db.read() as conn:
        return _unbatched(conn) + int(
            conn.execute(select(func.coalesce(func.sum(batches.c.record_count), 0))).scalar_one()
        )


def _unbatched(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(records).where(records.c.batch_id.is_(None))
        ).scalar_one()
    )


def read_status(db: Database) -> Status:
    with db.read() as conn:
        now = db.now(conn)
        unbatched = _unbatched(conn)
        rows = conn.execute(
            select(
                batches.c.status, func.count(), func.coalesce(func.sum(batches.c.record_count), 0)
            ).group_by(batches.c.status)
        ).all()
        key_count = int(conn.execute(select(func.count()).select_from(keys)).scalar_one())
        leased = int(
            conn.execute(
                select(func.count())
                .select_from(keys)
                .where(keys.c.lease_token.is_not(None), keys.c.lease_expires_at > now)
            ).scalar_one()
        )
        recent = int(
            conn.execute(
                select(func.coalesce(func.sum(batches.c.record_count), 0)).where(
                    batches.c.status == "signed",
                    batches.c.signed_at >= now - dt.timedelta(seconds=RATE_WINDOW_S),
                )
            ).scalar_one()
        )
        failed = [
            (int(i), e)
            for i, e in conn.execute(
                select(batches.c.id, batches.c.error)
                .where(batches.c.status == "failed")
                .order_by(batches.c.id)
                .limit(FAILED_SHOWN)
            ).all()
        ]
    counts = {status: int(n) for status, n, _ in rows}
    records_by = {status: int(t) for status, _, t in rows}
    return Status(
        records=unbatched + sum(records_by.values()),
        signed=records_by.get("signed", 0),
        unbatched=unbatched,
        failed_records=records_by.get("failed", 0),
        batches={s: counts.get(s, 0) for s in ("pending", "leased", "signed", "failed")},
        keys=key_count,
        keys_leased=leased,
        signatures_per_second=recent / RATE_WINDOW_S,
        failed_batches=failed,
    )
