"""Fixed-size mailbox items: message fragments (the unit of transport, acknowledgement and
retransmission) and the owner's own loops.

A message (the bytes the payload codec produced) is cut into chunks; each chunk travels in its
own Sphinx packet, sealed to the recipient's mailbox key (:mod:`client.mailbox_seal`), as the
``data`` of a :class:`mixcore.payload.MailboxPayload`, and is stored by the recipient's
provider. What is sealed is exactly ``fragment_len`` bytes (big-endian)::

    fragment: kind 1 | message id (16) | index (u16) | count (u16) | chunk length (u16) | chunk | 0s
    loop:     kind 2 | loop id (16) | zeros

None of these fields is visible to a provider (the seal hides them); the kind lets the owner
recognise its own loop *after* opening it, so a loop delivered twice is a counted duplicate,
never an undecodable message in the inbox. The message id is 16 random bytes per message.
Decoding is strict (kind, ``index < count``, length in range, zero padding) because items come
from anyone who knows a mailbox's card.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from secrets import token_bytes

from client.errors import FragmentError, MessageTooLarge

KIND_FRAGMENT = 1
KIND_LOOP = 2
MESSAGE_ID_LEN = 16
MAX_FRAGMENT_COUNT = 0xFFFF
_HEAD = struct.Struct(f">B{MESSAGE_ID_LEN}sHHH")
HEADER_LEN = _HEAD.size


def chunk_capacity(fragment_len: int) -> int:
    """Message bytes one fragment of ``fragment_len`` bytes carries."""
    return fragment_len - HEADER_LEN


def new_message_id(randbytes: Callable[[int], bytes] = token_bytes) -> bytes:
    """A fresh random message id, from the OS generator unless a core injects its own: it is
    visible to the recipient's provider, so never from a seeded or Mersenne generator."""
    return randbytes(MESSAGE_ID_LEN)


@dataclass(frozen=True, slots=True)
class Fragment:
    message_id: bytes
    index: int
    count: int
    chunk: bytes

    def __post_init__(self) -> None:
        if len(self.message_id) != MESSAGE_ID_LEN:
            raise FragmentError(f"a message id is {MESSAGE_ID_LEN} bytes")
        if not 1 <= self.count <= MAX_FRAGMENT_COUNT:
            raise FragmentError(f"fragment count must be 1..{MAX_FRAGMENT_COUNT}")
        if not 0 <= self.index < self.count:
            raise FragmentError("fragment index out of range")

    def encode(self, fragment_len: int) -> bytes:
        """Exactly ``fragment_len`` bytes."""
        capacity = chunk_capacity(fragment_len)
        if len(self.chunk) > capacity:
            raise FragmentError(f"chunk of {len(self.chunk)} bytes exceeds {capacity}")
        head = _HEAD.pack(
            KIND_FRAGMENT, self.message_id, self.index, self.count, len(self.chunk)
        )
        return head + self.chunk + bytes(capacity - len(self.chunk))

    @classmethod
    def decode(cls, data: bytes, fragment_len: int) -> Fragment:
        """Parse a fragment; :class:`FragmentError` for anything but the exact layout."""
        if not isinstance(data, bytes) or len(data) != fragment_len:
            raise FragmentError(f"a fragment is {fragment_len} bytes")
        kind, message_id, index, count, length = _HEAD.unpack_from(data)
        if kind != KIND_FRAGMENT:
            raise FragmentError(f"not a fragment (kind {kind})")
        if count == 0 or index >= count:
            raise FragmentError("fragment index out of range")
        end = HEADER_LEN + length
        if end > fragment_len:
            raise FragmentError("chunk length exceeds the fragment")
        if any(data[end:]):
            raise FragmentError("non-zero fragment padding")
        return cls(message_id, index, count, data[HEADER_LEN:end])


@dataclass(frozen=True, slots=True)
class LoopItem:
    """One of our own loops, back in our mailbox (recognised by its id once opened)."""

    loop_id: bytes

    def encode(self, fragment_len: int) -> bytes:
        if len(self.loop_id) != MESSAGE_ID_LEN:
            raise FragmentError(f"a loop id is {MESSAGE_ID_LEN} bytes")
        return bytes([KIND_LOOP]) + self.loop_id + bytes(fragment_len - 1 - MESSAGE_ID_LEN)

    @classmethod
    def decode(cls, data: bytes, fragment_len: int) -> LoopItem:
        if len(data) != fragment_len or data[0] != KIND_LOOP:
            raise FragmentError("not a loop item")
        if any(data[1 + MESSAGE_ID_LEN :]):
            raise FragmentError("non-zero loop padding")
        return cls(data[1 : 1 + MESSAGE_ID_LEN])


def decode_item(data: bytes, fragment_len: int) -> Fragment | LoopItem:
    """An opened mailbox item: a fragment or one of our loops; :class:`FragmentError` else."""
    if isinstance(data, bytes) and len(data) == fragment_len and data[:1] == bytes([KIND_LOOP]):
        return LoopItem.decode(data, fragment_len)
    return Fragment.decode(data, fragment_len)


def max_message_len(fragment_len: int, max_fragments: int) -> int:
    return chunk_capacity(fragment_len) * max_fragments


def split_message(
    data: bytes, fragment_len: int, max_fragments: int, message_id: bytes
) -> tuple[Fragment, ...]:
    """Cut ``data`` into fragments (at least one, even for an empty message)."""
    capacity = chunk_capacity(fragment_len)
    count = max(1, math.ceil(len(data) / capacity))
    if count > min(max_fragments, MAX_FRAGMENT_COUNT):
        raise MessageTooLarge(len(data), max_message_len(fragment_len, max_fragments))
    return tuple(
        Fragment(message_id, i, count, data[i * capacity : (i + 1) * capacity])
        for i in range(count)
    )
