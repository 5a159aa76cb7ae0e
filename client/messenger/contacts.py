"""Contacts: who the user knows, by identity key, and the key changes the user accepts.

Tables ``contacts`` (contact id -> :class:`ContactRecord`), ``verification`` (contact id ->
the verification state), ``unconfirmed_cards`` (contact id -> a card with other keys waiting
for its safety number to be compared) and the contact's ``sessions`` row when it goes.

**A contact is its identity key, never its address**: a card's provider and mailbox prove
nothing, so a stranger claiming them is a stranger (a message request whose thread says whose
address it claims), and a key change happens only by the user's own act (adding a card with
other keys under a contact's name). See ``docs/messenger.md`` §5.
"""

from __future__ import annotations

import os

from client.e2e.cards import ContactCard
from client.e2e.safety import ContactVerification, SafetyNumber, VerificationState
from client.messenger.context import Context
from client.messenger.conversations import Conversations, of_contact
from client.messenger.errors import MessengerError, UnknownContact
from client.messenger.records import CONTACTS, UNCONFIRMED_CARDS, ContactRecord

MAX_NAME_LEN = 64


def check_name(name: str) -> str:
    """A contact's or group's name: 1 to 64 printable characters (spaces allowed)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LEN or any(c.isspace() and c != " " for c in name):
        raise MessengerError(f"a name is 1 to {MAX_NAME_LEN} printable characters")
    return name


class Contacts:
    def __init__(self, ctx: Context, conversations: Conversations) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.conversations = conversations

    # -- looking up ----------------------------------------------------------------------------

    def all(self) -> list[ContactRecord]:
        return [ContactRecord.decode(v) for _, v in self.store.items(CONTACTS)]

    def save(self, c: ContactRecord) -> None:
        self.store.put(CONTACTS, c.cid, c.encode())

    def named(self, name: str) -> ContactRecord:
        for c in self.all():
            if c.name == name:
                return c
        raise UnknownContact(name)

    def by_cid(self, cid: str) -> ContactRecord | None:
        data = self.store.get(CONTACTS, cid)
        return None if data is None else ContactRecord.decode(data)

    def by_identity(self, identity_key: bytes) -> ContactRecord | None:
        for c in self.all():
            if ContactCard.from_bytes(c.card).identity_key == identity_key:
                return c
        return None

    def names(self, cids: list[str]) -> list[str]:
        return [c.name for cid in cids if (c := self.by_cid(cid)) is not None]

    def verification(self, c: ContactRecord) -> ContactVerification:
        v = self.store.load_verification(c.cid)
        if v is None:
            v = ContactVerification.first_seen(ContactCard.from_bytes(c.card))
        return v

    def unique_name(self, wanted: str) -> str:
        names = {c.name for c in self.all()}
        name, n = wanted, 2
        while name in names:
            name, n = f"{wanted}-{n}", n + 1
        return name

    # -- the user's acts -----------------------------------------------------------------------

    def add(self, card_text: str, name: str | None = None) -> ContactRecord:
        """Add (or update) a contact from a card string. A known identity that the user never
        named (a message request, a group member) takes the name; one the user named keeps it
        (renaming is :meth:`rename`, never a side effect). A card with other keys under the
        name of an existing contact is a key change: the contact's old keys stay pinned and in
        use, sending to it is blocked, and the new card waits until its safety number is
        verified (or, for a contact that was never verified, acknowledged)."""
        card = ContactCard.from_text(card_text)
        card.verify()
        if card.identity_key == self.ctx.card.identity_key:
            raise MessengerError("that is your own card")
        name = check_name(name) if name else None
        known = self.by_identity(card.identity_key)
        target = next((c for c in self.all() if c.name == name), None) if name else None
        if known is not None and (target is None or target.cid == known.cid):
            if name and name != known.name:
                if not (known.request or known.hidden):
                    raise MessengerError(
                        f"that card is already your contact {known.name!r}; to rename it: "
                        f"mixnet contact rename {known.name} {name}"
                    )
                known.name = name
            known.card, known.request, known.hidden = card.to_bytes(), False, False
            self.save(known)
            return known
        if target is not None:  # same name, other keys: a key change
            v = self.verification(target)
            with self.store.transaction():
                if v.observe(card):
                    self.conversations.event(of_contact(target.cid),
                                             _key_change_text(target.name, v))
                self.store.save_verification(target.cid, v)
                self.store.put(UNCONFIRMED_CARDS, target.cid, card.to_bytes())
            return target
        name = name or f"contact-{card.identity_key[:4].hex()}"
        c = ContactRecord(os.urandom(8).hex(), name, card.to_bytes(), self.ctx.clock())
        with self.store.transaction():
            self.save(c)
            self.store.save_verification(c.cid, ContactVerification.first_seen(card))
        return c

    def rename(self, name: str, new_name: str) -> ContactRecord:
        c = self.named(name)
        new_name = check_name(new_name)
        if new_name != c.name:
            if any(other.name == new_name for other in self.all()):
                raise MessengerError(f"there is already a contact named {new_name!r}")
            c.name = new_name
            self.save(c)
        return c

    def remove(self, c: ContactRecord, *, keep_as_member: bool) -> None:
        """Forget a contact: card, session, verification and conversation; one still in a
        group with us (``keep_as_member``) stays known as a group member only."""
        with self.store.transaction():
            self.conversations.forget(of_contact(c.cid))
            self.store.delete(UNCONFIRMED_CARDS, c.cid)
            if keep_as_member:
                c.hidden, c.request, c.timer = True, False, 0
                key = ContactCard.from_bytes(c.card).identity_key
                c.name = self.unique_name(f"member-{key[:4].hex()}")
                self.save(c)
            else:
                for table in (CONTACTS, "sessions", "verification"):
                    self.store.delete(table, c.cid)

    def block(self, name: str, *, undo: bool = False) -> ContactRecord:
        c = self.named(name)
        c.blocked = not undo
        self.save(c)
        return c

    def safety_number(self, c: ContactRecord) -> SafetyNumber:
        """The number to compare: during a key change, the one made with the new keys."""
        return SafetyNumber.of(self.ctx.card, self.verification(c).shown_keys)

    def verify(self, c: ContactRecord) -> bool:
        """The user compared the safety number: mark verified (during a key change that pins
        the new keys). True if it was a key change (the caller adopts the new card)."""
        v = self.verification(c)
        if v.state is VerificationState.VERIFIED:
            return False
        changed = v.state is VerificationState.KEY_CHANGED
        v.verify(self.ctx.card, SafetyNumber.of(self.ctx.card, v.shown_keys))
        self.store.save_verification(c.cid, v)
        return changed

    def acknowledge(self, c: ContactRecord) -> None:
        """Accept a changed key without comparing it: only for a contact never verified."""
        v = self.verification(c)
        name = c.name
        if v.state is not VerificationState.KEY_CHANGED:
            raise MessengerError(f"{name}'s key has not changed; nothing to acknowledge")
        if v.was_verified:
            raise MessengerError(
                f"{name} was verified: a new key for a verified contact is accepted only after "
                f"you compare the new safety number in person (mixnet contact verify {name}, "
                f"then mixnet contact verify {name} --confirm)"
            )
        v.acknowledge_key_change()
        self.store.save_verification(c.cid, v)

    def adopt_unconfirmed(self, c: ContactRecord) -> bool:
        """The user accepted a key change: the waiting card (if any) replaces the old one and
        the old keys' session is dropped. False if no card was waiting."""
        data = self.store.get(UNCONFIRMED_CARDS, c.cid)
        if data is None:
            return False
        c.card, c.request, c.hidden = ContactCard.from_bytes(data).to_bytes(), False, False
        self.save(c)
        self.store.delete("sessions", c.cid)
        self.store.delete(UNCONFIRMED_CARDS, c.cid)
        return True

    def twin(self, c: ContactRecord) -> ContactRecord | None:
        """Another contact with ``c``'s identity key (a message request or group member that
        turned out to be ``c`` once its new keys were accepted), to merge into ``c``."""
        key = ContactCard.from_bytes(c.card).identity_key
        return next((d for d in self.all() if d.cid != c.cid
                     and ContactCard.from_bytes(d.card).identity_key == key), None)

    def merge(self, dup: ContactRecord, *, into: ContactRecord) -> None:
        """``dup`` turned out to be ``into`` (the same keys): its session and messages move
        over and it goes (its group memberships are the groups' to move)."""
        session = self.store.load_session(dup.cid)
        if session is not None:
            self.store.save_session(into.cid, session)
        self.conversations.move(of_contact(dup.cid), of_contact(into.cid), sender=dup.cid,
                                new_sender=into.cid)
        for table in (CONTACTS, "sessions", "verification", UNCONFIRMED_CARDS):
            self.store.delete(table, dup.cid)
        self.conversations.event(of_contact(into.cid), f"the conversation with {dup.name} "
                                 "(the same keys) is now part of this one")

    # -- contacts that others introduce --------------------------------------------------------

    def for_new_session(self, peer: ContactCard) -> ContactRecord:
        """The contact a first message from a new session belongs to: the contact with that
        identity key, else a new message request. Never a contact found by address: a card's
        provider and mailbox prove nothing, so a stranger claiming them is a stranger (its
        thread says whose address it claims)."""
        known = self.by_identity(peer.identity_key)
        if known is not None:
            known.card = peer.to_bytes()
            self.save(known)
            return known
        name = self.unique_name(f"unknown-{peer.identity_key[:4].hex()}")
        c = ContactRecord(os.urandom(8).hex(), name, peer.to_bytes(), self.ctx.clock(),
                          request=True)
        claimed = [other.name for other in self.all()
                   if _address(ContactCard.from_bytes(other.card)) == _address(peer)]
        self.save(c)
        self.store.save_verification(c.cid, ContactVerification.first_seen(peer))
        conv = of_contact(c.cid)
        self.conversations.event(conv, "message request: someone not in your contacts wrote")
        for other in claimed:
            self.conversations.event(
                conv,
                f"warning: this card claims the same address as your contact {other}, with "
                f"other keys. It is not {other}: {other} is unchanged. If {other} has a new "
                f"device, compare safety numbers with {other} in person and add the new card "
                f"as {other} (mixnet contact add CARD --name {other})",
            )
        return c

    def member(self, hint: str, card: ContactCard) -> ContactRecord:
        """The contact behind a group member's card: the known one with that identity, else
        a new contact known only as a group member (named by the creator's hint)."""
        c = self.by_identity(card.identity_key)
        if c is None:
            c = ContactRecord(
                os.urandom(8).hex(),
                self.unique_name(hint or f"member-{card.identity_key[:4].hex()}"),
                card.to_bytes(), self.ctx.clock(), hidden=True,
            )
            self.save(c)
            self.store.save_verification(c.cid, ContactVerification.first_seen(card))
        return c


def _address(card: ContactCard) -> tuple[bytes, bytes]:
    """Where a card says to deliver (the sealing key is not part of "where")."""
    return card.provider, card.mailbox


def _key_change_text(name: str, v: ContactVerification) -> str:
    if v.was_verified:
        return (
            f"safety number changed: a card with other keys was added for {name}. {name}'s "
            "verified keys stay in use and sending is blocked until you compare the new safety "
            f"number in person: mixnet contact verify {name}, then --confirm"
        )
    return (
        f"safety number changed: a card with other keys was added for {name}. Sending is "
        f"blocked until you compare it (mixnet contact verify {name}, then --confirm) or "
        f"accept it unverified (mixnet contact verify {name} --acknowledge)"
    )
