"""The limits a node enforces on its peers, as sans-IO counters with the time passed in.

Every limit refuses the newcomer and keeps the node serving what it already serves:

* :class:`ConnectionLimiter`: inbound connections in all, per source address, and a reserve
  that only addresses of consensus nodes may use, so a flood of strangers never locks the
  mixes out of a provider (or the previous layer out of a mix);
* :class:`TokenBucket`: a sustained rate with a burst, per client link (packets) and per
  mailbox (stored items);
* :class:`WindowCounter`: at most N events per key per fixed time window (new mailboxes per
  source address), plus :class:`WindowCounter` again for the total per window.

Sources are IPv4 addresses, or the /64 network of an IPv6 address (:mod:`mixcore.sources`).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mixcore.sources import source_key


@dataclass(frozen=True, slots=True)
class Slot:
    """One admitted connection; ``reserved`` when it took one of the peer-reserve places."""

    source: str
    reserved: bool


class ConnectionLimiter:
    """Inbound connections: ``total`` in all, ``per_source`` per address, ``reserve`` for nodes.

    The last ``reserve`` places of ``total`` are admitted only for addresses that
    ``is_node_address`` recognizes (hosts of the nodes in the consensus); the server still
    checks, after the handshake, that such a connection really is a consensus node's link and
    closes it otherwise. Node addresses are exempt from ``per_source`` (a busy mix opens one
    link per peer; many nodes may share an address on a test network).
    """

    def __init__(
        self,
        *,
        total: int,
        per_source: int,
        reserve: int,
        is_node_address: Callable[[str], bool] = lambda _a: False,
    ) -> None:
        if total < 1 or per_source < 1 or not 0 <= reserve < total:
            raise ValueError("need total >= 1, per_source >= 1 and 0 <= reserve < total")
        self.total = total
        self.per_source = per_source
        self.reserve = reserve
        self.is_node_address = is_node_address
        self.active = 0
        self._by_source: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def admit(self, address: str | None) -> Slot | None:
        key = source_key(address)
        node = self.is_node_address(key)
        if self.active >= self.total:
            self.refused["total"] += 1
            return None
        reserved = self.active >= self.total - self.reserve
        if reserved and not node:
            self.refused["total"] += 1
            return None
        if not node and self._by_source[key] >= self.per_source:
            self.refused["per_source"] += 1
            return None
        self.active += 1
        self._by_source[key] += 1
        return Slot(key, reserved)

    def release(self, slot: Slot) -> None:
        self.active -= 1
        self._by_source[slot.source] -= 1
        if self._by_source[slot.source] <= 0:
            del self._by_source[slot.source]

    def statistics(self) -> dict[str, int]:
        return {
            "connections": self.active,
            "connection_limit": self.total,
            **{f"connections_refused_{k}": v for k, v in sorted(self.refused.items())},
        }


class TokenBucket:
    """``rate`` events per second sustained, ``burst`` at once."""

    __slots__ = ("_last", "_level", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._last = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend ``amount`` tokens if there are enough; False (nothing spent) otherwise."""
        if now > self._last:
            self._level = min(self.burst, self._level + (now - self._last) * self.rate)
            self._last = now
        if self._level >= amount:
            self._level -= amount
            return True
        return False

    def full(self, now: float) -> bool:
        """True when the bucket has refilled completely (it can be forgotten)."""
        return self._level + max(0.0, now - self._last) * self.rate >= self.burst


class BucketTable:
    """One :class:`TokenBucket` per key (e.g. per mailbox), with a bound on keys held.

    A key whose bucket is full again is forgotten, so the table holds only keys that were
    busy recently; past ``max_keys`` the least recently used key is dropped (it restarts
    with a full bucket, which favours the honest newcomer over the attacker's old key).
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[bytes | str, TokenBucket] = OrderedDict()
        self.refused = 0

    def take(self, key: bytes | str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._expire(now)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return True
        self.refused += 1
        return False

    def _expire(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class WindowCounter:
    """At most ``limit`` events per key in each fixed window of ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("need limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._index: int | None = None
        self._counts: Counter[str] = Counter()

    def _roll(self, now: float) -> None:
        index = int(now // self.window)
        if index != self._index:
            self._index = index
            self._counts.clear()

    def allowed(self, key: str, now: float) -> bool:
        """Would one more event for ``key`` stay within the limit now?"""
        self._roll(now)
        return self._counts[key] < self.limit

    def record(self, key: str, now: float) -> None:
        self._roll(now)
        self._counts[key] += 1
