"""How much of an authority one client may hold: request caps, body deadlines (sans-IO parts).

An authority answers nodes, clients and its peer authorities over plain HTTP. Without bounds a
few hundred slow uploads hold its descriptors and tasks until honest requests time out. The
``limits`` section of ``authority.json`` sets:

* ``body_timeout``: seconds to receive a whole request body; slower bodies are cut with 408;
* ``max_requests``: requests in progress at once; beyond it, 503 — except that the last
  ``peer_reserve`` places are kept for the peer authorities' addresses, so voting goes on;
* ``max_requests_per_source``: requests in progress from one source address (IPv4 address or
  IPv6 /64); peers' addresses are exempt;
* ``keep_alive_timeout``: seconds an idle HTTP connection stays open (hypercorn's setting; it
  also bounds a connection that never completes its request head).

:class:`RequestLimiter` counts; :mod:`directory.app` enforces with it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mixcore.sources import source_key


@dataclass(frozen=True, slots=True)
class HttpLimits:
    body_timeout: float = 5.0
    max_requests: int = 512
    max_requests_per_source: int = 32
    peer_reserve: int = 32
    keep_alive_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("body_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"limits.{name}: expected a number of seconds")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"limits.{name}: must be > 0 seconds")
            object.__setattr__(self, name, float(value))
        for name in ("max_requests", "max_requests_per_source", "peer_reserve"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"limits.{name}: expected a whole number >= 0")
        if self.max_requests_per_source < 1 or self.max_requests <= self.peer_reserve:
            raise ValueError(
                "limits: need max_requests_per_source >= 1 and max_requests > peer_reserve"
            )

    def to_dict(self) -> dict[str, float | int]:
        return {
            "body_timeout": self.body_timeout,
            "max_requests": self.max_requests,
            "max_requests_per_source": self.max_requests_per_source,
            "peer_reserve": self.peer_reserve,
            "keep_alive_timeout": self.keep_alive_timeout,
        }


class RequestLimiter:
    """Requests in progress, in all and per source; admits or refuses a new one."""

    def __init__(self, limits: HttpLimits, peer_sources: Iterable[str] = ()) -> None:
        self.limits = limits
        self.peer_sources = frozenset(source_key(s) for s in peer_sources)
        self.active = 0
        self._by_source: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def admit(self, address: str | None) -> str | None:
        """Take a place for a request from ``address``; returns its source key, or None
        (refused, counted) when no place is left for it."""
        key = source_key(address)
        peer = key in self.peer_sources
        room = self.limits.max_requests - (0 if peer else self.limits.peer_reserve)
        if self.active >= room:
            self.refused["busy"] += 1
            return None
        if not peer and self._by_source[key] >= self.limits.max_requests_per_source:
            self.refused["per_source"] += 1
            return None
        self.active += 1
        self._by_source[key] += 1
        return key

    def release(self, key: str) -> None:
        self.active -= 1
        self._by_source[key] -= 1
        if self._by_source[key] <= 0:
            del self._by_source[key]

    def statistics(self) -> dict[str, int]:
        return {
            "requests_in_progress": self.active,
            **{f"requests_refused_{k}": v for k, v in sorted(self.refused.items())},
        }
