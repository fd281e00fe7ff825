"""Leasing rules, free of I/O: the worker's own deadline and least-recently-used order.

A signer trusts the database's verdict at commit time, but it must also stop on
its own: a process paused past its lease (SIGSTOP, a long GC, a VM migration)
must not go on signing when it wakes. It therefore keeps a deadline measured
on its own monotonic clock from the moment *before* it asked for the lease:
the database set the expiry later than that, so the local deadline always
falls before the real one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Protocol

from signwave.ids import KeyId


class Clock(Protocol):
    def monotonic(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Deadline:
    """When a lease granted (or renewed) at ``granted_at`` must be considered gone."""

    granted_at: float
    ttl: float

    @property
    def margin(self) -> float:
        """Slack kept for the commit and for clock-rate differences."""
        return min(1.0, self.ttl * 0.1)

    @property
    def expires_at(self) -> float:
        return self.granted_at + self.ttl - self.margin

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def needs_renewal(self, now: float) -> bool:
        """Renew once half the lease is used up."""
        return now >= self.granted_at + self.ttl / 2

    def renewed(self, at: float) -> Deadline:
        return dataclasses.replace(self, granted_at=at)


def lru_order(last_used_at: dt.datetime | None, key_id: KeyId) -> tuple[int, dt.datetime, int]:
    """Sort key of G4: never-used keys first, then oldest last use, then lowest id."""
    if last_used_at is None:
        return (0, dt.datetime.min.replace(tzinfo=dt.UTC), key_id)
    return (1, last_used_at, key_id)
