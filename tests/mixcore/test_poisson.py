"""The shared Poisson schedule and truncated exponential delay (clients and nodes draw both)."""

from __future__ import annotations

import math
import random

import pytest

from mixcore.poisson import PoissonStream, fork_rng, truncated_exponential


def test_a_stream_counts_every_event_due_and_matches_its_rate() -> None:
    stream = PoissonStream(4.0, random.Random(7), start=0.0)
    assert 0.0 < stream.next_time < math.inf
    total = stream.due(10_000.0)
    assert stream.next_time > 10_000.0
    # 40,000 expected events: Poisson sd 200, so 5 sd either side
    assert 39_000 < total < 41_000
    assert stream.due(10_000.0) == 0  # nothing is counted twice


def test_due_and_advance_draw_the_same_times() -> None:
    a = PoissonStream(2.0, random.Random(3), start=5.0)
    b = PoissonStream(2.0, random.Random(3), start=5.0)
    times = []
    for _ in range(50):
        times.append(a.next_time)
        a.advance()
    counted = b.due(times[-1])
    assert counted == 50 and b.next_time == a.next_time


def test_a_zero_rate_never_fires_until_it_is_raised() -> None:
    stream = PoissonStream(0.0, random.Random(1), start=5.0)
    assert stream.due(1e12) == 0 and stream.next_time == math.inf
    stream.set_rate(1.0, 20.0)
    assert 20.0 < stream.next_time < math.inf


def test_truncated_exponential_stays_under_its_bound_and_keeps_its_mean() -> None:
    rng = random.Random(11)
    draws = [truncated_exponential(rng, 1.0, 2.0) for _ in range(20_000)]
    assert max(draws) <= 2.0 and min(draws) >= 0.0
    # mean of Exp(1) truncated at 2: (1 - 3e^-2) / (1 - e^-2) = 0.6870; sd/sqrt(n) ~ 0.004
    assert abs(sum(draws) / len(draws) - 0.6870) < 0.02


def test_a_zero_mean_holds_for_nothing_and_a_bad_bound_is_refused() -> None:
    assert truncated_exponential(random.Random(1), 0.0, 60.0) == 0.0
    with pytest.raises(ValueError, match="bound"):
        truncated_exponential(random.Random(1), 1.0, 0.0)


def test_forks_are_independent_and_reproducible() -> None:
    a, b = random.Random(5), random.Random(5)
    fa, fb = fork_rng(a), fork_rng(b)
    assert [fa.random() for _ in range(3)] == [fb.random() for _ in range(3)]
    assert fork_rng(random.Random(5)).random() != fork_rng(random.Random(6)).random()
    assert isinstance(fork_rng(random.SystemRandom()), random.SystemRandom)
