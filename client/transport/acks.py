"""Attempts in flight: each fragment's timer and the SURB-ACKs its recent attempts wait for.

Every attempt of a fragment carries a fresh SURB; the fragment is acknowledged by whichever of
its last ``surbs_per_fragment`` attempts' ACK comes back first. A timer heap holds one entry
per arming (an attempt's timeout or a backoff's end); entries made stale by an ACK, an abandon
or a re-arm are skipped lazily. A retired SURB id is remembered a while so that a late ACK is
counted ``stale_ack`` rather than ``unknown_ack``.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict

from client.transport.arq import ArqInput, FragmentState, OutgoingFragment
from mixcore.sphinx import SurbKeys

#: Fragment states with a timer: an attempt's timeout, or a backoff's end.
TIMED = (FragmentState.IN_FLIGHT, FragmentState.BACKOFF)


class AttemptTracker:
    def __init__(self, *, surbs_per_fragment: int, max_retired: int) -> None:
        self.surbs_per_fragment = surbs_per_fragment
        self.max_retired = max_retired
        self._timers: list[tuple[float, int, OutgoingFragment]] = []
        self._timer_seq = 0
        self._surbs: dict[bytes, tuple[OutgoingFragment, SurbKeys]] = {}
        self._mixes: dict[bytes, tuple[bytes, ...]] = {}
        self._retired: OrderedDict[bytes, None] = OrderedDict()

    # -- timers

    def arm(self, fragment: OutgoingFragment, when: float) -> None:
        fragment.deadline = when
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fragment))

    def next_timer(self) -> float:
        """When the earliest live timer fires (stale entries are dropped on the way)."""
        while self._timers:
            when, _, fragment = self._timers[0]
            if fragment.deadline == when and fragment.state in TIMED:
                return when
            heapq.heappop(self._timers)
        return math.inf

    def pop_timer(self) -> OutgoingFragment:
        """The fragment whose timer :meth:`next_timer` named; its deadline is cleared."""
        _, _, fragment = heapq.heappop(self._timers)
        fragment.deadline = None
        return fragment

    # -- SURBs

    def attempt(self, fragment: OutgoingFragment, keys: SurbKeys, mixes: tuple[bytes, ...]) -> None:
        """An attempt of ``fragment`` left with the SURB ``keys`` through ``mixes``."""
        fragment.surb_ids.append(keys.surb_id)
        self._surbs[keys.surb_id] = (fragment, keys)
        self._mixes[keys.surb_id] = mixes
        while len(fragment.surb_ids) > self.surbs_per_fragment:
            self.retire(fragment.surb_ids.pop(0))

    def lookup(self, surb_id: bytes) -> tuple[OutgoingFragment, SurbKeys] | None:
        return self._surbs.get(surb_id)

    def mixes(self, surb_id: bytes) -> tuple[bytes, ...]:
        """The mixes an attempt went through (to suspect or vouch for them)."""
        return self._mixes.get(surb_id, ())

    def is_retired(self, surb_id: bytes) -> bool:
        return surb_id in self._retired

    def retire(self, surb_id: bytes) -> None:
        """Forget an attempt's SURB; remember its id a while to count a late ACK as stale."""
        self._surbs.pop(surb_id, None)
        self._mixes.pop(surb_id, None)
        self._retired[surb_id] = None
        while len(self._retired) > self.max_retired:
            self._retired.popitem(last=False)

    def finish(self, fragment: OutgoingFragment, event: ArqInput) -> None:
        """``fragment`` is acknowledged or given up: its timer and SURBs go."""
        fragment.apply(event)
        fragment.deadline = None
        for surb_id in fragment.surb_ids:
            self.retire(surb_id)
        fragment.surb_ids.clear()

    def footprint(self) -> dict[str, int]:
        return {"timers": len(self._timers), "surbs": len(self._surbs),
                "retired_surbs": len(self._retired)}
