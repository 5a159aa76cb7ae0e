"""Reassembly of received fragments into messages: any order, duplicates dropped, each message
delivered exactly once, incomplete ones expired, memory bounded.

The sender retransmits a fragment whose ACK was lost even though the fragment itself was stored,
so duplicates are normal, including of messages already delivered. Delivered message ids are
therefore remembered for ``delivered_ttl`` (longer than any sender keeps retrying) so that a
late duplicate is dropped rather than delivered twice.

Anyone who knows a mailbox address can send to it, so everything is bounded: fragments per
message, partial messages, bytes held, remembered ids. When a bound is hit the *oldest* partial
message is evicted (counted), so a flood of junk cannot block newer real messages forever.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from client.fragments import Fragment


class Outcome(Enum):
    PARTIAL = "partial"
    COMPLETE = "complete"
    DUPLICATE = "duplicate_fragment"
    ALREADY_DELIVERED = "already_delivered"
    INCONSISTENT = "inconsistent_fragment"
    TOO_MANY_FRAGMENTS = "too_many_fragments"


@dataclass(slots=True, eq=False)
class _Partial:
    count: int
    first_seen: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


@dataclass(frozen=True, slots=True)
class AddResult:
    outcome: Outcome
    data: bytes | None = None
    """The whole message when ``outcome`` is COMPLETE."""


class Reassembler:
    def __init__(
        self,
        *,
        max_fragments: int,
        max_partial_messages: int,
        max_partial_bytes: int,
        partial_ttl: float,
        delivered_ttl: float,
        max_delivered_ids: int,
    ) -> None:
        if delivered_ttl < partial_ttl:
            raise ValueError("delivered_ttl must be at least partial_ttl")
        self.max_fragments = max_fragments
        self.max_partial_messages = max_partial_messages
        self.max_partial_bytes = max_partial_bytes
        self.partial_ttl = partial_ttl
        self.delivered_ttl = delivered_ttl
        self.max_delivered_ids = max_delivered_ids
        self._partials: OrderedDict[bytes, _Partial] = OrderedDict()
        self._delivered: OrderedDict[bytes, float] = OrderedDict()
        self._bytes = 0
        self.expired = 0
        self.evicted = 0

    @property
    def partial_messages(self) -> int:
        return len(self._partials)

    @property
    def partial_bytes(self) -> int:
        return self._bytes

    @property
    def remembered_ids(self) -> int:
        return len(self._delivered)

    def add(self, fragment: Fragment, now: float) -> AddResult:
        mid = fragment.message_id
        if mid in self._delivered:
            return AddResult(Outcome.ALREADY_DELIVERED)
        if fragment.count > self.max_fragments:
            return AddResult(Outcome.TOO_MANY_FRAGMENTS)
        partial = self._partials.get(mid)
        if partial is None:
            if fragment.count == 1:
                self._remember(mid, now)
                return AddResult(Outcome.COMPLETE, fragment.chunk)
            partial = _Partial(fragment.count, now)
            self._partials[mid] = partial
        elif partial.count != fragment.count:
            return AddResult(Outcome.INCONSISTENT)
        if fragment.index in partial.chunks:
            return AddResult(Outcome.DUPLICATE)
        partial.chunks[fragment.index] = fragment.chunk
        partial.size += len(fragment.chunk)
        self._bytes += len(fragment.chunk)
        if len(partial.chunks) == partial.count:
            self._drop_partial(mid)
            self._remember(mid, now)
            return AddResult(
                Outcome.COMPLETE, b"".join(partial.chunks[i] for i in range(partial.count))
            )
        self._enforce_bounds(keep=mid)
        return AddResult(Outcome.PARTIAL)

    def _drop_partial(self, mid: bytes) -> None:
        partial = self._partials.pop(mid)
        self._bytes -= partial.size

    def _remember(self, mid: bytes, now: float) -> None:
        self._delivered[mid] = now
        while len(self._delivered) > self.max_delivered_ids:
            self._delivered.popitem(last=False)

    def _enforce_bounds(self, keep: bytes) -> None:
        while len(self._partials) > 1 and (
            len(self._partials) > self.max_partial_messages or self._bytes > self.max_partial_bytes
        ):
            # the oldest, but never the message just added to
            oldest = next(mid for mid in self._partials if mid != keep)
            self._drop_partial(oldest)
            self.evicted += 1

    def next_expiry(self) -> float:
        times = []
        if self._partials:
            times.append(next(iter(self._partials.values())).first_seen + self.partial_ttl)
        if self._delivered:
            times.append(next(iter(self._delivered.values())) + self.delivered_ttl)
        return min(times, default=float("inf"))

    def expire(self, now: float) -> int:
        """Forget partial messages older than ``partial_ttl`` (returned: how many) and delivered
        ids older than ``delivered_ttl``."""
        expired = 0
        while self._partials:
            mid, partial = next(iter(self._partials.items()))
            if partial.first_seen + self.partial_ttl > now:
                break
            self._drop_partial(mid)
            expired += 1
        while self._delivered:
            mid, when = next(iter(self._delivered.items()))
            if when + self.delivered_ttl > now:
                break
            self._delivered.popitem(last=False)
        self.expired += expired
        return expired
