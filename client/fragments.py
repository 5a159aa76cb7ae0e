"""Fixed-size message fragments: the unit of transport, acknowledgement and retransmission.

A message (the bytes the payload codec produced) is cut into chunks; each chunk travels in its
own Sphinx packet as the ``data`` of a :class:`mixcore.payload.MailboxPayload` and is stored by
the recipient's provider. Every fragment is padded to exactly ``data_capacity`` bytes, so the
exit provider learns nothing from its length. Layout (big-endian)::

    version (1) | message id (16) | index (u16) | count (u16) | chunk length (u16) | chunk | zeros

The message id is 16 random bytes drawn per message, so ids of one sender's messages are not
linkable to each other. Decoding is strict (version, ``index < count``, length in range, zero
padding) because fragments come from anyone who knows a mailbox address.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

from client.errors import FragmentError, MessageTooLarge

FRAGMENT_VERSION = 1
MESSAGE_ID_LEN = 16
MAX_FRAGMENT_COUNT = 0xFFFF
_HEAD = struct.Struct(f">B{MESSAGE_ID_LEN}sHHH")
HEADER_LEN = _HEAD.size


def chunk_capacity(fragment_len: int) -> int:
    """Message bytes one fragment of ``fragment_len`` bytes carries."""
    return fragment_len - HEADER_LEN


def new_message_id() -> bytes:
    """A fresh random message id (OS randomness: it is visible to the exit provider)."""
    return os.urandom(MESSAGE_ID_LEN)


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
            FRAGMENT_VERSION, self.message_id, self.index, self.count, len(self.chunk)
        )
        return head + self.chunk + bytes(capacity - len(self.chunk))

    @classmethod
    def decode(cls, data: bytes, fragment_len: int) -> Fragment:
        """Parse a fragment; :class:`FragmentError` for anything but the exact layout."""
        if not isinstance(data, bytes) or len(data) != fragment_len:
            raise FragmentError(f"a fragment is {fragment_len} bytes")
        version, message_id, index, count, length = _HEAD.unpack_from(data)
        if version != FRAGMENT_VERSION:
            raise FragmentError(f"unknown fragment version {version}")
        if count == 0 or index >= count:
            raise FragmentError("fragment index out of range")
        end = HEADER_LEN + length
        if end > fragment_len:
            raise FragmentError("chunk length exceeds the fragment")
        if any(data[end:]):
            raise FragmentError("non-zero fragment padding")
        return cls(message_id, index, count, data[HEADER_LEN:end])


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
