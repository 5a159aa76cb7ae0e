"""Pulling our mailbox: a fixed schedule, fixed-size batches, and an acknowledgement that
leaves with the next request.

Every ``pull_interval`` (after a random phase) the client sends ``PULL_ACK`` for the previous
batch, then ``PULL_REQUEST(seq)``; the provider answers with exactly ``pull_batch`` items. The
acknowledgement never leaves when a batch completes: its delay would tell a link observer
whether the batch held mail (issue 13 item 3). States of one pull, per ``seq``::

    (none) --fire--> OPEN --all pull_batch items seen--> COMPLETE (ack waits for next fire)
                     OPEN --next fire--> ABANDONED (counted incomplete; the items that did
                                                    arrive are acknowledged)
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from client.transport.drops import DropReason
from mixcore.control import ControlKind, ItemType, PullAck, PullItem, PullRequest
from mixcore.errors import DecodeError

SEQ_MODULUS = 1 << 32


@dataclass(slots=True, eq=False)
class _Batch:
    seq: int
    seen: set[int] = field(default_factory=set)
    item_ids: list[int] = field(default_factory=list)


class Pulls:
    """The pull schedule and the open batch; items it accepts go back to the caller."""

    def __init__(
        self, *, interval: float, batch: int, rng: random.Random, now: float,
        drops: Counter[DropReason],
    ) -> None:
        self.interval = interval
        self.batch_size = batch
        self.next_time = now + rng.uniform(0.0, interval)
        self._drops = drops
        self._seq = 0
        self._open: _Batch | None = None
        self._ack = PullAck(0, ())
        self.sent = 0
        self.items = 0
        """Non-dummy items received."""

    def update(self, *, interval: float, batch: int, now: float) -> None:
        """New consensus parameters: the next pull comes no later than one new interval."""
        self.interval, self.batch_size = interval, batch
        self.next_time = min(self.next_time, now + interval)

    def catch_up(self, late: float, now: float) -> None:
        if self.next_time < late:
            self.next_time = now

    def fire(self, t: float) -> list[tuple[ControlKind, bytes]]:
        """The pull time ``t``: the previous batch's acknowledgement, then the next request."""
        open_batch = self._open
        if open_batch is not None:
            self._drops[DropReason.INCOMPLETE_PULL] += 1
            self._ack = PullAck(open_batch.seq, tuple(open_batch.item_ids))
        cells = [(ControlKind.PULL_ACK, self._ack.encode())]
        self._ack = PullAck(self._seq, ())
        self._seq = (self._seq + 1) % SEQ_MODULUS
        self._open = _Batch(self._seq)
        self.next_time = t + self.interval
        self.sent += 1
        cells.append((ControlKind.PULL_REQUEST, PullRequest(self._seq).encode()))
        return cells

    def accept(self, body: bytes) -> PullItem | None:
        """One ``PULL_ITEM`` body: the item if it is real and belongs to the open batch, else
        None (a dummy, or a counted drop). Completes the batch on its last item."""
        try:
            item = PullItem.decode(body)
        except DecodeError:
            self._drops[DropReason.MALFORMED_CONTROL] += 1
            return None
        batch = self._open
        if batch is None or item.seq != batch.seq:
            self._drops[DropReason.STALE_PULL_ITEM] += 1
            return None
        if item.count != self.batch_size:
            self._drops[DropReason.BAD_PULL_ITEM] += 1
            return None
        if item.index in batch.seen:
            self._drops[DropReason.DUPLICATE_PULL_ITEM] += 1
            return None
        batch.seen.add(item.index)
        real = item.item_type is not ItemType.DUMMY
        if real:
            batch.item_ids.append(item.item_id)
            self.items += 1
        if len(batch.seen) == self.batch_size:
            # every real item, junk included, so the provider deletes it; sent at next fire
            self._ack = PullAck(batch.seq, tuple(batch.item_ids))
            self._open = None
        return item if real else None
