"""Disappearing messages: the per-conversation timer both sides agree on, and expiry.

One side proposes (0 turns it off), the other accepts; the timer applies on each side when
the acceptance is sent or received, never on a proposal alone (a contact's ``timer``,
``my_proposal``, ``their_proposal``). Each message then carries the sender's timer; each side
computes the expiry from its own clock with the shorter of the message's and its own timer.
:meth:`Timers.expire` deletes what ran out even if nobody reads it (reading filters it out
too: :meth:`client.messenger.conversations.Conversations.live`). See ``docs/messenger.md`` §7.
"""

from __future__ import annotations

from collections.abc import Callable

from client.messenger import inner
from client.messenger.contacts import Contacts
from client.messenger.context import Context
from client.messenger.conversations import Conversations, of_contact
from client.messenger.courier import Courier, Envelope
from client.messenger.errors import MessengerError
from client.messenger.records import ContactRecord


def span(seconds: int) -> str:
    """A timer for people: ``off``, ``5 min``, ``2 h``, ``7 d``, ``90 s``."""
    if seconds == 0:
        return "off"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def expires_at(now: float, message_ttl: int, contact_timer: int) -> float:
    """When a received message expires: the shorter of the sender's and our timer (0: never)."""
    ttl = min((t for t in (message_ttl, contact_timer) if t), default=0)
    return now + ttl if ttl else 0.0


class Timers:
    def __init__(self, ctx: Context, contacts: Contacts, conversations: Conversations,
                 courier: Courier, every_conversation: Callable[[], list[str]]) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.contacts = contacts
        self.conversations = conversations
        self.courier = courier
        self._every_conversation = every_conversation
        self._scan: tuple[int, float] | None = None  # (store revision, next expiry)

    def propose(self, name: str, seconds: int) -> list[Envelope]:
        """Propose a disappearing-message timer (0 turns it off); it applies when accepted."""
        if not 0 <= seconds <= inner.MAX_TTL:
            raise MessengerError("the timer is 0 (off) to one year, in seconds")
        c = self.contacts.named(name)
        with self.store.transaction():
            env = self.courier.seal(c, inner.timer(seconds, False))
            c.my_proposal = seconds
            self.contacts.save(c)
            self.conversations.event(of_contact(c.cid),
                                     f"you proposed disappearing messages: {span(seconds)}")
        return [env]

    def accept(self, name: str) -> list[Envelope]:
        c = self.contacts.named(name)
        if c.their_proposal < 0:
            raise MessengerError(f"{name} has not proposed a timer")
        seconds = c.their_proposal
        with self.store.transaction():
            env = self.courier.seal(c, inner.timer(seconds, True))
            c.timer, c.their_proposal, c.my_proposal = seconds, -1, -1
            self.contacts.save(c)
            self.conversations.event(of_contact(c.cid), f"disappearing messages: {span(seconds)}")
        return [env]

    def on_message(self, c: ContactRecord, message: inner.Timer) -> None:
        """A contact's proposal, or its acceptance of ours (a stale one is counted)."""
        seconds, conv = message.seconds, of_contact(c.cid)
        if message.accept:
            if c.my_proposal == seconds:
                c.timer, c.my_proposal, c.their_proposal = seconds, -1, -1
                self.conversations.event(conv, f"disappearing messages: {span(seconds)}")
            else:
                self.ctx.counts["stale_timer_accept"] += 1
        else:
            c.their_proposal = seconds
            self.conversations.event(
                conv,
                f"{c.name} proposes disappearing messages: {span(seconds)} "
                f"(accept: mixnet timer accept {c.name})",
            )
        self.contacts.save(c)

    def expire(self) -> int:
        """Delete every message whose timer ran out; returns how many. Skips the scan while
        nothing was written since the last one and no timer is due (the daemon asks every
        second)."""
        now = self.ctx.clock()
        if self._scan is not None:
            revision, due = self._scan
            if revision == self.store.revision and now < due:
                return 0
        before = self.ctx.counts["expired"]
        due = float("inf")
        for conv in self._every_conversation():
            for _, record in self.conversations.live(conv):
                if record.expires_at:
                    due = min(due, record.expires_at)
        self._scan = (self.store.revision, due)
        return self.ctx.counts["expired"] - before
