"""The delay pool: one timer heap holding every packet until the time its sender chose.

One heap for the whole node (not a task or timer per packet), bounded: when full, the new packet
is refused and counted, so memory never grows without bound under a flood. Packets that share a
due time leave in arrival order (a sequence number breaks ties), so the order carries no more
information than the sender-chosen delays already do.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

#: A heap entry: (due, seq, next_node, packet). A plain tuple: heap comparisons of tuples run in
#: C, those of an ordered dataclass in Python (they showed in a loaded node's profile). ``seq``
#: is unique, so the comparison never reaches the bytes.
_Entry = tuple[float, int, bytes, bytes]


@dataclass(frozen=True, slots=True)
class DuePacket:
    """A packet whose delay is over: send ``packet`` to ``next_node``."""

    next_node: bytes
    packet: bytes
    due: float


class DelayPool:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("pool capacity must be at least 1")
        self.capacity = capacity
        self._heap: list[_Entry] = []
        self._seq = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, next_node: bytes, packet: bytes, due: float) -> bool:
        """Hold ``packet`` until ``due``; False (and counted) when the pool is full."""
        if len(self._heap) >= self.capacity:
            self.refused += 1
            return False
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, next_node, packet))
        return True

    def next_deadline(self) -> float | None:
        """When the earliest packet is due, or None when the pool is empty."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[DuePacket]:
        """Every packet due at or before ``now``, earliest first."""
        out: list[DuePacket] = []
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= now:
            due, _, next_node, packet = pop(heap)
            out.append(DuePacket(next_node, packet, due))
        return out
