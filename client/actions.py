"""What the client core asks its shell to do, and what it reports to the user.

The core never does I/O; :meth:`client.core.ClientCore.poll` and ``receive_control`` return a
list of these, in the order the shell must carry them out. In particular a
:class:`MessageReceived` always precedes the :class:`SendControl` carrying the ``PULL_ACK`` that
lets the provider delete the stored fragments, so a shell that persists received messages
before sending the ack loses nothing in a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from client.transport.arq import UndeliverableReason
from client.transport.streams import StreamKind
from mixcore.control import ControlKind


class PacketKind(Enum):
    REAL = "real"
    """A fragment of a user's message (first attempt or retransmission)."""
    DROP = "drop"
    """Drop cover of the drop stream: to the drop mailbox of a random provider, no SURB."""
    DECOY = "decoy"
    """A payload-stream slot with nothing queued: a fragment-shaped packet with a SURB-ACK to a
    random provider's drop mailbox (acknowledged like a fragment, then discarded)."""
    LOOP = "loop"
    """Loop cover: a mailbox payload to our own mailbox."""


@dataclass(frozen=True, slots=True)
class SendPacket:
    """Send ``packet`` (a full Sphinx packet) on the link to ``first_hop`` (our provider).

    ``kind`` and ``stream`` are for the shell's counters only; they must never reach a log or
    the wire."""

    first_hop: bytes
    packet: bytes
    kind: PacketKind
    stream: StreamKind
    """Which Poisson stream's event this packet is (counters and tests only)."""


@dataclass(frozen=True, slots=True)
class SendControl:
    """Send one control cell of ``kind`` with ``body`` on the link to our provider."""

    kind: ControlKind
    body: bytes


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete message arrived in our mailbox (delivered exactly once)."""

    message_id: bytes
    data: bytes
    """What the payload codec decoded from the reassembled bytes."""
    received_at: float


@dataclass(frozen=True, slots=True)
class MessageDelivered:
    """Every fragment of our message ``message_id`` is stored in the recipient's mailbox (the
    transport ACK; "read by the person" is a messenger-layer receipt, not this)."""

    message_id: bytes
    at: float


@dataclass(frozen=True, slots=True)
class MessageUndeliverable:
    """Our message ``message_id`` was given up; no more packets are sent for it."""

    message_id: bytes
    reason: UndeliverableReason
    detail: str
    at: float


Action = SendPacket | SendControl | MessageReceived | MessageDelivered | MessageUndeliverable
