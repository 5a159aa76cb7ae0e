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

from enum import Enum


class StreamKind(Enum):
    PAYLOAD = "payload"
    LOOP = "loop"
    DROP = "drop"
