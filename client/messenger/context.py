"""What every room of the messenger shares: the store, the clock, the user's own identity and
card, the transport's size limit and the counters. One object, made by the facade
(:class:`client.messenger.messenger.Messenger`) and handed to each room; only the facade's
upkeep replaces the card (a rotated prekey)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from client.e2e.cards import ContactCard
from client.e2e.identity import UserIdentity
from client.storage import Store
from mixcore.statistics import Statistics, Tally


@dataclass(frozen=True, slots=True)
class MessengerStatistics(Statistics):
    """Messages received, dropped and refused, by reason: counts only (``mixnet status``)."""

    received: int = 0
    duplicate: int = 0
    """A message already stored (a retransmission whose first copy arrived)."""
    replayed: int = 0
    """A first message whose prekey was already used: refused."""
    undecryptable: int = 0
    malformed: int = 0
    rejected: int = 0
    blocked: int = 0
    """From a blocked contact: dropped, never answered."""
    receipts_blocked: int = 0
    group_rejected: int = 0
    """Group changes refused (not from the group's creator, unknown group, ...)."""
    stale_timer_accept: int = 0
    expired: int = 0
    """Disappearing messages erased."""
    prekeys_rotated: int = 0
    prekeys_erased: int = 0


@dataclass(slots=True)
class Context:
    store: Store
    clock: Callable[[], float]
    identity: UserIdentity
    card: ContactCard
    max_message_len: int
    counts: Tally[MessengerStatistics] = field(default_factory=lambda: Tally(MessengerStatistics))
    """Messages received, dropped and refused, by reason (``mixnet status`` shows them)."""
