"""What every room of the messenger shares: the store, the clock, the user's own identity and
card, the transport's size limit and the counters. One object, made by the facade
(:class:`client.messenger.messenger.Messenger`) and handed to each room; only the facade's
upkeep replaces the card (a rotated prekey)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from client.e2e.cards import ContactCard
from client.e2e.identity import UserIdentity
from client.storage import Store


@dataclass(slots=True)
class Context:
    store: Store
    clock: Callable[[], float]
    identity: UserIdentity
    card: ContactCard
    max_message_len: int
    counts: Counter[str] = field(default_factory=Counter)
    """Messages received, dropped and refused, by reason (``mixnet status`` shows them)."""
