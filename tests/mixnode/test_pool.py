"""The delay pool: due order, bounded capacity, no packet lost or reordered within a due time."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixnode.pool import DelayPool


def test_packets_leave_when_due_earliest_first() -> None:
    pool = DelayPool(10)
    pool.push(b"b", b"2", due=5.0)
    pool.push(b"a", b"1", due=2.0)
    pool.push(b"c", b"3", due=9.0)
    assert pool.next_deadline() == 2.0
    assert pool.pop_due(1.9) == []
    assert [p.packet for p in pool.pop_due(5.0)] == [b"1", b"2"]
    assert pool.next_deadline() == 9.0
    assert len(pool) == 1


def test_full_pool_refuses_and_counts() -> None:
    pool = DelayPool(2)
    assert pool.push(b"n", b"1", 1.0)
    assert pool.push(b"n", b"2", 1.0)
    assert not pool.push(b"n", b"3", 0.5)
    assert pool.refused == 1
    assert len(pool) == 2


def test_ties_leave_in_arrival_order() -> None:
    pool = DelayPool(100)
    for i in range(50):
        pool.push(b"n", bytes([i]), 3.0)
    assert [p.packet[0] for p in pool.pop_due(3.0)] == list(range(50))


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DelayPool(0)


@given(st.lists(st.floats(0, 1000, allow_nan=False), max_size=200), st.floats(0, 1000))
def test_nothing_lost_and_nothing_early(dues: list[float], now: float) -> None:
    pool = DelayPool(1000)
    for i, due in enumerate(dues):
        pool.push(b"n", i.to_bytes(2, "big"), due)
    out = pool.pop_due(now)
    assert all(p.due <= now for p in out)
    assert [p.due for p in out] == sorted(p.due for p in out)
    rest = pool.pop_due(math.inf)
    assert all(p.due > now for p in rest)
    expected = sorted(i.to_bytes(2, "big") for i in range(len(dues)))
    assert sorted(p.packet for p in out + rest) == expected
