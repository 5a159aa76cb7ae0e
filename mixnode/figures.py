"""A node's per-epoch traffic figures for its descriptor (sans-IO): the meter's inputs.

Once a second the node's upkeep hands :meth:`EpochFigures.observe` its cumulative counters
(packets in, own loops returned and lost) and its current pool size. When an epoch ends, its
figures are frozen: packets in per second, the time-averaged pool size, the share of settled
loops that came back. They are counts over a whole epoch, nothing per packet, and the descriptor
for a later epoch carries the last frozen figures; because they are fixed for the epoch, every
upload of that descriptor has the same bytes and the authorities' majority vote on exact bytes
agrees (docs/simulations.md, "The anonymity meter").
"""

from __future__ import annotations

from collections.abc import Callable

from mixcore.descriptor import TrafficFigures


class EpochFigures:
    def __init__(self, epoch_at: Callable[[float], int]) -> None:
        self._epoch_at = epoch_at
        self._epoch: int | None = None
        self._start = 0.0
        self._last_t = 0.0
        self._pool_area = 0.0
        self._last_pool = 0
        self._base: tuple[int, int, int] = (0, 0, 0)
        self._last: tuple[int, int, int] = (0, 0, 0)
        self.frozen: TrafficFigures | None = None

    def observe(self, now: float, *, packets_in: int, pool_size: int, loops_returned: int,
                loops_lost: int) -> None:
        epoch = self._epoch_at(now)
        counters = (packets_in, loops_returned, loops_lost)
        if self._epoch is None:
            self._begin(epoch, now, counters, pool_size)
            return
        self._pool_area += self._last_pool * max(now - self._last_t, 0.0)
        self._last_t, self._last_pool, self._last = now, pool_size, counters
        if epoch != self._epoch:
            self._freeze(now)
            self._begin(epoch, now, counters, pool_size)

    def _begin(self, epoch: int, now: float, counters: tuple[int, int, int], pool: int) -> None:
        self._epoch, self._start, self._last_t = epoch, now, now
        self._pool_area, self._last_pool = 0.0, pool
        self._base = self._last = counters

    def _freeze(self, now: float) -> None:
        span = now - self._start
        if span <= 0 or self._epoch is None:
            return
        packets, returned, lost = (a - b for a, b in zip(self._last, self._base, strict=True))
        settled = returned + lost
        self.frozen = TrafficFigures.of(self._epoch, packets / span, self._pool_area / span,
                                        returned / settled if settled else None)

    def for_descriptor(self, epoch: int) -> TrafficFigures | None:
        """The last frozen figures, if they are of an epoch before ``epoch``."""
        if self.frozen is not None and self.frozen.measured_epoch < epoch:
            return self.frozen
        return None
