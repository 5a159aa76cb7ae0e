"""The messenger's facade: one user's messenger over an unlocked encrypted store.

Sans-IO apart from the store. Sending returns :class:`Envelope` s (ciphertext for a provider
and mailbox) that the daemon hands to the transport; the transport's reports go to the
:class:`~client.messenger.ledger.DeliveryLedger` (:attr:`Messenger.ledger`, directly or through
:meth:`Messenger.bind` and the ``on_transport_*`` methods). Receiving takes the reassembled
transport payload and returns the envelopes to send in answer (end-to-end receipts). Time
comes from the ``clock`` its caller passes (a required argument: the daemon passes its own
``now``, tests a fake or ``time.time``); this module never reads the time itself.

The work is done in rooms, each the one owner of its concern:

=======================  ==============================================================
room                     owns
=======================  ==============================================================
``contacts.py``          contacts, verification, key changes, message requests
``groups.py``            groups: membership, fan-out, members' updates
``timers.py``            disappearing-message timers and expiry
``attachments.py``       files: names, limits, how a reply shows them
``ledger.py``            every outgoing message's delivery state (the one owner)
``conversations.py``     stored messages and events, read marks
``courier.py``           sealing inner messages into envelopes and opening payloads
``inner.py``             the inner message format (typed, one encoder and decoder)
``views.py``             the shape of every API reply
``prekeys.py``           rotating and erasing signed prekeys
``legacy.py``            moving an earlier store's settings rows into the tables
=======================  ==============================================================

This module wires them and routes what arrives (by the inner message's type). Honesty of
states: "at provider" is the transport's SURB-ACK (stored in the recipient's mailbox);
"delivered" is only ever set by the recipient's end-to-end receipt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_never

from client.config import ClientConfig
from client.e2e.cards import ContactCard
from client.e2e.errors import MessageError, ReplayError
from client.e2e.identity import UserIdentity
from client.e2e.safety import SafetyNumber
from client.fragments import max_message_len
from client.messenger import attachments, inner, prekeys, views
from client.messenger.contacts import MAX_NAME_LEN, Contacts
from client.messenger.context import Context, MessengerStatistics
from client.messenger.conversations import (
    Conversations,
    of_contact,
    of_group,
    rebuilt,
    record_of,
)
from client.messenger.courier import Courier, Envelope, encrypted_size
from client.messenger.errors import MessengerError, UnknownContact, UnknownGroup
from client.messenger.groups import Groups
from client.messenger.ledger import DeliveryLedger
from client.messenger.legacy import move_settings_rows
from client.messenger.records import ContactRecord, GroupRecord
from client.messenger.timers import Timers, expires_at
from client.storage import Store
from mixcore.errors import DecodeError, MixnetError
from mixcore.payload import data_capacity
from mixcore.sphinx import SphinxGeometry
from mixcore.statistics import Tally

#: The transport's limit with the default geometry and client configuration (64 fragments of
#: 1660 bytes with suite v2); the daemon passes its own core's figure.
DEFAULT_MAX_MESSAGE_LEN = max_message_len(
    data_capacity(SphinxGeometry()), ClientConfig().max_message_fragments
)


class Messenger:
    """One user's messenger state in an unlocked :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        provider: bytes,
        mailbox: bytes,
        mailbox_key: bytes,
        clock: Callable[[], float],
        max_message_len: int = DEFAULT_MAX_MESSAGE_LEN,
    ) -> None:
        identity = store.load_identity()
        if identity is None:  # never make a new identity over an existing store
            raise MessengerError(
                f"the message store {store.path} has no identity (damaged, or not made by "
                "`mixnet client init`): restore it from a backup, or start over with "
                f"mixnet client init --dir {store.path.parent} --force (this replaces it)"
            )
        if identity.stamp_unknown_times(clock()):
            store.save_identity(identity)
        move_settings_rows(store)  # a store of an earlier version
        self.store = store
        self._address = (provider, mailbox, mailbox_key)
        self.ctx = Context(store, clock, identity,
                           ContactCard.create(identity, provider, mailbox, mailbox_key),
                           max_message_len)
        self.ledger = DeliveryLedger(store)
        self._conversations = Conversations(self.ctx, self.ledger)
        self._contacts = Contacts(self.ctx, self._conversations)
        self._courier = Courier(self.ctx, self._contacts)
        self._groups = Groups(self.ctx, self._contacts, self._conversations, self._courier)
        self._timers = Timers(self.ctx, self._contacts, self._conversations, self._courier,
                              self._every_conversation)

    @property
    def card(self) -> ContactCard:
        return self.ctx.card

    @property
    def identity(self) -> UserIdentity:
        return self.ctx.identity

    @property
    def clock(self) -> Callable[[], float]:
        return self.ctx.clock

    @property
    def counts(self) -> Tally[MessengerStatistics]:
        return self.ctx.counts

    @property
    def max_message_len(self) -> int:
        return self.ctx.max_message_len

    # -- contacts ------------------------------------------------------------------------------

    def contact(self, name: str) -> ContactRecord:
        return self._contacts.named(name)

    def contact_info(self, c: ContactRecord) -> dict[str, Any]:
        return views.contact(self._contacts, self._conversations, c)

    def contacts(self) -> list[dict[str, Any]]:
        return views.contact_list(self._contacts, self._conversations)

    def add_contact(self, card_text: str, name: str | None = None) -> dict[str, Any]:
        """Add a contact from a card string (a card with other keys under a known name is a
        key change: see :meth:`client.messenger.contacts.Contacts.add`)."""
        return self.contact_info(self._contacts.add(card_text, name))

    def rename_contact(self, name: str, new_name: str) -> dict[str, Any]:
        return self.contact_info(self._contacts.rename(name, new_name))

    def remove_contact(self, name: str) -> dict[str, Any]:
        """Forget a contact: card, session, verification and conversation. One who is still
        in a group with us stays known as a group member only (the group needs the card)."""
        c = self._contacts.named(name)
        in_group = self._groups.shares(c.cid)
        self._contacts.remove(c, keep_as_member=in_group)
        return {"name": name, "removed": True, "kept_as_group_member": in_group}

    def block_contact(self, name: str, *, undo: bool = False) -> dict[str, Any]:
        return self.contact_info(self._contacts.block(name, undo=undo))

    def safety_number(self, name: str) -> SafetyNumber:
        """The number to compare: during a key change, the one made with the new keys."""
        return self._contacts.safety_number(self._contacts.named(name))

    def verify(self, name: str, *, confirm: bool = False) -> dict[str, Any]:
        """The safety number; with ``confirm`` (the user compared it) mark verified. During a
        key change the number shown is made with the new keys, and confirming it pins them."""
        c = self._contacts.named(name)
        number = self._contacts.safety_number(c)
        if confirm:
            with self.store.transaction():
                if self._contacts.verify(c):
                    self._adopt_new_keys(c)
        return views.verification(name, number, self._contacts.verification(c))

    def acknowledge_key_change(self, name: str) -> dict[str, Any]:
        """Accept a changed key without comparing it: only for a contact that was never
        verified (a verified one needs the new number compared: :meth:`verify`)."""
        c = self._contacts.named(name)
        with self.store.transaction():
            self._contacts.acknowledge(c)
            self._adopt_new_keys(c)
        return self.contact_info(c)

    def _adopt_new_keys(self, c: ContactRecord) -> None:
        """A key change accepted: the new card replaces the old, and a contact that already
        held the new identity (a message request, a group member) is merged into ``c``."""
        if not self._contacts.adopt_unconfirmed(c):
            return
        dup = self._contacts.twin(c)
        if dup is not None:
            self._groups.replace_member(dup.cid, c.cid)
            self._contacts.merge(dup, into=c)
        self._conversations.event(of_contact(c.cid), f"new keys of {c.name} accepted")

    # -- sending -------------------------------------------------------------------------------

    def send_text(self, name: str, body: str) -> list[Envelope]:
        c = self._contacts.named(name)
        message = inner.text(body, c.timer)
        with self.store.transaction():
            env = self._courier.seal(c, message)
            self._conversations.add_outgoing(of_contact(c.cid), message, [c.cid])
        return [env]

    def send_file(self, name: str, file_name: str, data: bytes) -> list[Envelope]:
        c = self._contacts.named(name)
        message = attachments.message(file_name, data, c.timer,
                                      max_message_len=self.max_message_len)
        with self.store.transaction():
            env = self._courier.seal(c, message)
            self._conversations.add_outgoing(of_contact(c.cid), message, [c.cid])
        return [env]

    def retry(self, name: str) -> list[Envelope]:
        """Send again, to each recipient for whom it failed, every failed outgoing message of
        a conversation: the same message (same uid, so a recipient that got the first copy
        after all keeps one and answers with its receipt), encrypted afresh."""
        _, conv = self._conversation_id(name)
        envelopes: list[Envelope] = []
        with self.store.transaction():
            for _, r in self._conversations.live(conv):
                failed = self.ledger.failed_recipients(r.uid) if r.direction == "out" else []
                if not failed:
                    continue
                message = rebuilt(r, conv)
                for cid in failed:
                    c = self._contacts.by_cid(cid)
                    if c is None:
                        continue
                    self.ledger.requeue(r.uid, cid)
                    try:
                        envelopes.append(self._courier.seal(c, message))
                    except MessengerError as exc:
                        self.ledger.refused(r.uid, cid, f"not sent again: {exc}")
        return envelopes

    # -- timers --------------------------------------------------------------------------------

    def propose_timer(self, name: str, seconds: int) -> list[Envelope]:
        """Propose a disappearing-message timer (0 turns it off); it applies when accepted."""
        return self._timers.propose(name, seconds)

    def accept_timer(self, name: str) -> list[Envelope]:
        return self._timers.accept(name)

    def expire(self) -> int:
        """Delete every message whose timer ran out; returns how many."""
        return self._timers.expire()

    # -- groups --------------------------------------------------------------------------------

    def group(self, name: str) -> GroupRecord:
        return self._groups.named(name)

    def has_group(self, name: str) -> bool:
        return any(g.name == name for g in self._groups.all())

    def create_group(self, name: str, members: list[str]) -> list[Envelope]:
        return self._groups.create(name, members)

    def group_add(self, group: str, member: str) -> list[Envelope]:
        return self._groups.add(group, member)

    def group_remove(self, group: str, member: str) -> list[Envelope]:
        """Remove a member; from now on nothing of the group is encrypted for it."""
        return self._groups.remove(group, member)

    def send_group(self, group: str, body: str) -> list[Envelope]:
        return self._groups.send_text(group, body)

    def groups(self) -> list[dict[str, Any]]:
        return views.group_list(self._contacts, self._conversations, self._groups.all())

    # -- the transport's reports (the ledger's) ------------------------------------------------

    def bind(self, envelope: Envelope, transport_id: bytes) -> None:
        """The transport carries ``envelope`` as ``transport_id``."""
        self.ledger.bind(envelope.uid, envelope.cid, transport_id)

    def tracks(self, transport_id: bytes) -> bool:
        return self.ledger.tracks(transport_id)

    def on_transport_progress(self, transport_id: bytes, sent: int, acked: int, total: int) -> None:
        self.ledger.on_progress(transport_id, sent, acked, total)

    def on_transport_delivered(self, transport_id: bytes) -> None:
        self.ledger.on_at_provider(transport_id)

    def mark_failed(self, envelope: Envelope, reason: str) -> None:
        """The transport refused the envelope outright (no route, queue full)."""
        self.ledger.refused(envelope.uid, envelope.cid, reason)

    def on_transport_failed(self, transport_id: bytes, reason: str) -> None:
        self.ledger.on_failed(transport_id, reason)

    def take_withdrawn(self) -> list[bytes]:
        """Transport ids of expired messages since the last call: the shell must cancel them
        in the transport, which may still hold them queued in memory."""
        return self.ledger.take_withdrawn()

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Envelope] | None:
        """Decrypt and store one transport payload; returns the receipts to send, or None if
        the payload is not a messenger message for us (raw testnet traffic, garbage, replays:
        counted by reason, never raised)."""
        try:
            with self.store.transaction():
                c, message = self._courier.open(data)
                return self._dispatch(c, message)
        except ReplayError:
            self.counts["replayed"] += 1
        except MessageError:
            self.counts["undecryptable"] += 1
        except DecodeError:
            self.counts["malformed"] += 1
        except MessengerError:
            self.counts["rejected"] += 1
        return None

    def _dispatch(self, c: ContactRecord, m: inner.Inner) -> list[Envelope]:
        """Route a decrypted message by its type; returns the receipt to send, if any."""
        if c.blocked:
            self.counts["blocked"] += 1  # the session moved on; nothing is kept or answered
            return []
        conv: str | None
        match m:
            case inner.Receipt(uids=uids):
                for uid in uids:
                    self.ledger.receipt(uid, c.cid)
                return []
            case inner.Timer():
                self._timers.on_message(c, m)
                return []
            case inner.GroupUpdate():
                self._groups.on_update(c, m)
                return []
            case inner.Text() | inner.File():
                conv = of_contact(c.cid)
            case inner.GroupText():
                conv = self._groups.conversation_for(c, m)
                if conv is None:
                    return []
            case _:
                assert_never(m)
        if self._conversations.holds(conv, m.uid):
            # a copy sent again (mixnet retry) after the first arrived: keep one, answer again
            self.counts["duplicate"] += 1
        else:
            now = self.clock()
            self._conversations.add(
                conv, record_of(m, "in", c.cid, now, expires_at(now, m.ttl, c.timer)))
        return self._courier.receipt(c, m.uid)

    # -- reading -------------------------------------------------------------------------------

    def _conversation_id(self, name: str) -> tuple[str, str]:
        """``("contact"|"group", conversation id)`` for a contact name or ``#group``."""
        if name.startswith("#"):
            return "group", of_group(self._groups.named(name[1:]).gid)
        try:
            return "contact", of_contact(self._contacts.named(name).cid)
        except UnknownContact:
            try:
                return "group", of_group(self._groups.named(name).gid)
            except UnknownGroup:
                raise UnknownContact(name) from None

    def _every_conversation(self) -> list[str]:
        return ([of_contact(c.cid) for c in self._contacts.all()]
                + [of_group(g.gid) for g in self._groups.all()])

    def conversation(self, name: str, *, mark_read: bool = True,
                     with_data: bool = False) -> dict[str, Any]:
        kind, conv = self._conversation_id(name)
        senders = {c.cid: c.name for c in self._contacts.all()}
        out = views.messages(self._conversations, self.ledger, conv, senders,
                             mark_read=mark_read, with_data=with_data)
        info: dict[str, Any] = {"conversation": name, "type": kind, "messages": out}
        if kind == "contact":
            info["contact"] = self.contact_info(self._contacts.named(name))
        return info

    def inbox(self) -> list[dict[str, Any]]:
        """Conversations with unread messages."""
        return views.inbox(self._contacts, self._conversations, self._groups.all())

    # -- upkeep --------------------------------------------------------------------------------

    def upkeep(self) -> int:
        """The clock-driven chores (the daemon calls this every second): expire disappearing
        messages, rotate the signed prekey when due and erase old prekeys after their grace
        period (with the first-message records that only they could open). Returns the number
        of messages expired."""
        expired = self.expire()
        prekeys.upkeep(self.ctx, self._address)
        return expired

    def statistics(self) -> MessengerStatistics:
        return MessengerStatistics(**self.counts.counts())


__all__ = ["DEFAULT_MAX_MESSAGE_LEN", "MAX_NAME_LEN", "Envelope", "Messenger", "MixnetError",
           "encrypted_size"]
