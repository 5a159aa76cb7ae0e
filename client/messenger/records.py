"""What the messenger keeps in the encrypted store, and how each record is packed.

The store's tables are fixed (``client.storage``); the messenger uses them so:

* ``contacts``: contact id (random hex) -> :class:`ContactRecord`. Names are attributes, so a
  contact can be renamed (a message request named later) without moving anything.
* ``sessions`` / ``verification``: contact id -> the e2e session / verification state.
* ``settings``: ``group:<id>`` -> :class:`GroupRecord`; ``delivery:<uid>`` -> the delivery
  state of one outgoing message per recipient; ``transport:<id>`` -> which message and
  recipient a transport message carries; ``read:<conversation>`` -> the read watermark.
* ``messages``: conversation ``c:<contact id>`` or ``g:<group id>`` -> :class:`MessageRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mixcore.encoding import pack, unpack_canonical


class Delivery(Enum):
    """Delivery state of an outgoing message to one recipient (see ``docs/messenger.md``)."""

    QUEUED = "queued"
    """Encrypted and in the daemon's send queue; no fragment has left yet."""
    SENT = "sent"
    """Fragments have left in packets; not all acknowledged by the recipient's provider."""
    AT_PROVIDER = "at_provider"
    """Every fragment is stored at the recipient's provider (transport SURB-ACKs)."""
    DELIVERED = "delivered"
    """The recipient's daemon decrypted and stored it (its end-to-end receipt came back)."""
    FAILED = "failed"
    """Given up: retry budget spent, provider gone, or blocked (the reason says which)."""


#: A state only moves forward; a receipt wins over everything (the message did arrive).
RANK = {
    Delivery.QUEUED: 0,
    Delivery.SENT: 1,
    Delivery.AT_PROVIDER: 2,
    Delivery.FAILED: 3,
    Delivery.DELIVERED: 4,
}


def advance(current: Delivery, new: Delivery) -> Delivery:
    return new if RANK[new] > RANK[current] else current


@dataclass(slots=True)
class ContactRecord:
    cid: str
    name: str
    card: bytes
    added_at: float
    timer: int = 0
    """Agreed disappearing-message timer in seconds (0: off)."""
    my_proposal: int = -1
    their_proposal: int = -1
    request: bool = False
    """Created by an incoming first message, not by the user adding a card."""
    hidden: bool = False
    """Known only as a fellow group member (the group creator shared the card)."""
    blocked: bool = False
    """The user blocked them: their messages are dropped and nothing is sent to them."""

    def encode(self) -> bytes:
        return pack([1, self.cid, self.name, self.card, self.added_at, self.timer,
                     self.my_proposal, self.their_proposal, self.request, self.hidden,
                     self.blocked])

    @classmethod
    def decode(cls, data: bytes) -> ContactRecord:
        _, *fields = unpack_canonical(data)
        return cls(*fields)


@dataclass(slots=True)
class GroupRecord:
    gid: bytes
    name: str
    admin: str
    """Contact id of the member who created the group ("" when it is us)."""
    members: list[str] = field(default_factory=list)
    """Contact ids of the other members (we are implicit)."""
    left: bool = False
    """We were removed: nothing is sent or accepted any more."""

    def encode(self) -> bytes:
        return pack([1, self.gid, self.name, self.admin, list(self.members), self.left])

    @classmethod
    def decode(cls, data: bytes) -> GroupRecord:
        _, gid, name, admin, members, left = unpack_canonical(data)
        return cls(gid, name, admin, list(members), left)


@dataclass(slots=True)
class MessageRecord:
    uid: bytes
    direction: str
    """``out`` (ours), ``in`` (received) or ``event`` (a note: timer, key change, members)."""
    sender: str
    """Contact id of the author of an incoming message ("" otherwise)."""
    kind: str
    """``text``, ``file`` or ``event``."""
    text: str = field(repr=False)  # content stays out of reprs and logs
    at: float = 0.0
    expires_at: float = 0.0
    file_name: str = field(default="", repr=False)
    file_data: bytes = field(default=b"", repr=False)
    file_sha256: bytes = b""

    def encode(self) -> bytes:
        return pack([1, self.uid, self.direction, self.sender, self.kind, self.text, self.at,
                     self.expires_at, self.file_name, self.file_data, self.file_sha256])

    @classmethod
    def decode(cls, data: bytes) -> MessageRecord:
        _, *fields = unpack_canonical(data, max_bytes=4 << 20)
        return cls(*fields)


def encode_delivery(rows: dict[str, tuple[Delivery, str]]) -> bytes:
    return pack([[cid, state.value, reason] for cid, (state, reason) in sorted(rows.items())])


def decode_delivery(data: bytes) -> dict[str, tuple[Delivery, str]]:
    out: dict[str, tuple[Delivery, str]] = {}
    for cid, state, reason in unpack_canonical(data):
        out[cid] = (Delivery(state), reason)
    return out


def summarize(rows: dict[str, tuple[Delivery, str]]) -> dict[str, Any]:
    """One state for a message to several recipients: the least advanced, with counts."""
    if not rows:
        return {"state": Delivery.DELIVERED.value, "reason": "", "recipients": 0, "delivered": 0}
    states = [s for s, _ in rows.values()]
    failed = [r for s, r in rows.values() if s is Delivery.FAILED]
    worst = min(states, key=lambda s: RANK[s] if s is not Delivery.FAILED else -1)
    return {
        "state": worst.value,
        "reason": failed[0] if failed else "",
        "recipients": len(rows),
        "delivered": sum(1 for s in states if s is Delivery.DELIVERED),
    }
