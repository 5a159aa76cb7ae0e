"""Our own loops and payload-stream decoys in flight, and what comes back of them.

A loop goes out through every layer to our own mailbox with a SURB-ACK; when its item comes
back in a pull it counts ``loops_returned`` and its ACK ``loop_acks``; one not back within
``loop_ttl`` counts ``loops_lost`` (the client's view of the network's health). A decoy's only
trace is its SURB-ACK (``decoy_acks``). A loop item we do not wait for (a second delivery, a
late one, a forgery by someone holding our card) is ``unexpected_loop``: counted, never shown.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from enum import Enum

from client.transport.drops import DropReason
from mixcore.sphinx import SurbKeys


class CoverKind(Enum):
    LOOP = "loop"
    DECOY = "decoy"


class LoopMonitor:
    def __init__(self, *, ttl: float, max_pending: int, drops: Counter[DropReason]) -> None:
        self.ttl = ttl
        self.max_pending = max_pending
        self._drops = drops
        self._loops: OrderedDict[bytes, float] = OrderedDict()
        self._surbs = {kind: OrderedDict[bytes, tuple[SurbKeys, float]]() for kind in CoverKind}
        self.counts: Counter[str] = Counter()

    def sent(self, kind: CoverKind, keys: SurbKeys, t: float, loop_id: bytes = b"") -> None:
        """A loop (with its id) or a decoy left at ``t``; the oldest beyond the bound go."""
        surbs = self._surbs[kind]
        surbs[keys.surb_id] = (keys, t)
        while len(surbs) > self.max_pending:
            surbs.popitem(last=False)
        if kind is CoverKind.LOOP:
            self._loops[loop_id] = t
            while len(self._loops) > self.max_pending:
                self._loops.popitem(last=False)
                self.counts["loops_lost"] += 1
        self.counts["loops_sent" if kind is CoverKind.LOOP else "decoys_sent"] += 1

    def loop_item(self, loop_id: bytes) -> None:
        """A loop item came back in a pull (opened under our key)."""
        if self._loops.pop(loop_id, None) is not None:
            self.counts["loops_returned"] += 1
        else:
            self._drops[DropReason.UNEXPECTED_LOOP] += 1

    def ack_keys(self, surb_id: bytes) -> tuple[CoverKind, SurbKeys] | None:
        """Whose SURB ``surb_id`` is, among our loops and decoys, and its keys."""
        for kind, surbs in self._surbs.items():
            entry = surbs.get(surb_id)
            if entry is not None:
                return kind, entry[0]
        return None

    def acked(self, kind: CoverKind, surb_id: bytes, ok: bool) -> None:
        """The ACK of ``surb_id`` came back, decoding to the ACK payload (``ok``) or not. A
        loop's SURB stays open after a bad body (the real one may still come); a decoy's goes."""
        surbs = self._surbs[kind]
        if not ok:
            self._drops[DropReason.BAD_ACK] += 1
            if kind is CoverKind.DECOY:
                del surbs[surb_id]
                self.counts["bad_decoy_acks"] += 1
            return
        del surbs[surb_id]
        self.counts["loop_acks" if kind is CoverKind.LOOP else "decoy_acks"] += 1

    def next_deadline(self) -> float:
        oldest = min(
            next(iter(self._loops.values()), math.inf),
            *(next(iter(s.values()), (None, math.inf))[1] for s in self._surbs.values()),
        )
        return oldest + self.ttl

    def expire(self, t: float) -> None:
        """Forget what is older than ``loop_ttl`` at ``t`` (a loop that never came is lost)."""
        while self._loops and next(iter(self._loops.values())) + self.ttl <= t:
            self._loops.popitem(last=False)
            self.counts["loops_lost"] += 1
        for surbs in self._surbs.values():
            while surbs and next(iter(surbs.values()))[1] + self.ttl <= t:
                surbs.popitem(last=False)

    def footprint(self) -> dict[str, int]:
        return {
            "loops": len(self._loops),
            "loop_surbs": len(self._surbs[CoverKind.LOOP]),
            "decoy_surbs": len(self._surbs[CoverKind.DECOY]),
        }
