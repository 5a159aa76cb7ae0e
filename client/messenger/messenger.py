"""The messenger: contacts, conversations, groups, timers and delivery states over e2e sessions.

Sans-IO apart from the encrypted store. Sending returns :class:`Envelope` s (ciphertext for a
provider and mailbox) that the daemon hands to the transport, then reports back with
:meth:`Messenger.bind`, :meth:`on_transport_progress`, :meth:`on_transport_delivered` and
:meth:`on_transport_failed`. Receiving takes the reassembled transport payload and returns the
envelopes to send in answer (end-to-end receipts). Time comes from the injected ``clock``.

Honesty of states: "at provider" is the transport's SURB-ACK (stored in the recipient's
mailbox); "delivered" is only ever set by the recipient's end-to-end receipt.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from client.config import ClientConfig
from client.e2e.cards import ContactCard
from client.e2e.errors import KeyChangedError, MessageError, ReplayError
from client.e2e.identity import MAX_PREKEYS
from client.e2e.ratchet import OVERHEAD
from client.e2e.safety import ContactVerification, SafetyNumber, VerificationState
from client.e2e.session import INIT_PREFIX_LEN, PAD_BUCKET, Session, open_message
from client.fragments import max_message_len
from client.messenger import inner
from client.messenger.errors import (
    MessageTooLong,
    MessengerError,
    RecipientWouldRefuse,
    UnknownContact,
    UnknownGroup,
)
from client.messenger.ledger import DeliveryLedger
from client.messenger.legacy import move_settings_rows
from client.messenger.records import (
    GROUPS,
    READ_MARKS,
    UNCONFIRMED_CARDS,
    ContactRecord,
    GroupRecord,
    MessageRecord,
)
from client.storage import Store
from mixcore.encoding import pack, unpack_canonical
from mixcore.errors import DecodeError, MixnetError
from mixcore.payload import data_capacity
from mixcore.sphinx import SphinxGeometry

#: The transport's limit with the default geometry and client configuration (64 fragments of
#: 1660 bytes with suite v2); the daemon passes its own core's figure.
DEFAULT_MAX_MESSAGE_LEN = max_message_len(
    data_capacity(SphinxGeometry()), ClientConfig().max_message_fragments
)
MAX_NAME_LEN = 64


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


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LEN or any(c.isspace() and c != " " for c in name):
        raise MessengerError(f"a name is 1 to {MAX_NAME_LEN} printable characters")
    return name


class Messenger:
    """One user's messenger state in an unlocked :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        provider: bytes,
        mailbox: bytes,
        mailbox_key: bytes,
        clock: Callable[[], float] = time.time,
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
        self.ledger = DeliveryLedger(store)
        self.identity = identity
        self.clock = clock
        self.max_message_len = max_message_len
        self._address = (provider, mailbox, mailbox_key)
        self.card = ContactCard.create(identity, provider, mailbox, mailbox_key)
        self.counts: Counter[str] = Counter()
        self._expiry_scan: tuple[int, float] | None = None  # (store revision, next expiry)

    # -- contacts ------------------------------------------------------------------------------

    def _contacts(self) -> list[ContactRecord]:
        return [ContactRecord.decode(v) for _, v in self.store.items("contacts")]

    def _save_contact(self, c: ContactRecord) -> None:
        self.store.put("contacts", c.cid, c.encode())

    def contact(self, name: str) -> ContactRecord:
        for c in self._contacts():
            if c.name == name:
                return c
        raise UnknownContact(name)

    def _by_cid(self, cid: str) -> ContactRecord | None:
        data = self.store.get("contacts", cid)
        return None if data is None else ContactRecord.decode(data)

    def _by_identity(self, identity_key: bytes) -> ContactRecord | None:
        for c in self._contacts():
            if ContactCard.from_bytes(c.card).identity_key == identity_key:
                return c
        return None

    def _verification(self, c: ContactRecord) -> ContactVerification:
        v = self.store.load_verification(c.cid)
        if v is None:
            v = ContactVerification.first_seen(ContactCard.from_bytes(c.card))
        return v

    def _unique_name(self, wanted: str) -> str:
        names = {c.name for c in self._contacts()}
        name, n = wanted, 2
        while name in names:
            name, n = f"{wanted}-{n}", n + 1
        return name

    def add_contact(self, card_text: str, name: str | None = None) -> dict[str, Any]:
        """Add (or update) a contact from a card string. A known identity that the user never
        named (a message request, a group member) takes the name; one the user named keeps it
        (renaming is :meth:`rename_contact`, never a side effect). A card with other keys under
        the name of an existing contact is a key change: the contact's old keys stay pinned and
        in use, sending to it is blocked, and the new card waits until its safety number is
        verified (or, for a contact that was never verified, acknowledged)."""
        card = ContactCard.from_text(card_text)
        card.verify()
        if card.identity_key == self.card.identity_key:
            raise MessengerError("that is your own card")
        name = _check_name(name) if name else None
        known = self._by_identity(card.identity_key)
        target = next((c for c in self._contacts() if c.name == name), None) if name else None
        if known is not None and (target is None or target.cid == known.cid):
            if name and name != known.name:
                if not (known.request or known.hidden):
                    raise MessengerError(
                        f"that card is already your contact {known.name!r}; to rename it: "
                        f"mixnet contact rename {known.name} {name}"
                    )
                known.name = name
            known.card, known.request, known.hidden = card.to_bytes(), False, False
            self._save_contact(known)
            return self.contact_info(known)
        if target is not None:  # same name, other keys: a key change
            v = self._verification(target)
            with self.store.transaction():
                if v.observe(card):
                    self._event(f"c:{target.cid}", _key_change_text(target.name, v))
                self.store.save_verification(target.cid, v)
                self.store.put(UNCONFIRMED_CARDS, target.cid, card.to_bytes())
            return self.contact_info(target)
        name = name or f"contact-{card.identity_key[:4].hex()}"
        c = ContactRecord(os.urandom(8).hex(), name, card.to_bytes(), self.clock())
        with self.store.transaction():
            self._save_contact(c)
            self.store.save_verification(c.cid, ContactVerification.first_seen(card))
        return self.contact_info(c)

    def rename_contact(self, name: str, new_name: str) -> dict[str, Any]:
        c = self.contact(name)
        new_name = _check_name(new_name)
        if new_name != c.name:
            self._check_free(new_name)
            c.name = new_name
            self._save_contact(c)
        return self.contact_info(c)

    def remove_contact(self, name: str) -> dict[str, Any]:
        """Forget a contact: card, session, verification and conversation. One who is still
        in a group with us stays known as a group member only (the group needs the card)."""
        c = self.contact(name)
        in_group = any(c.cid in g.members or c.cid == g.admin for g in self._groups())
        with self.store.transaction():
            self.store.delete_conversation(f"c:{c.cid}")
            self.store.delete(UNCONFIRMED_CARDS, c.cid)
            self.store.delete(READ_MARKS, f"c:{c.cid}")
            if in_group:
                c.hidden, c.request, c.timer = True, False, 0
                key = ContactCard.from_bytes(c.card).identity_key
                c.name = self._unique_name(f"member-{key[:4].hex()}")
                self._save_contact(c)
            else:
                self.store.delete("contacts", c.cid)
                self.store.delete("sessions", c.cid)
                self.store.delete("verification", c.cid)
        return {"name": name, "removed": True, "kept_as_group_member": in_group}

    def block_contact(self, name: str, *, undo: bool = False) -> dict[str, Any]:
        c = self.contact(name)
        c.blocked = not undo
        self._save_contact(c)
        return self.contact_info(c)

    def _check_free(self, name: str) -> None:
        if any(c.name == name for c in self._contacts()):
            raise MessengerError(f"there is already a contact named {name!r}")

    def contact_info(self, c: ContactRecord) -> dict[str, Any]:
        v = self._verification(c)
        return {
            "name": c.name,
            "verification": v.state.value,
            "can_acknowledge": v.state is VerificationState.KEY_CHANGED and not v.was_verified,
            "timer": c.timer,
            "timer_proposed_by_me": c.my_proposal if c.my_proposal >= 0 else None,
            "timer_proposed_by_them": c.their_proposal if c.their_proposal >= 0 else None,
            "request": c.request,
            "group_member_only": c.hidden,
            "blocked": c.blocked,
            "unread": self._unread(f"c:{c.cid}"),
        }

    def contacts(self) -> list[dict[str, Any]]:
        return sorted((self.contact_info(c) for c in self._contacts()), key=lambda d: d["name"])

    def safety_number(self, name: str) -> SafetyNumber:
        """The number to compare: during a key change, the one made with the new keys."""
        c = self.contact(name)
        return SafetyNumber.of(self.card, self._verification(c).shown_keys)

    def verify(self, name: str, *, confirm: bool = False) -> dict[str, Any]:
        """The safety number; with ``confirm`` (the user compared it) mark verified. During a
        key change the number shown is made with the new keys, and confirming it pins them."""
        c = self.contact(name)
        v = self._verification(c)
        number = SafetyNumber.of(self.card, v.shown_keys)
        if confirm and v.state is not VerificationState.VERIFIED:
            changed = v.state is VerificationState.KEY_CHANGED
            v.verify(self.card, number)
            with self.store.transaction():
                self.store.save_verification(c.cid, v)
                if changed:
                    self._adopt_pending(c)
        return {"name": name, "safety_number": number.formatted(), "digits": number.digits,
                "verification": v.state.value, "qr": number.qr_text(),
                "can_acknowledge": v.state is VerificationState.KEY_CHANGED
                and not v.was_verified}

    def acknowledge_key_change(self, name: str) -> dict[str, Any]:
        """Accept a changed key without comparing it: only for a contact that was never
        verified (a verified one needs the new number compared: :meth:`verify`)."""
        c = self.contact(name)
        v = self._verification(c)
        if v.state is not VerificationState.KEY_CHANGED:
            raise MessengerError(f"{name}'s key has not changed; nothing to acknowledge")
        if v.was_verified:
            raise MessengerError(
                f"{name} was verified: a new key for a verified contact is accepted only after "
                f"you compare the new safety number in person (mixnet contact verify {name}, "
                f"then mixnet contact verify {name} --confirm)"
            )
        v.acknowledge_key_change()
        with self.store.transaction():
            self.store.save_verification(c.cid, v)
            self._adopt_pending(c)
        return self.contact_info(c)

    # -- sending -------------------------------------------------------------------------------

    def _encrypt(self, c: ContactRecord, message: inner.Inner) -> Envelope:
        inner.check_acceptable(message)
        if c.blocked:
            raise MessengerError(
                f"{c.name} is blocked; unblock with: mixnet contact block {c.name} --undo"
            )
        v = self._verification(c)
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
            session = Session.initiate(self.identity, self.card, peer)
        plain = message.encode()
        size = encrypted_size(len(plain), session.confirmed)
        if size > self.max_message_len:
            raise MessageTooLong(size, self.max_message_len)
        data = session.encrypt(plain, verification=v)
        self.store.save_session(c.cid, session)
        return Envelope(peer.provider, peer.mailbox, peer.mailbox_key, data, message.uid, c.cid)

    def _ttl(self, c: ContactRecord) -> int:
        return c.timer

    def _store_outgoing(
        self, conv: str, message: inner.Inner, recipients: list[str], *, kind: str, text: str,
        file: tuple[str, bytes, bytes] | None = None, failed: dict[str, str] | None = None,
    ) -> int:
        now = self.clock()
        record = MessageRecord(
            message.uid, "out", "", kind, text, now,
            now + message.ttl if message.ttl else 0.0,
            *(file or ("", b"", b"")),
        )
        self.ledger.open(message.uid, recipients, failed)
        return self.store.add_message(conv, record.encode())

    def send_text(self, name: str, body: str) -> list[Envelope]:
        c = self.contact(name)
        message = inner.text(body, self._ttl(c))
        with self.store.transaction():
            env = self._encrypt(c, message)
            self._store_outgoing(f"c:{c.cid}", message, [c.cid], kind="text", text=body)
        return [env]

    def send_file(self, name: str, file_name: str, data: bytes) -> list[Envelope]:
        c = self.contact(name)
        file_name = os.path.basename(file_name)[: inner.MAX_NAME] or "attachment"
        if len(data) > inner.MAX_FILE:
            raise MessageTooLong(len(data), self.max_message_len)
        message = inner.file(file_name, data, self._ttl(c))
        with self.store.transaction():
            env = self._encrypt(c, message)
            self._store_outgoing(
                f"c:{c.cid}", message, [c.cid], kind="file", text=file_name,
                file=(file_name, data, message.body[2]),
            )
        return [env]

    def retry(self, name: str) -> list[Envelope]:
        """Send again, to each recipient for whom it failed, every failed outgoing message of
        a conversation: the same message (same uid, so a recipient that got the first copy
        after all keeps one and answers with its receipt), encrypted afresh."""
        _, conv = self._conversation_id(name)
        envelopes: list[Envelope] = []
        with self.store.transaction():
            for _, r in self._live(conv):
                failed = self.ledger.failed_recipients(r.uid) if r.direction == "out" else []
                if not failed:
                    continue
                message = self._rebuilt(r, conv)
                for cid in failed:
                    c = self._by_cid(cid)
                    if c is None:
                        continue
                    self.ledger.requeue(r.uid, cid)
                    try:
                        envelopes.append(self._encrypt(c, message))
                    except MessengerError as exc:
                        self.ledger.refused(r.uid, cid, f"not sent again: {exc}")
        return envelopes

    def _rebuilt(self, r: MessageRecord, conv: str) -> inner.Inner:
        """The inner message an outgoing record was sent as (its uid, timer and body)."""
        ttl = round(r.expires_at - r.at) if r.expires_at else 0
        if conv.startswith("g:"):
            gid = bytes.fromhex(conv[2:])
            if r.kind == "file":
                body: tuple[Any, ...] = (gid, r.file_name, r.file_data, r.file_sha256)
                return inner.Inner("gfile", r.uid, ttl, body)
            return inner.Inner("gtext", r.uid, ttl, (gid, r.text))
        if r.kind == "file":
            return inner.Inner("file", r.uid, ttl, (r.file_name, r.file_data, r.file_sha256))
        return inner.Inner("text", r.uid, ttl, (r.text,))

    # -- timers --------------------------------------------------------------------------------

    def propose_timer(self, name: str, seconds: int) -> list[Envelope]:
        """Propose a disappearing-message timer (0 turns it off); it applies when accepted."""
        if not 0 <= seconds <= inner.MAX_TTL:
            raise MessengerError("the timer is 0 (off) to one year, in seconds")
        c = self.contact(name)
        with self.store.transaction():
            env = self._encrypt(c, inner.timer(seconds, False))
            c.my_proposal = seconds
            self._save_contact(c)
            self._event(f"c:{c.cid}", f"you proposed disappearing messages: {_span(seconds)}")
        return [env]

    def accept_timer(self, name: str) -> list[Envelope]:
        c = self.contact(name)
        if c.their_proposal < 0:
            raise MessengerError(f"{name} has not proposed a timer")
        seconds = c.their_proposal
        with self.store.transaction():
            env = self._encrypt(c, inner.timer(seconds, True))
            c.timer, c.their_proposal, c.my_proposal = seconds, -1, -1
            self._save_contact(c)
            self._event(f"c:{c.cid}", f"disappearing messages: {_span(seconds)}")
        return [env]

    # -- groups --------------------------------------------------------------------------------

    def _groups(self) -> list[GroupRecord]:
        return [GroupRecord.decode(v) for _, v in self.store.items(GROUPS)]

    def _save_group(self, g: GroupRecord) -> None:
        self.store.put(GROUPS, g.gid.hex(), g.encode())

    def group(self, name: str) -> GroupRecord:
        for g in self._groups():
            if g.name == name and not g.left:
                return g
        for g in self._groups():
            if g.name == name:
                return g
        raise UnknownGroup(name)

    def _group_by_id(self, gid: bytes) -> GroupRecord | None:
        data = self.store.get(GROUPS, gid.hex())
        return None if data is None else GroupRecord.decode(data)

    def _member_list(self, g: GroupRecord) -> list[list[Any]]:
        out: list[list[Any]] = [["", self.card.to_bytes()]]
        for cid in g.members:
            c = self._by_cid(cid)
            if c is not None:
                out.append([c.name, c.card])
        return out

    def _names(self, cids: list[str]) -> list[str]:
        return [c.name for cid in cids if (c := self._by_cid(cid)) is not None]

    def _fan_out(
        self, g: GroupRecord, message: inner.Inner, cids: list[str]
    ) -> tuple[list[Envelope], dict[str, str]]:
        inner.check_acceptable(message)  # for every member alike: refuse it before anything
        envelopes, failed = [], {}
        for cid in cids:
            c = self._by_cid(cid)
            if c is None:
                continue
            try:
                envelopes.append(self._encrypt(c, message))
            except (MessageTooLong, RecipientWouldRefuse):
                raise
            except MessengerError as exc:
                failed[cid] = str(exc)
        return envelopes, failed

    def create_group(self, name: str, members: list[str]) -> list[Envelope]:
        name = _check_name(name)
        if any(g.name == name and not g.left for g in self._groups()):
            raise MessengerError(f"there is already a group named {name!r}")
        cids = list(dict.fromkeys(self.contact(m).cid for m in members))
        g = GroupRecord(inner.new_uid(), name, "", cids)
        with self.store.transaction():
            self._save_group(g)
            envs, _ = self._fan_out(g, inner.group_update(g.gid, name, self._member_list(g)), cids)
            self._event(f"g:{g.gid.hex()}", f"you created the group with {', '.join(members)}")
        return envs

    def _admin_group(self, group: str) -> GroupRecord:
        g = self.group(group)
        if g.left:
            raise MessengerError(f"you are no longer a member of {group!r}")
        if g.admin:
            raise MessengerError("only the group's creator can change its members")
        return g

    def group_add(self, group: str, member: str) -> list[Envelope]:
        g = self._admin_group(group)
        c = self.contact(member)
        if c.cid in g.members:
            raise MessengerError(f"{member} is already in {group!r}")
        g.members.append(c.cid)
        with self.store.transaction():
            self._save_group(g)
            update = inner.group_update(g.gid, g.name, self._member_list(g))
            envs, _ = self._fan_out(g, update, g.members)
            self._event(f"g:{g.gid.hex()}", f"you added {member}")
        return envs

    def group_remove(self, group: str, member: str) -> list[Envelope]:
        """Remove a member: the others get the new list, the removed member gets it too (and
        sees itself missing); from now on nothing of the group is encrypted for it."""
        g = self._admin_group(group)
        c = self.contact(member)
        if c.cid not in g.members:
            raise MessengerError(f"{member} is not in {group!r}")
        g.members.remove(c.cid)
        with self.store.transaction():
            self._save_group(g)
            update = inner.group_update(g.gid, g.name, self._member_list(g))
            envs, _ = self._fan_out(g, update, [*g.members, c.cid])
            self._event(f"g:{g.gid.hex()}", f"you removed {member}")
        return envs

    def send_group(self, group: str, body: str) -> list[Envelope]:
        g = self.group(group)
        if g.left:
            raise MessengerError(f"you are no longer a member of {group!r}")
        if not g.members:
            raise MessengerError(f"{group!r} has no other members")
        message = inner.group_text(g.gid, body)
        with self.store.transaction():
            envs, failed = self._fan_out(g, message, g.members)
            self._store_outgoing(
                f"g:{g.gid.hex()}", message, g.members, kind="text", text=body, failed=failed
            )
        return envs

    def groups(self) -> list[dict[str, Any]]:
        out = []
        for g in self._groups():
            admin = self._by_cid(g.admin) if g.admin else None
            out.append({
                "name": g.name,
                "members": sorted(self._names(g.members)),
                "admin": "you" if not g.admin else (admin.name if admin else "?"),
                "left": g.left,
                "unread": self._unread(f"g:{g.gid.hex()}"),
            })
        return sorted(out, key=lambda d: d["name"])

    # -- transport events ----------------------------------------------------------------------

    def bind(self, envelope: Envelope, transport_id: bytes) -> None:
        """The transport carries ``envelope`` as ``transport_id`` (the ledger's to know)."""
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

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Envelope] | None:
        """Decrypt and store one transport payload; returns the receipts to send, or None if
        the payload is not a messenger message for us (raw testnet traffic, garbage, replays:
        counted by reason, never raised)."""
        try:
            return self._receive(data)
        except ReplayError:
            self.counts["replayed"] += 1
        except MessageError:
            self.counts["undecryptable"] += 1
        except DecodeError:
            self.counts["malformed"] += 1
        except MessengerError:
            self.counts["rejected"] += 1
        return None

    def _seen_first_message(self, ephemeral: bytes) -> bool:
        return self.store.get("replay", ephemeral.hex()) is not None

    def _receive(self, data: bytes) -> list[Envelope]:
        sessions = self.store.sessions()
        with self.store.transaction():
            got = open_message(self.identity, sessions, data, seen=self._seen_first_message)
            message = inner.decode(got.plaintext)
            if got.contact is None:
                c = self._contact_for_new_session(got.peer)
            else:
                found = self._by_cid(got.contact)
                if found is None:
                    raise MessengerError("a session without its contact")
                c = found
            self.store.save_session(c.cid, got.session)
            if got.new_branch is not None:  # this first message is accepted once only
                ephemeral, prekey_id = got.new_branch
                self.store.put("replay", ephemeral.hex(), pack(prekey_id))
            self.counts["received"] += 1
            return self._dispatch(c, message)

    def _contact_for_new_session(self, peer: ContactCard) -> ContactRecord:
        """The contact a first message from a new session belongs to: the contact with that
        identity key, else a new message request. Never a contact found by address: a card's
        provider and mailbox prove nothing, so a stranger claiming them is a stranger (its
        thread says whose address it claims)."""
        known = self._by_identity(peer.identity_key)
        if known is not None:
            known.card = peer.to_bytes()
            self._save_contact(known)
            return known
        name = self._unique_name(f"unknown-{peer.identity_key[:4].hex()}")
        c = ContactRecord(os.urandom(8).hex(), name, peer.to_bytes(), self.clock(), request=True)
        claimed = [other.name for other in self._contacts()
                   if _address(ContactCard.from_bytes(other.card)) == _address(peer)]
        self._save_contact(c)
        self.store.save_verification(c.cid, ContactVerification.first_seen(peer))
        self._event(f"c:{c.cid}", "message request: someone not in your contacts wrote")
        for other in claimed:
            self._event(
                f"c:{c.cid}",
                f"warning: this card claims the same address as your contact {other}, with "
                f"other keys. It is not {other}: {other} is unchanged. If {other} has a new "
                f"device, compare safety numbers with {other} in person and add the new card "
                f"as {other} (mixnet contact add CARD --name {other})",
            )
        return c

    def _adopt_pending(self, c: ContactRecord) -> None:
        """The user accepted a key change (verified, or acknowledged for a contact that was
        never verified): the new card replaces the old, the old keys' session is dropped, and
        a contact that already holds the new identity (a message request, a group member) is
        merged into this one."""
        data = self.store.get(UNCONFIRMED_CARDS, c.cid)
        if data is None:
            return
        card = ContactCard.from_bytes(data)
        c.card, c.request, c.hidden = card.to_bytes(), False, False
        self._save_contact(c)
        self.store.delete("sessions", c.cid)
        self.store.delete(UNCONFIRMED_CARDS, c.cid)
        dup = next((d for d in self._contacts() if d.cid != c.cid
                    and ContactCard.from_bytes(d.card).identity_key == card.identity_key), None)
        if dup is not None:
            self._merge(dup, into=c)
        self._event(f"c:{c.cid}", f"new keys of {c.name} accepted")

    def _merge(self, dup: ContactRecord, *, into: ContactRecord) -> None:
        session = self.store.load_session(dup.cid)
        if session is not None:
            self.store.save_session(into.cid, session)
        for seq, body in self.store.messages(f"c:{dup.cid}"):
            record = MessageRecord.decode(body)
            if record.sender == dup.cid:
                record.sender = into.cid
            self.store.add_message(f"c:{into.cid}", record.encode())
            self.store.delete_message(seq)
        for g in self._groups():
            if dup.cid in g.members or g.admin == dup.cid:
                g.members = list(dict.fromkeys(into.cid if m == dup.cid else m
                                               for m in g.members))
                g.admin = into.cid if g.admin == dup.cid else g.admin
                self._save_group(g)
        for table in ("contacts", "sessions", "verification"):
            self.store.delete(table, dup.cid)
        self.store.delete(READ_MARKS, f"c:{dup.cid}")
        self.store.delete(UNCONFIRMED_CARDS, dup.cid)
        self._event(f"c:{into.cid}", f"the conversation with {dup.name} (the same keys) "
                    "is now part of this one")

    def _dispatch(self, c: ContactRecord, m: inner.Inner) -> list[Envelope]:
        if c.blocked:
            self.counts["blocked"] += 1  # the session moved on; nothing is kept or answered
            return []
        now = self.clock()
        if m.kind == "receipt":
            for uid in m.body[0]:
                self.ledger.receipt(uid, c.cid)
            return []
        if m.kind == "timer":
            seconds, accept = m.body
            if accept:
                if c.my_proposal == seconds:
                    c.timer, c.my_proposal, c.their_proposal = seconds, -1, -1
                    self._event(f"c:{c.cid}", f"disappearing messages: {_span(seconds)}")
                else:
                    self.counts["stale_timer_accept"] += 1
            else:
                c.their_proposal = seconds
                self._event(
                    f"c:{c.cid}",
                    f"{c.name} proposes disappearing messages: {_span(seconds)} "
                    f"(accept: mixnet timer accept {c.name})",
                )
            self._save_contact(c)
            return []
        if m.kind == "gupdate":
            self._group_update(c, *m.body)
            return []
        ttl = min((t for t in (m.ttl, c.timer) if t), default=0)
        expires = now + ttl if ttl else 0.0
        if m.kind in ("text", "file"):
            conv = f"c:{c.cid}"
        else:
            g = self._group_by_id(m.body[0])
            if g is None or g.left or (c.cid not in g.members and c.cid != g.admin):
                self.counts["group_rejected"] += 1
                return []
            conv = f"g:{g.gid.hex()}"
        if any(r.uid == m.uid for _, r in self._live(conv)):
            # a copy sent again (mixnet retry) after the first arrived: keep one, answer again
            self.counts["duplicate"] += 1
        else:
            if m.kind in ("text", "gtext"):
                record = MessageRecord(m.uid, "in", c.cid, "text", m.body[-1], now, expires)
            else:
                name, blob, digest = m.body[-3:]
                record = MessageRecord(m.uid, "in", c.cid, "file", name, now, expires,
                                       name, blob, digest)
            self.store.add_message(conv, record.encode())
        try:
            return [self._encrypt(c, inner.receipt([m.uid]))]
        except MessengerError:  # key change unacknowledged: no receipt until then
            self.counts["receipts_blocked"] += 1
            return []

    def _group_update(self, sender: ContactRecord, gid: bytes, name: str, members: list[Any]
                      ) -> None:
        g = self._group_by_id(gid)
        if g is not None and g.admin != sender.cid:
            self.counts["group_rejected"] += 1  # only the creator changes membership
            return
        cards = []
        for _hint, card_bytes in members:
            card = ContactCard.from_bytes(card_bytes)
            card.verify()
            cards.append((_hint, card))
        mine = any(card.identity_key == self.card.identity_key for _, card in cards)
        if not any(card.identity_key == ContactCard.from_bytes(sender.card).identity_key
                   for _, card in cards):
            self.counts["group_rejected"] += 1
            return
        cids = []
        for hint, card in cards:
            if card.identity_key == self.card.identity_key:
                continue
            c = self._by_identity(card.identity_key)
            if c is None:
                c = ContactRecord(
                    os.urandom(8).hex(),
                    self._unique_name(hint or f"member-{card.identity_key[:4].hex()}"),
                    card.to_bytes(), self.clock(), hidden=True,
                )
                self._save_contact(c)
                self.store.save_verification(c.cid, ContactVerification.first_seen(card))
            if c.cid != sender.cid:
                cids.append(c.cid)
        conv = f"g:{gid.hex()}"
        if g is None:
            g = GroupRecord(gid, name, sender.cid, [sender.cid, *cids], left=not mine)
            self._event(conv, f"{sender.name} added you to the group {name!r}")
        else:
            before = set(self._names(g.members))
            g.members = [sender.cid, *cids] if mine else []
            g.name, g.left = name, not mine
            if mine:  # a removed member learns only that it was removed, not about the others
                after = set(self._names(g.members))
                for added in sorted(after - before):
                    self._event(conv, f"{sender.name} added {added}")
                for removed in sorted(before - after - {sender.name}):
                    self._event(conv, f"{sender.name} removed {removed}")
        if not mine:
            self._event(conv, f"{sender.name} removed you from the group")
        self._save_group(g)

    # -- reading -------------------------------------------------------------------------------

    def _event(self, conv: str, text: str) -> None:
        record = MessageRecord(inner.new_uid(), "event", "", "event", text, self.clock())
        self.store.add_message(conv, record.encode())

    def _conversation_id(self, name: str) -> tuple[str, str]:
        """``("contact"|"group", conversation id)`` for a contact name or ``#group``."""
        if name.startswith("#"):
            return "group", f"g:{self.group(name[1:]).gid.hex()}"
        try:
            return "contact", f"c:{self.contact(name).cid}"
        except UnknownContact:
            try:
                return "group", f"g:{self.group(name).gid.hex()}"
            except UnknownGroup:
                raise UnknownContact(name) from None

    def _live(self, conv: str) -> list[tuple[int, MessageRecord]]:
        now = self.clock()
        out = []
        for seq, body in self.store.messages(conv):
            record = MessageRecord.decode(body)
            if record.expires_at and record.expires_at <= now:
                self._delete(seq, record)
                continue
            out.append((seq, record))
        return out

    def _delete(self, seq: int, record: MessageRecord) -> None:
        """An expired message goes, and with it every trace the store holds: its delivery
        states and the transport's envelopes that still carry it."""
        with self.store.transaction():
            self.store.delete_message(seq)
            self.ledger.withdraw(record.uid)
        self.counts["expired"] += 1

    def _unread(self, conv: str) -> int:
        mark = self.store.get(READ_MARKS, conv)
        after = int(mark.decode()) if mark else 0
        return sum(
            1 for seq, r in self._live(conv) if seq > after and r.direction == "in"
        )

    def conversation(self, name: str, *, mark_read: bool = True,
                     with_data: bool = False) -> dict[str, Any]:
        kind, conv = self._conversation_id(name)
        rows = self._live(conv)
        senders = {c.cid: c.name for c in self._contacts()}
        out = []
        for seq, r in rows:
            item: dict[str, Any] = {
                "seq": seq, "id": r.uid.hex(), "direction": r.direction, "kind": r.kind,
                "from": "you" if r.direction == "out" else senders.get(r.sender, ""),
                "text": r.text, "at": r.at, "expires_at": r.expires_at or None,
            }
            if r.kind == "file":
                item["file"] = {"name": r.file_name, "size": len(r.file_data),
                                "sha256": r.file_sha256.hex()}
                if with_data:
                    item["file"]["data"] = r.file_data
            if r.direction == "out":
                item.update(self.ledger.summary(r.uid))
            out.append(item)
        if mark_read and rows:
            self.store.put(READ_MARKS, conv, str(rows[-1][0]).encode())
        info: dict[str, Any] = {"conversation": name, "type": kind, "messages": out}
        if kind == "contact":
            info["contact"] = self.contact_info(self.contact(name))
        return info

    def inbox(self) -> list[dict[str, Any]]:
        """Conversations with unread messages."""
        out = []
        for c in self._contacts():
            n = self._unread(f"c:{c.cid}")
            if n:
                out.append({"conversation": c.name, "type": "contact", "unread": n})
        for g in self._groups():
            n = self._unread(f"g:{g.gid.hex()}")
            if n:
                out.append({"conversation": g.name, "type": "group", "unread": n})
        return out

    def expire(self) -> int:
        """Delete every message whose timer ran out; returns how many. Skips the scan while
        nothing was written since the last one and no timer is due (the daemon asks every
        second)."""
        now = self.clock()
        if self._expiry_scan is not None:
            revision, due = self._expiry_scan
            if revision == self.store.revision and now < due:
                return 0
        before = self.counts["expired"]
        due = float("inf")
        convs = [f"c:{c.cid}" for c in self._contacts()]
        convs += [f"g:{g.gid.hex()}" for g in self._groups()]
        for conv in convs:
            for _, record in self._live(conv):
                if record.expires_at:
                    due = min(due, record.expires_at)
        self._expiry_scan = (self.store.revision, due)
        return self.counts["expired"] - before

    def take_withdrawn(self) -> list[bytes]:
        """Transport ids of expired messages since the last call: the shell must cancel them
        in the transport, which may still hold them queued in memory."""
        return self.ledger.take_withdrawn()

    def upkeep(self) -> int:
        """The clock-driven chores (the daemon calls this every second): expire disappearing
        messages, rotate the signed prekey when due and erase old prekeys after their grace
        period (with the first-message records that only they could open). Returns the number
        of messages expired."""
        expired = self.expire()
        now = self.clock()
        rotated = False
        if self.identity.rotation_due(now):
            self.identity.rotate_prekey(keep=MAX_PREKEYS, now=now)
            rotated = True
            self.counts["prekeys_rotated"] += 1
        erased = self.identity.erase_prekeys(now)
        if rotated or erased:
            with self.store.transaction():
                self.store.save_identity(self.identity)
                for ephemeral, value in self.store.items("replay"):
                    if unpack_canonical(value) in erased:
                        self.store.delete("replay", ephemeral)
            self.card = ContactCard.create(self.identity, *self._address)
            self.counts["prekeys_erased"] += len(erased)
        return expired

    def statistics(self) -> dict[str, int]:
        return dict(self.counts)


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


def _span(seconds: int) -> str:
    if seconds == 0:
        return "off"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


__all__ = ["Envelope", "Messenger", "MixnetError"]
