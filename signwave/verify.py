"""`signwave verify`: check G1 to G6 from the tables and every signature with its public key.

Each guarantee is checked from what was stored, independently of the code that
stored it: the lease audit trail is replayed in time order for G2 and G4.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from signwave import signing
from signwave.ids import KeyId, RecordId
from signwave.leasing import lru_order
from signwave.store import audit
from signwave.store.audit import KeyRow, LeaseRow
from signwave.store.engine import Database


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finding:
    """One checked property: how many violations, and the first offending ids."""

    guarantee: str
    name: str
    count: int
    sample: list[int] = dataclasses.field(default_factory=list)
    detail: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Report:
    records: int
    signatures: int
    leases: int
    batch_sizes: list[int]
    failed_batches: list[int]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.failed_batches and all(f.count == 0 for f in self.findings)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "records": self.records,
            "signatures": self.signatures,
            "leases": self.leases,
            "batch_sizes": self.batch_sizes,
            "failed_batches": self.failed_batches,
            "violations": {f.name: f.count for f in self.findings},
            "samples": {f.name: f.sample for f in self.findings if f.count},
        }


def overlapping_leases(leases: Sequence[LeaseRow]) -> list[int]:
    """Ids of leases that began before the previous lease of the same key ended (G2)."""
    open_until: dict[KeyId, dt.datetime | None] = {}
    seen: set[KeyId] = set()
    bad: list[int] = []
    for lease in sorted(leases, key=lambda row: (row.acquired_at, row.id)):
        if lease.key_id in seen:
            end = open_until[lease.key_id]
            if end is None or end > lease.acquired_at:
                bad.append(lease.id)
        seen.add(lease.key_id)
        open_until[lease.key_id] = lease.end
    return bad


def lru_violations(leases: Sequence[LeaseRow], keys: Sequence[KeyRow]) -> list[tuple[int, int]]:
    """(lease id, id of a key that should have been chosen) for every lease that
    did not take the least recently used free key (G4).

    Replays the audit trail: at each acquisition, a key is free if it existed
    and its latest lease had ended; its last use is when that lease ended.
    """
    created = {k.id: k.created_at for k in keys}
    last_end: dict[KeyId, dt.datetime | None] = {}
    bad: list[tuple[int, int]] = []
    for lease in sorted(leases, key=lambda row: (row.acquired_at, row.id)):
        t = lease.acquired_at

        def free_order(key_id: KeyId, t: dt.datetime = t) -> tuple[int, dt.datetime, int] | None:
            if created[key_id] > t:
                return None
            if key_id not in last_end:
                return lru_order(None, key_id)
            end = last_end[key_id]
            if end is None or end > t:
                return None
            return lru_order(end, key_id)

        chosen = free_order(lease.key_id)
        if chosen is not None:
            for key_id in created:
                order = free_order(key_id)
                if key_id != lease.key_id and order is not None and order < chosen:
                    bad.append((lease.id, key_id))
                    break
        last_end[lease.key_id] = lease.end
    return bad


def _verify_chunk(
    public_pems: dict[KeyId, bytes], rows: list[tuple[RecordId, KeyId, bytes, bytes]]
) -> list[int]:
    publics = {k: signing.load_public_key(pem) for k, pem in public_pems.items()}
    return [
        record_id
        for record_id, key_id, payload, sig in rows
        if not signing.verify(publics[key_id], payload, sig)
    ]


def bad_signatures(
    db: Database, keys: Iterable[KeyRow], *, processes: int | None = None
) -> list[int]:
    """Record ids whose signature does not verify with its key's public key."""
    pems = {k.id: k.public_key_pem for k in keys}
    bad: list[int] = []
    workers = processes or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: list[Future[list[int]]] = []
        for rows in audit.signed_payloads(db):
            used = {key_id for _, key_id, _, _ in rows}
            pending.append(pool.submit(_verify_chunk, {k: pems[k] for k in used}, rows))
            if len(pending) >= 2 * workers:
                bad.extend(pending.pop(0).result())
        for future in pending:
            bad.extend(future.result())
    return sorted(bad)


def run_verify(db: Database) -> Report:
    n_records, n_signatures = audit.counts(db)
    leases = audit.leases(db)
    keys = audit.all_keys(db)
    findings: list[Finding] = []

    def add(guarantee: str, name: str, result: tuple[int, list[int]], detail: str = "") -> None:
        findings.append(
            Finding(
                guarantee=guarantee, name=name, count=result[0], sample=result[1], detail=detail
            )
        )

    add("G1", "duplicate_signatures", audit.duplicate_signatures(db))
    overlaps = overlapping_leases(leases)
    add("G2", "overlapping_leases", (len(overlaps), overlaps[: audit.SAMPLE]))
    add("G2", "signatures_outside_lease", audit.signatures_outside_lease(db))
    add("G3", "signatures_with_wrong_key", audit.wrong_key_or_batch(db))
    lru = lru_violations(leases, keys)
    add(
        "G4",
        "lru_violations",
        (len(lru), [lease_id for lease_id, _ in lru[: audit.SAMPLE]]),
        detail="; ".join(f"lease {lid} skipped key {kid}" for lid, kid in lru[:5]),
    )
    add("G5", "batch_size_violations", audit.batch_size_violations(db))
    add("G6", "unsigned_records", audit.unsigned(db, in_failed=False))
    add("G6", "unsigned_in_failed_batches", audit.unsigned(db, in_failed=True))
    invalid = bad_signatures(db, keys)
    add("SPEC §4", "invalid_signatures", (len(invalid), invalid[: audit.SAMPLE]))
    return Report(
        records=n_records,
        signatures=n_signatures,
        leases=len(leases),
        batch_sizes=audit.batch_sizes(db),
        failed_batches=[batch_id for batch_id, _ in audit.failed_batches(db)],
        findings=findings,
    )
