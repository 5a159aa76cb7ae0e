"""The client's three send streams.

Loopix's client sends three independent Poisson processes (payload lambda_P, loop lambda_L,
drop lambda_D). What an observer sees of a client is the union of their send times, so those
times must not depend on what the user does. Each stream therefore draws its gaps from its
*own* generator, forked from the injected one at construction (``mixcore.poisson.fork_rng``):
choosing paths, delays or retransmission jitter consumes other generators, so the same seed
yields the same send times whether the user is busy or idle (the tests check exactly that).
The schedules themselves are ``mixcore.poisson.PoissonStream``, the same as a node's loops.
"""

from __future__ import annotations

import random
from collections import Counter
from enum import Enum

from mixcore.poisson import PoissonStream, fork_rng


class StreamKind(Enum):
    PAYLOAD = "payload"
    LOOP = "loop"
    DROP = "drop"


ORDER = (StreamKind.PAYLOAD, StreamKind.LOOP, StreamKind.DROP)


class SendStreams:
    """The three streams of one client, each on a generator forked for it alone, in a fixed
    order (payload, loop, drop), so a seed gives the same send times busy or idle."""

    def __init__(self, rates: dict[StreamKind, float], rng: random.Random, now: float) -> None:
        self.streams = {kind: PoissonStream(rates[kind], fork_rng(rng), now) for kind in ORDER}
        self.fired: Counter[StreamKind] = Counter()
        self.skipped = 0
        """Events not sent because the shell woke more than ``max_catch_up`` late."""

    def next_time(self, kind: StreamKind) -> float:
        return self.streams[kind].next_time

    def fire(self, kind: StreamKind) -> None:
        """``kind``'s event happened (whatever it carried): schedule the next one."""
        self.fired[kind] += 1
        self.streams[kind].advance()

    def catch_up(self, late: float, now: float) -> None:
        """Restart from ``now`` each stream whose event is older than ``late`` (a suspended
        laptop): no burst of missed packets; memorylessness makes the restart exact."""
        for stream in self.streams.values():
            if stream.next_time < late:
                self.skipped += 1
                stream.restart(now)

    def set_rates(self, rates: dict[StreamKind, float], now: float) -> None:
        for kind, rate in rates.items():
            self.streams[kind].set_rate(rate, now)
