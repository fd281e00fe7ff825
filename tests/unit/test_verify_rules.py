"""The replay of the lease audit trail that checks G2 and G4, on hand-made rows."""

from __future__ import annotations

import datetime as dt

from signwave.ids import BatchId, KeyId, LeaseToken
from signwave.store.audit import KeyRow, LeaseRow
from signwave.verify import lru_violations, overlapping_leases

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def key(key_id: int, created: float = 0.0) -> KeyRow:
    return KeyRow(id=KeyId(key_id), created_at=at(created), public_key_pem=b"")


def lease(
    lease_id: int,
    key_id: int,
    acquired: float,
    released: float | None,
    *,
    token: int = 1,
    outcome: str | None = "signed",
) -> LeaseRow:
    return LeaseRow(
        id=lease_id,
        key_id=KeyId(key_id),
        batch_id=BatchId(lease_id),
        token=LeaseToken(token),
        acquired_at=at(acquired),
        expires_at=at(acquired + 30),
        released_at=None if released is None else at(released),
        outcome=None if released is None else outcome,
    )


KEYS = [key(1), key(2), key(3)]


class TestLruViolations:
    def test_a_trail_that_always_took_the_least_recently_used_key(self) -> None:
        leases = [
            # Never-used keys first, by id.
            lease(1, 1, acquired=1, released=5, token=1),
            lease(2, 2, acquired=2, released=4, token=1),
            lease(3, 3, acquired=3, released=None, token=1),
            # Key 2 was released first (t=4), so it is the oldest use.
            lease(4, 2, acquired=6, released=7, token=2),
            # Key 3 is still busy; key 1 (t=5) is older than key 2 (t=7).
            lease(5, 1, acquired=8, released=9, token=2),
        ]

        assert lru_violations(leases, KEYS) == []
        assert overlapping_leases(leases) == []

    def test_skipping_a_never_used_key_is_a_violation(self) -> None:
        leases = [
            lease(1, 1, acquired=1, released=2),
            # Key 2 was never used, yet key 1 was taken again.
            lease(2, 1, acquired=3, released=4, token=2),
        ]

        assert lru_violations(leases, KEYS) == [(2, 2)]

    def test_taking_a_more_recently_used_key_is_a_violation(self) -> None:
        leases = [
            lease(1, 1, acquired=1, released=2),
            lease(2, 2, acquired=1.5, released=3),
            lease(3, 3, acquired=1.7, released=4),
            # Key 1 (last use t=2) is the oldest; key 3 (t=4) was taken.
            lease(4, 3, acquired=5, released=6, token=2),
        ]

        assert lru_violations(leases, KEYS) == [(4, 1)]

    def test_ties_on_last_use_go_to_the_lower_id(self) -> None:
        first = [
            lease(1, 1, acquired=1, released=3),
            lease(2, 2, acquired=1.5, released=3),
            lease(3, 3, acquired=2, released=None),
        ]
        right = [*first, lease(4, 1, acquired=4, released=None, token=2)]
        wrong = [*first, lease(4, 2, acquired=4, released=None, token=2)]

        assert lru_violations(right, KEYS) == []
        assert lru_violations(wrong, KEYS) == [(4, 1)]

    def test_busy_keys_and_keys_created_later_are_not_candidates(self) -> None:
        keys = [key(1), key(2), key(3, created=10)]
        leases = [
            lease(1, 1, acquired=1, released=None),
            # Key 1 is busy and key 3 does not exist yet: key 2 is the only choice.
            lease(2, 2, acquired=2, released=3),
            lease(3, 2, acquired=4, released=5, token=2),
            # Now key 3 exists and was never used: it must come first.
            lease(4, 3, acquired=11, released=12),
        ]

        assert lru_violations(leases, keys) == []
        late = [*leases[:3], lease(4, 2, acquired=11, released=12, token=3)]
        assert lru_violations(late, keys) == [(4, 3)]

    def test_rows_are_replayed_in_time_order_not_list_order(self) -> None:
        leases = [
            lease(2, 2, acquired=2, released=3),
            lease(1, 1, acquired=1, released=4),
        ]

        assert lru_violations(leases, KEYS[:2]) == []
        assert lru_violations(list(reversed(leases)), KEYS[:2]) == []


class TestOverlappingLeases:
    def test_back_to_back_leases_of_one_key_do_not_overlap(self) -> None:
        leases = [
            lease(1, 1, acquired=1, released=2),
            lease(2, 1, acquired=2, released=3, token=2),
            lease(3, 2, acquired=1.5, released=2.5),
        ]

        assert overlapping_leases(leases) == []

    def test_a_lease_starting_before_the_previous_ended_overlaps(self) -> None:
        leases = [
            lease(1, 1, acquired=1, released=3),
            lease(2, 1, acquired=2.999999, released=4, token=2),
        ]

        assert overlapping_leases(leases) == [2]

    def test_a_lease_taken_while_another_is_open_overlaps(self) -> None:
        leases = [
            lease(1, 1, acquired=1, released=None),
            lease(2, 2, acquired=2, released=None),
            lease(3, 1, acquired=5, released=6, token=2),
        ]

        assert overlapping_leases(leases) == [3]

    def test_different_keys_may_overlap_in_time(self) -> None:
        leases = [lease(i, i, acquired=1, released=10) for i in (1, 2, 3)]

        assert overlapping_leases(leases) == []
        assert lru_violations(leases, KEYS) == []
