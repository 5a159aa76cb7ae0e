"""Mix and provider loops: the node's own packets that travel every other layer and return.

Loopix section 4.1: a node sends loops at ``mix_loop_rate`` (Poisson). If an adversary starts
delaying or dropping the node's input to isolate one target packet (an (n-1) attack), the node's
own loops stop coming back, so the share of loops returned is the alarm. Loops are
indistinguishable from other packets to every node they cross.

Sans-IO: ``mixcore.poisson.PoissonStream`` says when to send (the same schedule as a client's
streams); :class:`LoopTracker` remembers the loops in flight (bounded) and counts returns and
losses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from secrets import token_bytes

LOOP_ID_LEN = 16


class LoopTracker:
    def __init__(
        self, max_in_flight: int = 10_000, *, randbytes: Callable[[int], bytes] = token_bytes
    ) -> None:
        self._randbytes = randbytes
        self._in_flight: OrderedDict[bytes, float] = OrderedDict()
        self.max_in_flight = max_in_flight
        self.sent = 0
        self.returned = 0
        self.lost = 0
        self.unknown = 0

    def new(self, deadline: float) -> bytes:
        """A fresh loop id, expected back by ``deadline``."""
        loop_id = self._randbytes(LOOP_ID_LEN)
        if len(self._in_flight) >= self.max_in_flight:
            self._in_flight.popitem(last=False)
            self.lost += 1
        self._in_flight[loop_id] = deadline
        self.sent += 1
        return loop_id

    def on_return(self, payload: bytes) -> bool:
        loop_id = payload[:LOOP_ID_LEN]
        if self._in_flight.pop(loop_id, None) is None:
            self.unknown += 1
            return False
        self.returned += 1
        return True

    def expire(self, now: float) -> int:
        """Count loops past their deadline as lost (a late return is then 'unknown')."""
        gone = [k for k, deadline in self._in_flight.items() if deadline < now]
        for k in gone:
            del self._in_flight[k]
        self.lost += len(gone)
        return len(gone)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def return_share(self) -> float:
        """Returned of the loops settled (returned or lost); 1.0 before any settled."""
        settled = self.returned + self.lost
        return (self.returned / settled) if settled else 1.0

    def statistics(self) -> dict[str, float | int]:
        return {
            "loops_sent": self.sent,
            "loops_returned": self.returned,
            "loops_lost": self.lost,
            "loops_in_flight": self.in_flight,
            "loop_return_share": self.return_share,
        }
