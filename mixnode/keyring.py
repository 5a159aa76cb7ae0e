"""A node's Sphinx mix keys by epoch, and which of them may process a packet right now.

Clients build packets with the keys of the epoch they believe current; clocks differ and packets
sit in pools, so near a boundary a packet may be for the previous or the next epoch. A node
therefore tries, in order: the current epoch's key, then the previous one while ``now`` is within
``grace`` seconds after its epoch ended, then the next one while ``now`` is within ``grace``
seconds before it starts.

After its grace period a key is *retired*: it no longer processes anything, but for one more
grace period a packet that fails every live key is tried under it only to report the drop as
``expired_key`` rather than ``bad_mac`` (an operator can then tell clock skew from tampering).
Then it is erased, and with it the node's ability to ever decrypt that epoch's packets.
"""

from __future__ import annotations

from mixcore.epochs import EpochClock
from mixcore.sphinx import MixPrivateKey


class KeyRing:
    def __init__(self, clock: EpochClock, grace: float) -> None:
        if not 0 <= grace < clock.epoch_length:
            raise ValueError("grace must be >= 0 and shorter than an epoch")
        self.clock = clock
        self.grace = grace
        self._keys: dict[int, MixPrivateKey] = {}

    def add(self, epoch: int, key: MixPrivateKey) -> None:
        self._keys[epoch] = key

    def get(self, epoch: int) -> MixPrivateKey | None:
        return self._keys.get(epoch)

    def epochs(self) -> list[int]:
        return sorted(self._keys)

    def live(self, now: float) -> list[tuple[int, MixPrivateKey]]:
        """Keys that may process a packet at ``now``, most likely first."""
        current = self.clock.epoch_at(now)
        order = [current]
        if now < self.clock.start(current) + self.grace:
            order.append(current - 1)
        if now >= self.clock.end(current) - self.grace:
            order.append(current + 1)
        return [(e, self._keys[e]) for e in order if e in self._keys]

    def retired(self, now: float) -> list[tuple[int, MixPrivateKey]]:
        """Keys past their grace period but not yet erased (for drop classification only)."""
        current = self.clock.epoch_at(now)
        live = {e for e, _ in self.live(now)}
        return [
            (e, k)
            for e, k in sorted(self._keys.items())
            if e < current and e not in live and now < self.clock.end(e) + 2 * self.grace
        ]

    def erase_expired(self, now: float) -> list[int]:
        """Forget keys whose retirement window is over; returns the epochs erased."""
        gone = [e for e in self._keys if now >= self.clock.end(e) + 2 * self.grace]
        for epoch in gone:
            del self._keys[epoch]
        return gone
