"""Conversations: the stored messages and events of each contact and group, the read marks,
and the translation between an inner message and its stored record.

A conversation id is ``c:<contact id>`` or ``g:<group id hex>`` (:func:`of_contact`,
:func:`of_group`). Reading never shows an expired message: :meth:`Conversations.live` deletes
it on the spot, with its delivery rows and envelopes (the ledger's :meth:`withdraw`), so an
expired message leaves no trace whether or not the timers' scan came first.
"""

from __future__ import annotations

from client.messenger import inner
from client.messenger.context import Context
from client.messenger.ledger import DeliveryLedger
from client.messenger.records import READ_MARKS, MessageRecord


def of_contact(cid: str) -> str:
    return f"c:{cid}"


def of_group(gid: bytes) -> str:
    return f"g:{gid.hex()}"


def record_of(message: inner.Content, direction: str, sender: str, at: float,
              expires_at: float) -> MessageRecord:
    """The stored record of a text or attachment (ours or received)."""
    match message:
        case inner.Text(text=text) | inner.GroupText(text=text):
            return MessageRecord(message.uid, direction, sender, "text", text, at, expires_at)
        case inner.File(name=name, data=data, sha256=digest):
            return MessageRecord(message.uid, direction, sender, "file", name, at, expires_at,
                                 name, data, digest)


def rebuilt(record: MessageRecord, conv: str) -> inner.Content:
    """The inner message an outgoing record was sent as (its uid, timer and body)."""
    ttl = round(record.expires_at - record.at) if record.expires_at else 0
    uid = record.uid
    if conv.startswith("g:"):
        gid = bytes.fromhex(conv[2:])
        return inner.GroupText(gid=gid, text=record.text, uid=uid, ttl=ttl)
    if record.kind == "file":
        return inner.File(name=record.file_name, data=record.file_data,
                          sha256=record.file_sha256, uid=uid, ttl=ttl)
    return inner.Text(text=record.text, uid=uid, ttl=ttl)


class Conversations:
    """The ``messages`` and ``read_marks`` tables."""

    def __init__(self, ctx: Context, ledger: DeliveryLedger) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.ledger = ledger

    def add(self, conv: str, record: MessageRecord) -> int:
        return self.store.add_message(conv, record.encode())

    def event(self, conv: str, text: str) -> None:
        """A note in a conversation: timer changes, key changes, members, requests."""
        self.add(conv, MessageRecord(inner.new_uid(), "event", "", "event", text,
                                     self.ctx.clock()))

    def add_outgoing(self, conv: str, message: inner.Content, recipients: list[str],
                     failed: dict[str, str] | None = None) -> int:
        """Our message, stored and opened in the ledger (queued for ``recipients``)."""
        now = self.ctx.clock()
        record = record_of(message, "out", "", now, now + message.ttl if message.ttl else 0.0)
        self.ledger.open(message.uid, recipients, failed)
        return self.add(conv, record)

    def live(self, conv: str) -> list[tuple[int, MessageRecord]]:
        """The conversation's messages in order, less those whose timer ran out (deleted)."""
        now = self.ctx.clock()
        out = []
        for seq, body in self.store.messages(conv):
            record = MessageRecord.decode(body)
            if record.expires_at and record.expires_at <= now:
                self._delete_expired(seq, record)
                continue
            out.append((seq, record))
        return out

    def holds(self, conv: str, uid: bytes) -> bool:
        return any(r.uid == uid for _, r in self.live(conv))

    def unread(self, conv: str) -> int:
        mark = self.store.get(READ_MARKS, conv)
        after = int(mark.decode()) if mark else 0
        return sum(1 for seq, r in self.live(conv) if seq > after and r.direction == "in")

    def mark_read(self, conv: str, seq: int) -> None:
        self.store.put(READ_MARKS, conv, str(seq).encode())

    def forget(self, conv: str) -> None:
        """Delete a conversation and its read mark."""
        with self.store.transaction():
            self.store.delete_conversation(conv)
            self.store.delete(READ_MARKS, conv)

    def move(self, source: str, target: str, *, sender: str, new_sender: str) -> None:
        """Append every message of ``source`` to ``target`` (two contacts found to be one),
        the author renamed; the read mark of ``source`` goes."""
        for seq, body in self.store.messages(source):
            record = MessageRecord.decode(body)
            if record.sender == sender:
                record.sender = new_sender
            self.add(target, record)
            self.store.delete_message(seq)
        self.store.delete(READ_MARKS, source)

    def _delete_expired(self, seq: int, record: MessageRecord) -> None:
        """An expired message goes, and with it every trace the store holds: its delivery
        states and the transport's envelopes that still carry it."""
        with self.store.transaction():
            self.store.delete_message(seq)
            self.ledger.withdraw(record.uid)
        self.ctx.counts["expired"] += 1
