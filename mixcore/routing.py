"""Per-hop routing commands: the bytes each hop finds inside its layer of the Sphinx header.

Every relay command has the same length, so a header reveals nothing about the path length or
the position of a hop; the final command is padded by the header's random filler. Layouts
(big-endian integers):

* ``RELAY``      ``0x01 | next node id (32) | delay in microseconds (u32)`` — 37 bytes
* ``DELIVER``    ``0x02 | mailbox (16)`` — 17 bytes
* ``SURB_REPLY`` ``0x03 | mailbox (16) | SURB id (16)`` — 33 bytes

The delay is chosen by the sender (Loopix): the node holds the packet for exactly that long, so a
node cannot be asked to hold anything longer than 2**32 microseconds (~71 minutes), and nodes
refuse much less than that (their ``max_hop_delay``).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from mixcore.errors import RoutingError

NODE_ID_LEN = 32
MAILBOX_LEN = 16
SURB_ID_LEN = 16
MAX_DELAY_US = (1 << 32) - 1

_RELAY = struct.Struct(f">B{NODE_ID_LEN}sI")
_DELIVER = struct.Struct(f">B{MAILBOX_LEN}s")
_SURB_REPLY = struct.Struct(f">B{MAILBOX_LEN}s{SURB_ID_LEN}s")

RELAY_LEN = _RELAY.size
MAX_FINAL_LEN = max(_DELIVER.size, _SURB_REPLY.size)


def mailbox_address(link_public_key: bytes) -> bytes:
    """The mailbox a client owns at its provider: derived from its link (Noise static) key, so
    the provider needs no separate credential, and only that key's link may pull it."""
    return hashlib.sha256(b"mixnet-mailbox-v1" + link_public_key).digest()[:MAILBOX_LEN]


class CommandType(IntEnum):
    RELAY = 1
    DELIVER = 2
    SURB_REPLY = 3


@dataclass(frozen=True, slots=True)
class RelayCommand:
    """Forward to ``next_node`` after holding the packet ``delay_us`` microseconds."""

    next_node: bytes
    delay_us: int

    def __post_init__(self) -> None:
        if len(self.next_node) != NODE_ID_LEN:
            raise RoutingError(f"a node id is {NODE_ID_LEN} bytes")
        if not 0 <= self.delay_us <= MAX_DELAY_US:
            raise RoutingError(f"delay must be between 0 and {MAX_DELAY_US} microseconds")

    @classmethod
    def with_delay(cls, next_node: bytes, delay: float) -> RelayCommand:
        """Build from a delay in seconds (rounded to the microsecond)."""
        if not delay >= 0:  # also rejects NaN
            raise RoutingError("delay must be a non-negative number of seconds")
        return cls(next_node, round(delay * 1_000_000))

    @property
    def delay(self) -> float:
        """The delay in seconds."""
        return self.delay_us / 1_000_000


@dataclass(frozen=True, slots=True)
class DeliverCommand:
    """Store the payload in ``mailbox`` at this (exit) node."""

    mailbox: bytes

    def __post_init__(self) -> None:
        if len(self.mailbox) != MAILBOX_LEN:
            raise RoutingError(f"a mailbox address is {MAILBOX_LEN} bytes")


@dataclass(frozen=True, slots=True)
class SurbReplyCommand:
    """Store a SURB reply body in ``mailbox``, labelled with the ``surb_id`` its creator chose."""

    mailbox: bytes
    surb_id: bytes

    def __post_init__(self) -> None:
        if len(self.mailbox) != MAILBOX_LEN:
            raise RoutingError(f"a mailbox address is {MAILBOX_LEN} bytes")
        if len(self.surb_id) != SURB_ID_LEN:
            raise RoutingError(f"a SURB id is {SURB_ID_LEN} bytes")


RoutingCommand = RelayCommand | DeliverCommand | SurbReplyCommand
FinalCommand = DeliverCommand | SurbReplyCommand


def encode_command(command: RoutingCommand) -> bytes:
    if isinstance(command, RelayCommand):
        return _RELAY.pack(CommandType.RELAY, command.next_node, command.delay_us)
    if isinstance(command, DeliverCommand):
        return _DELIVER.pack(CommandType.DELIVER, command.mailbox)
    if isinstance(command, SurbReplyCommand):
        return _SURB_REPLY.pack(CommandType.SURB_REPLY, command.mailbox, command.surb_id)
    raise RoutingError(f"not a routing command: {type(command).__name__}")


def decode_command(data: bytes) -> RoutingCommand:
    """Parse one command; anything but an exact, known layout raises :class:`RoutingError`."""
    if not data:
        raise RoutingError("empty routing command")
    kind = data[0]
    if kind == CommandType.RELAY and len(data) == _RELAY.size:
        _, node, delay_us = _RELAY.unpack(data)
        return RelayCommand(node, delay_us)
    if kind == CommandType.DELIVER and len(data) == _DELIVER.size:
        _, mailbox = _DELIVER.unpack(data)
        return DeliverCommand(mailbox)
    if kind == CommandType.SURB_REPLY and len(data) == _SURB_REPLY.size:
        _, mailbox, surb_id = _SURB_REPLY.unpack(data)
        return SurbReplyCommand(mailbox, surb_id)
    raise RoutingError(f"unknown routing command (type {kind}, {len(data)} bytes)")
