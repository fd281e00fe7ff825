"""The pipeline's service functions: emit, ingest and sign (SPEC §2).

Plain functions over a store, a key lock and a clock; the Celery tasks only
call them and enqueue what they return, after the database has committed.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.exc import OperationalError

from signwave import signing
from signwave.errors import DatabaseUnavailable, LeaseLost, NoKeyAvailable, RedisUnavailable
from signwave.ids import BatchId, HolderId, RecordId
from signwave.keycache import KeyCache
from signwave.leasing import Clock, Deadline, SystemClock
from signwave.lock import KeyLock
from signwave.settings import Settings
from signwave.store.claims import TopUp
from signwave.store.store import Committed, Follow, Lease, Started, Store

logger = logging.getLogger(__name__)

Send = Callable[[list[BatchId]], None]
"""Sends the ingest of each batch named: the caller's, after the commit."""


class _Held(NamedTuple):
    """A started lease and this process's own deadline for it."""

    started: Started
    deadline: Deadline


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmitReport:
    reopened: list[BatchId]
    claimed: list[BatchId]
    dispatch: list[BatchId]
    """Batches whose ingest must be sent now."""


class Pipeline:
    def __init__(
        self,
        *,
        store: Store,
        lock: KeyLock,
        settings: Settings,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.lock = lock
        self.settings = settings
        self.clock = clock or SystemClock()
        self.keys = KeyCache(lambda key_id: store.private_key(key_id)[1])

    # -- emit ----------------------------------------------------------------

    def emit(self, *, reap: bool = True) -> EmitReport:
        """Re-open batches whose lease expired, claim new batches up to the
        in-flight limit, and name every pending batch whose ingest must be sent.

        ``reap=False`` is the cheap top-up after a signed batch: expired leases
        are left to the scheduled emit (and to every lease grant)."""
        reopened = self.store.reap_expired() if reap else []
        claimed, dispatch = self.store.claim_and_dispatch(self.top_up)
        if claimed or reopened:
            logger.info(
                "emit: %d batches claimed, %d re-opened, %d to dispatch",
                len(claimed),
                len(reopened),
                len(dispatch),
                extra={"action": "emit"},
            )
        return EmitReport(reopened=reopened, claimed=claimed, dispatch=dispatch)

    # -- ingest --------------------------------------------------------------

    def ingest(self, batch_id: BatchId) -> Lease | None:
        """Lease the least recently used free key to ``batch_id``.

        Returns None when the batch needs no lease (already leased, signed or
        failed: a duplicate delivery); raises `NoKeyAvailable` to be retried.
        """
        ttl = self.settings.lease_ttl

        def take_lock(lease: Lease) -> None:
            # The database said the key is free: whoever still holds its Redis
            # lock is a holder whose lease already expired.
            self.lock.acquire(lease.key_id, lease.lock_owner, ttl, force=True)

        grant = self.store.grant_lease(batch_id, ttl=ttl, lock=take_lock)
        if grant.reason == "no-key":
            raise NoKeyAvailable(f"no free key for batch {batch_id}")
        if grant.lease is not None:
            logger.info(
                "batch %s leased key %s (token %s)",
                batch_id,
                grant.lease.key_id,
                grant.lease.token,
                extra={"action": "lease", "batch_id": batch_id, "key_id": grant.lease.key_id},
            )
        return grant.lease

    # -- sign ----------------------------------------------------------------

    def sign(self, lease: Lease) -> str:
        """Sign every record of the leased batch and commit, fenced by the lease.

        Returns the outcome: "signed", "skipped" (another execution has, or had,
        this lease), "lost" (the lease ended before the commit; nothing stored)
        or the batch's status after a failure ("pending" or "failed").
        """
        started = self._start(lease)
        if started is None:
            return "skipped"
        return self._sign_started(started, handover=True, top_up=None, follow_until=None)[0]

    def sign_and_top_up(self, lease: Lease, send: Send) -> str:
        """`sign`, and claim what the freed key makes room for: in the commit's
        own transaction when the batch is signed, by a cheap emit (no reaping)
        when it failed. ``send`` gets the batches whose ingest must be sent, as
        soon as they are committed.

        For SIGNWAVE_CHAIN_SECONDS, each commit also leases the first batch it
        claims to this execution, which signs it next: no message, no separate
        lease and start transactions. Returns the outcome for ``lease``."""
        started = self._start(lease)
        if started is None:
            return "skipped"
        chain_seconds = self.settings.chain_seconds
        follow_until = self.clock.monotonic() + chain_seconds if chain_seconds > 0 else None
        outcomes: list[str] = []
        current: _Held | None = started
        while current is not None:
            outcome, dispatch, current = self._sign_started(
                current, handover=not outcomes, top_up=self.top_up, follow_until=follow_until
            )
            if outcome in ("pending", "failed"):
                dispatch = self.emit(reap=False).dispatch
            send(dispatch)
            outcomes.append(outcome)
        if len(outcomes) > 1:
            logger.info(
                "batch %s and %d batches its commits leased on: %s",
                lease.batch_id,
                len(outcomes) - 1,
                ", ".join(f"{n} {o}" for o, n in collections.Counter(outcomes).items()),
                extra={"action": "chain", "batch_id": lease.batch_id},
            )
        return outcomes[0]

    @property
    def top_up(self) -> TopUp:
        return TopUp(
            batch_size=self.settings.batch_size,
            limit=self.settings.in_flight_limit,
            older_than=self.settings.redispatch_seconds,
        )

    def _start(self, lease: Lease) -> _Held | None:
        """Become the one execution signing under ``lease``; None if it cannot."""
        ttl = self.settings.lease_ttl
        holder = HolderId(secrets.token_hex(16))
        asked_at = self.clock.monotonic()
        payloads = self.store.start_signing(lease, holder, ttl=ttl)
        if payloads is None:
            logger.info(
                "batch %s: lease %s not startable (duplicate delivery or expired)",
                lease.batch_id,
                lease.token,
                extra={"action": "sign_skipped", "batch_id": lease.batch_id},
            )
            return None
        started = Started(lease=lease, holder=holder, payloads=payloads)
        return _Held(started, Deadline(granted_at=asked_at, ttl=ttl))

    def _sign_started(
        self, held: _Held, *, handover: bool, top_up: TopUp | None, follow_until: float | None
    ) -> tuple[str, list[BatchId], _Held | None]:
        """Sign a started lease's batch and commit it; (outcome, batches to
        dispatch, the next batch leased to this execution if the commit comes
        before ``follow_until``)."""
        lease, holder, payloads = held.started.lease, held.started.holder, held.started.payloads
        try:
            if handover and not self.lock.handover(
                lease.key_id, lease.lock_owner, holder, self.settings.lease_ttl
            ):
                raise LeaseLost(f"the Redis lock of key {lease.key_id} has another owner")
            try:
                key = self.keys.get(lease.key_id)
            except (OperationalError, DatabaseUnavailable):
                raise
            except Exception as exc:
                return self._fail(lease, holder, exc), [], None
            logger.info(
                "batch %s: signing %d records with key %s under lease %s",
                lease.batch_id,
                len(payloads),
                lease.key_id,
                lease.token,
                extra={
                    "action": "sign_started",
                    "batch_id": lease.batch_id,
                    "key_id": lease.key_id,
                },
            )
            try:
                sigs = self._sign_all(lease, holder, held.deadline, key, payloads)
            except (LeaseLost, OperationalError, DatabaseUnavailable, RedisUnavailable):
                raise
            except Exception as exc:
                # A key that parses but cannot sign fails on every attempt: count it
                # towards max_attempts instead of letting the lease expire and retrying forever.
                return self._fail(lease, holder, exc), [], None
            asked_at = self.clock.monotonic()
            follow = None
            if follow_until is not None and asked_at < follow_until:
                follow = self._follow(lease, holder)
            committed = self._commit(lease, holder, sigs, top_up, follow)
        except LeaseLost as exc:
            logger.warning(
                "batch %s: %s",
                lease.batch_id,
                exc.message,
                extra={"action": "lease_lost", "batch_id": lease.batch_id},
            )
            return "lost", [], None
        finally:
            self._release_lock(lease, holder)
        logger.info(
            "batch %s signed with key %s (%d records)",
            lease.batch_id,
            lease.key_id,
            len(sigs),
            extra={"action": "signed", "batch_id": lease.batch_id, "key_id": lease.key_id},
        )
        following = None
        if committed.next is not None:
            following = _Held(
                committed.next, Deadline(granted_at=asked_at, ttl=self.settings.lease_ttl)
            )
        return "signed", committed.dispatch, following

    def _follow(self, lease: Lease, holder: HolderId) -> Follow:
        """Asks the commit of ``lease`` to lease the next batch to a new holder."""
        ttl = self.settings.lease_ttl
        new_holder = HolderId(secrets.token_hex(16))

        def take_lock(following: Lease) -> bool:
            key_id = following.key_id
            try:
                # The same key again (the only free one): its lock passes from
                # this lease's holder to the next, no takeover.
                if key_id == lease.key_id and self.lock.handover(key_id, holder, new_holder, ttl):
                    return True
                return self.lock.acquire(key_id, new_holder, ttl, force=True)
            except RedisUnavailable:
                return False

        return Follow(holder=new_holder, ttl=ttl, lock=take_lock)

    def _commit(
        self,
        lease: Lease,
        holder: HolderId,
        sigs: list[tuple[RecordId, bytes]],
        top_up: TopUp | None,
        follow: Follow | None,
    ) -> Committed:
        """Commit, retrying through a database outage for as long as a lease
        lives: a retried task could not take the lease over (it is held by this
        execution), so giving up here would cost a whole lease TTL."""
        give_up_at = self.clock.monotonic() + self.settings.lease_ttl
        delay = 0.2
        while True:
            try:
                return self.store.commit_signatures(
                    lease, holder, sigs, top_up=top_up, follow=follow
                )
            except (OperationalError, DatabaseUnavailable):
                if self.clock.monotonic() + delay > give_up_at:
                    raise
                logger.warning(
                    "batch %s: database unavailable at commit; retrying in %.1f s",
                    lease.batch_id,
                    delay,
                    extra={"action": "commit_retry", "batch_id": lease.batch_id},
                )
                time.sleep(delay)
                delay = min(2 * delay, 2.0)

    def _release_lock(self, lease: Lease, holder: HolderId) -> None:
        try:
            self.lock.release(lease.key_id, holder)
        except RedisUnavailable:
            # The lock expires by itself; the database lease is already settled.
            logger.warning(
                "batch %s: could not release the Redis lock of key %s",
                lease.batch_id,
                lease.key_id,
                extra={"action": "lock_release_failed", "batch_id": lease.batch_id},
            )

    def _sign_all(
        self,
        lease: Lease,
        holder: HolderId,
        deadline: Deadline,
        key: rsa.RSAPrivateKey,
        payloads: list[tuple[RecordId, bytes]],
    ) -> list[tuple[RecordId, bytes]]:
        sigs: list[tuple[RecordId, bytes]] = []
        ttl = self.settings.lease_ttl
        for record_id, payload in payloads:
            now = self.clock.monotonic()
            # Checked before every signature, and before renewing: a process that
            # wakes up past its deadline stops at once, without asking anybody.
            if deadline.expired(now):
                raise LeaseLost(f"lease {lease.token} of key {lease.key_id} ran out while signing")
            if deadline.needs_renewal(now):
                if not self._renew(lease, holder, ttl):
                    raise LeaseLost(f"could not renew lease {lease.token} of key {lease.key_id}")
                deadline = deadline.renewed(now)
                if deadline.expired(self.clock.monotonic()):
                    raise LeaseLost(
                        f"lease {lease.token} of key {lease.key_id} ran out while renewing"
                    )
            sigs.append((record_id, signing.sign(key, payload)))
        return sigs

    def _renew(self, lease: Lease, holder: HolderId, ttl: float) -> bool:
        try:
            renewed = self.store.renew(lease, holder, ttl=ttl)
        except (OperationalError, DatabaseUnavailable):
            return False
        return renewed and self.lock.handover(lease.key_id, holder, holder, ttl)

    def _fail(self, lease: Lease, holder: HolderId, exc: Exception) -> str:
        # The reason names the exception's type only: messages from key parsing
        # may quote key material.
        reason = f"{type(exc).__name__} while signing with key {lease.key_id}"
        self.keys.forget(lease.key_id)
        status = self.store.record_failure(
            lease, holder, reason, max_failures=self.settings.max_attempts
        )
        logger.error(
            "batch %s: %s; batch is now %s",
            lease.batch_id,
            reason,
            status,
            extra={"action": "sign_failed", "batch_id": lease.batch_id, "key_id": lease.key_id},
        )
        return status or "lost"
