"""Leasing rules without I/O: the signer's own deadline and the LRU order of keys (G4)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signwave.ids import KeyId
from signwave.leasing import Deadline, lru_order

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class TestDeadline:
    def test_expires_a_margin_before_the_lease(self) -> None:
        d = Deadline(granted_at=100.0, ttl=30.0)

        assert d.margin == pytest.approx(1.0)
        assert d.expires_at == pytest.approx(129.0)
        assert not d.expired(128.999)
        assert d.expired(129.0)
        assert d.expired(130.0)

    def test_short_leases_keep_a_tenth_as_margin(self) -> None:
        d = Deadline(granted_at=0.0, ttl=2.0)

        assert d.margin == pytest.approx(0.2)
        assert not d.expired(1.79)
        assert d.expired(1.8)

    def test_renewal_is_due_at_half_life(self) -> None:
        d = Deadline(granted_at=10.0, ttl=20.0)

        assert not d.needs_renewal(10.0)
        assert not d.needs_renewal(19.999)
        assert d.needs_renewal(20.0)
        assert not d.expired(20.0)

    def test_renewed_moves_the_deadline_and_keeps_the_ttl(self) -> None:
        d = Deadline(granted_at=10.0, ttl=20.0)

        r = d.renewed(25.0)

        assert r.granted_at == 25.0 and r.ttl == 20.0
        assert d.granted_at == 10.0, "the original deadline is unchanged"
        assert d.expired(29.5) and not r.expired(29.5)
        assert r.expires_at == pytest.approx(44.0)
        assert not r.needs_renewal(34.9) and r.needs_renewal(35.0)

    @given(
        granted_at=st.floats(min_value=0, max_value=1e6),
        ttl=st.floats(min_value=0.01, max_value=1e4),
    )
    def test_local_deadline_falls_before_the_real_expiry_and_after_renewal(
        self, granted_at: float, ttl: float
    ) -> None:
        d = Deadline(granted_at=granted_at, ttl=ttl)

        assert granted_at + ttl / 2 < d.expires_at < granted_at + ttl
        assert d.needs_renewal(d.expires_at)


class TestLruOrder:
    def test_never_used_first_then_oldest_use_then_id(self) -> None:
        keys: list[tuple[dt.datetime | None, KeyId]] = [
            (at(5), KeyId(1)),
            (None, KeyId(7)),
            (at(1), KeyId(4)),
            (at(1), KeyId(2)),
            (None, KeyId(3)),
            (at(0.000001), KeyId(9)),
        ]

        ordered = sorted(keys, key=lambda k: lru_order(*k))

        assert [key_id for _, key_id in ordered] == [3, 7, 9, 2, 4, 1]

    def test_a_never_used_key_beats_any_use(self) -> None:
        ancient = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
        assert lru_order(None, KeyId(99)) < lru_order(ancient, KeyId(1))

    @given(
        st.lists(
            st.tuples(
                st.none() | st.integers(min_value=0, max_value=50).map(at),
                st.integers(min_value=1, max_value=10_000),
            ),
            unique_by=lambda k: k[1],
        )
    )
    def test_agrees_with_the_rule_as_stated(
        self, keys: list[tuple[dt.datetime | None, int]]
    ) -> None:
        ordered = sorted(keys, key=lambda k: lru_order(k[0], KeyId(k[1])))

        never = sorted(k for k in keys if k[0] is None)
        used = sorted((k for k in keys if k[0] is not None), key=lambda k: (k[0], k[1]))
        assert ordered == never + used
