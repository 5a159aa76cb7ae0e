"""Poisson send streams and the per-purpose random generators that drive them.

Loopix's client sends three independent Poisson processes (payload lambda_P, loop lambda_L,
drop lambda_D). What an observer sees of a client is the union of their send times, so those
times must not depend on what the user does. Each stream therefore draws its gaps from its
*own* generator, forked from the injected one at construction: choosing paths, delays or
retransmission jitter consumes other generators, so the same seed yields the same send times
whether the user is busy or idle (the tests check exactly that).
"""

from __future__ import annotations

import math
import random
from enum import Enum


class StreamKind(Enum):
    PAYLOAD = "payload"
    LOOP = "loop"
    DROP = "drop"


def fork_rng(rng: random.Random) -> random.Random:
    """An independent generator derived from ``rng``.

    ``random.SystemRandom`` (production) forks to another ``SystemRandom``: nothing to seed and
    no state an observer could reconstruct. A seeded ``random.Random`` (tests) forks to a
    ``Random`` seeded from 128 of its bits, so a whole run is reproducible from one seed.
    """
    if isinstance(rng, random.SystemRandom):
        return random.SystemRandom()
    return random.Random(rng.getrandbits(128))


class PoissonStream:
    """Event times of a Poisson process of ``rate`` per second (no events when the rate is 0)."""

    __slots__ = ("kind", "next_time", "rate", "rng")

    def __init__(self, kind: StreamKind, rate: float, rng: random.Random, start: float) -> None:
        self.kind = kind
        self.rate = rate
        self.rng = rng
        self.next_time = math.inf
        self.restart(start)

    def restart(self, now: float) -> None:
        """Draw the next event from ``now`` (memorylessness makes this exact for a Poisson
        process, whatever time had passed since the previous event)."""
        self.next_time = now + self.rng.expovariate(self.rate) if self.rate > 0 else math.inf

    def advance(self) -> None:
        """The event at ``next_time`` happened: schedule the one after it."""
        if self.rate > 0:
            self.next_time += self.rng.expovariate(self.rate)

    def set_rate(self, rate: float, now: float) -> None:
        if rate != self.rate:
            self.rate = rate
            self.restart(now)
