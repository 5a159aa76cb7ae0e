"""What the messenger keeps in the encrypted store, and how each record is packed.

The store's tables are declared in ``client.storage.store``; the messenger uses them so:

* ``contacts``: contact id (random hex) -> :class:`ContactRecord`. Names are attributes, so a
  contact can be renamed (a message request named later) without moving anything.
* ``sessions`` / ``verification``: contact id -> the e2e session / verification state.
* ``unconfirmed_cards``: contact id -> the card with other keys the user added under that
  contact's name, waiting until its safety number is verified (or acknowledged).
* ``groups``: group id (hex) -> :class:`GroupRecord`.
* ``read_marks``: conversation id -> the sequence number read up to (decimal text).
* ``delivery`` / ``delivery_transport``: the delivery states, owned by
  :mod:`client.messenger.ledger`.
* ``messages``: conversation ``c:<contact id>`` or ``g:<group id>`` -> :class:`MessageRecord`.
* ``replay``: first-message ephemeral key (hex) -> the prekey id it was accepted under.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mixcore.encoding import pack, unpack_canonical

CONTACTS = "contacts"
UNCONFIRMED_CARDS = "unconfirmed_cards"
GROUPS = "groups"
READ_MARKS = "read_marks"
REPLAY = "replay"


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
