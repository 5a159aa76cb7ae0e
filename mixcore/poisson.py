"""Poisson send schedules and truncated exponential delays: the two random laws of Loopix.

A client's payload, loop and drop streams and a node's own loops are Poisson processes (gaps
Exp(rate)); every hop's holding delay, chosen by whoever builds the packet, and an exit's
SURB-ACK hold are Exp(mean ``mean_hop_delay``), redrawn above ``max_hop_delay`` because nodes
refuse longer ones. Clients and nodes draw from these functions, so an observer cannot tell
their traffic apart by a difference in how it was drawn. The generator is always injected
(``random.SystemRandom`` in production, a seeded ``random.Random`` in tests).
"""

from __future__ import annotations

import math
import random


def fork_rng(rng: random.Random) -> random.Random:
    """An independent generator derived from ``rng``.

    ``random.SystemRandom`` (production) forks to another ``SystemRandom``: nothing to seed and
    no state an observer could reconstruct. A seeded ``random.Random`` (tests) forks to a
    ``Random`` seeded from 128 of its bits, so a whole run is reproducible from one seed.
    """
    if isinstance(rng, random.SystemRandom):
        return random.SystemRandom()
    return random.Random(rng.getrandbits(128))


def truncated_exponential(rng: random.Random, mean: float, bound: float) -> float:
    """Exp(mean ``mean``) redrawn until it is at most ``bound``; 0 for a mean of 0 or less.

    Redrawing (rather than capping) keeps the shape of the distribution below the bound, so
    no delay value is more likely than its neighbours; at the defaults (mean 0.2 s, bound 60 s)
    a redraw happens with probability e^-300.
    """
    if mean <= 0:
        return 0.0
    if bound <= 0:
        raise ValueError("the bound of a delay must be positive")
    while True:
        delay = rng.expovariate(1.0 / mean)
        if delay <= bound:
            return delay


class PoissonStream:
    """Event times of a Poisson process of ``rate`` per second (no events when the rate is 0).

    ``next_time`` is the next event; the owner calls :meth:`advance` when it fired (or
    :meth:`due` to count every event up to a time).
    """

    __slots__ = ("next_time", "rate", "rng")

    def __init__(self, rate: float, rng: random.Random, start: float) -> None:
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

    def due(self, now: float) -> int:
        """How many events are due by ``now``, advancing the schedule past them."""
        n = 0
        while self.next_time <= now:
            n += 1
            self.advance()
        return n

    def set_rate(self, rate: float, now: float) -> None:
        if rate != self.rate:
            self.rate = rate
            self.restart(now)
