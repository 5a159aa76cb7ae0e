"""Epoch numbering: epoch ``n`` covers ``[genesis + n*length, genesis + (n+1)*length)``.

Every node and client derives the epoch from its own clock and the network's genesis time, so no
message has to announce it; mix keys, descriptors and consensus documents are all per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mixcore.errors import ParamsError
from mixcore.params import NetworkParams


@dataclass(frozen=True, slots=True)
class EpochClock:
    genesis_time: float
    epoch_length: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epoch_length) and self.epoch_length > 0):
            raise ParamsError("epoch_length", "must be > 0")
        if not math.isfinite(self.genesis_time):
            raise ParamsError("genesis_time", "must be finite")

    @classmethod
    def from_params(cls, params: NetworkParams) -> EpochClock:
        return cls(params.genesis_time, params.epoch_length)

    def epoch_at(self, now: float) -> int:
        """The epoch containing time ``now`` (Unix seconds)."""
        if now < self.genesis_time:
            raise ParamsError("genesis_time", f"time {now} is before the network's genesis")
        return int((now - self.genesis_time) // self.epoch_length)

    def start(self, epoch: int) -> float:
        """Unix time at which ``epoch`` begins."""
        return self.genesis_time + epoch * self.epoch_length

    def end(self, epoch: int) -> float:
        """Unix time at which ``epoch`` ends (the next one begins)."""
        return self.start(epoch + 1)

    def until_next(self, now: float) -> float:
        """Seconds from ``now`` to the start of the next epoch."""
        return self.end(self.epoch_at(now)) - now
