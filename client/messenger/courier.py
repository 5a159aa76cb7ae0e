"""The courier: an inner message in, an :class:`Envelope` for the transport out, and back.

The only room that touches the end-to-end sessions: it checks that a message may go (the
recipient's decoder would take it, the contact is not blocked, its safety number has not
changed, it fits the transport), encrypts it in the contact's session, and on the way in opens
a payload with every session (a first message from a new one is accepted once only, table
``replay``) and finds the contact it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.e2e.cards import ContactCard
from client.e2e.errors import KeyChangedError
from client.e2e.ratchet import OVERHEAD
from client.e2e.session import INIT_PREFIX_LEN, PAD_BUCKET, Session, open_message
from client.messenger import inner
from client.messenger.contacts import Contacts
from client.messenger.context import Context
from client.messenger.errors import MessageTooLong, MessengerError
from client.messenger.records import REPLAY, ContactRecord
from mixcore.encoding import pack


@dataclass(frozen=True, slots=True)
class Envelope:
    """One ciphertext for the transport, and which message and recipient it carries."""

    provider: bytes
    mailbox: bytes
    mailbox_key: bytes
    data: bytes
    uid: bytes
    cid: str


def encrypted_size(plain_len: int, confirmed: bool) -> int:
    """Bytes on the transport for an inner message of ``plain_len`` bytes (see docs/e2e.md)."""
    padded = (plain_len // PAD_BUCKET + 1) * PAD_BUCKET
    return padded + OVERHEAD + (0 if confirmed else INIT_PREFIX_LEN)


class Courier:
    def __init__(self, ctx: Context, contacts: Contacts) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.contacts = contacts

    def seal(self, c: ContactRecord, message: inner.Inner) -> Envelope:
        """Encrypt ``message`` for ``c`` (the session moves on), or raise why it may not go:
        :class:`MessengerError` with what to do, :class:`MessageTooLong`, or
        :class:`~client.messenger.errors.RecipientWouldRefuse`."""
        inner.check_acceptable(message)
        if c.blocked:
            raise MessengerError(
                f"{c.name} is blocked; unblock with: mixnet contact block {c.name} --undo"
            )
        v = self.contacts.verification(c)
        try:
            v.check_send()
        except KeyChangedError:
            how = "confirm it" if v.was_verified else "confirm or acknowledge it"
            raise MessengerError(
                f"{c.name}'s safety number changed: sending is blocked. Compare it "
                f"(mixnet contact verify {c.name}) then {how}"
            ) from None
        peer = ContactCard.from_bytes(c.card)
        session = self.store.load_session(c.cid)
        if session is None:
            session = Session.initiate(self.ctx.identity, self.ctx.card, peer)
        plain = message.encode()
        size = encrypted_size(len(plain), session.confirmed)
        if size > self.ctx.max_message_len:
            raise MessageTooLong(size, self.ctx.max_message_len)
        data = session.encrypt(plain, verification=v)
        self.store.save_session(c.cid, session)
        return Envelope(peer.provider, peer.mailbox, peer.mailbox_key, data, message.uid, c.cid)

    def receipt(self, c: ContactRecord, uid: bytes) -> list[Envelope]:
        """The end-to-end receipt for ``uid``; none while ``c``'s key change is unaccepted."""
        try:
            return [self.seal(c, inner.receipt([uid]))]
        except MessengerError:
            self.ctx.counts["receipts_blocked"] += 1
            return []

    def open(self, data: bytes) -> tuple[ContactRecord, inner.Inner]:
        """Decrypt one payload (inside the caller's transaction: the session's new state is
        kept only with what the message did); raises the e2e layer's errors, ``DecodeError``
        or :class:`MessengerError` for anything that is not a message for us."""
        got = open_message(self.ctx.identity, self.store.sessions(), data,
                           seen=self._seen_first_message)
        message = inner.decode(got.plaintext)
        if got.contact is None:
            c = self.contacts.for_new_session(got.peer)
        else:
            found = self.contacts.by_cid(got.contact)
            if found is None:
                raise MessengerError("a session without its contact")
            c = found
        self.store.save_session(c.cid, got.session)
        if got.new_branch is not None:  # this first message is accepted once only
            ephemeral, prekey_id = got.new_branch
            self.store.put(REPLAY, ephemeral.hex(), pack(prekey_id))
        self.ctx.counts["received"] += 1
        return c, message

    def _seen_first_message(self, ephemeral: bytes) -> bool:
        return self.store.get(REPLAY, ephemeral.hex()) is not None
