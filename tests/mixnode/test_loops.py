"""The node's loop bookkeeping: ids from the injected source, returns, losses, a bounded table."""

from __future__ import annotations

import itertools

from mixnode.loops import LOOP_ID_LEN, LoopTracker


def counter_bytes():
    numbers = itertools.count(1)
    return lambda n: next(numbers).to_bytes(n, "big")


def test_loops_return_expire_and_count() -> None:
    tracker = LoopTracker(randbytes=counter_bytes())
    first, second = tracker.new(deadline=10.0), tracker.new(deadline=20.0)
    assert first == (1).to_bytes(LOOP_ID_LEN, "big") and second == (2).to_bytes(LOOP_ID_LEN, "big")
    assert tracker.on_return(first + b"rest of the payload")
    assert not tracker.on_return(first)  # a second return of one loop is unknown
    assert tracker.expire(25.0) == 1
    assert not tracker.on_return(second)  # too late: already counted lost
    stats = tracker.statistics()
    assert stats["loops_sent"] == 2 and stats["loops_returned"] == 1
    assert stats["loops_lost"] == 1 and stats["loops_in_flight"] == 0
    assert stats["loop_return_share"] == 0.5


def test_the_table_is_bounded_and_the_oldest_counts_as_lost() -> None:
    tracker = LoopTracker(max_in_flight=3, randbytes=counter_bytes())
    ids = [tracker.new(deadline=100.0) for _ in range(5)]
    assert tracker.statistics()["loops_in_flight"] == 3
    assert tracker.lost == 2
    assert not tracker.on_return(ids[0]) and tracker.on_return(ids[4])


def test_default_ids_are_random() -> None:
    tracker = LoopTracker()
    assert len({tracker.new(1.0) for _ in range(100)}) == 100
