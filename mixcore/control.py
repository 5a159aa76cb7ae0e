"""Control messages between a client and its provider, carried in link cells.

Each is one cell of a control kind (``mixcore.link`` reserves 16..127), padded by the link to the
same size as a packet cell, so an observer of the client's link cannot tell a pull from a packet.

* ``PULL_REQUEST`` (16): ``seq (u32)`` — "send me a batch".
* ``PULL_ITEM`` (17): ``seq (u32) | index (u8) | count (u8) | kind (u8) | item id (u64) |
  SURB id (16) | length (u16) | data`` — exactly ``count`` (= ``pull_batch``) of these answer
  every request, real items first, then dummies (kind 0, no data).
* ``PULL_ACK`` (18): ``seq (u32) | n (u8) | n x item id (u64)`` — "I have these; delete them".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from mixcore.errors import DecodeError
from mixcore.routing import SURB_ID_LEN


class ControlKind(IntEnum):
    PULL_REQUEST = 16
    PULL_ITEM = 17
    PULL_ACK = 18


class ItemType(IntEnum):
    DUMMY = 0
    MESSAGE = 1
    REPLY = 2


_REQUEST = struct.Struct(">I")
_ITEM = struct.Struct(f">IBBBQ{SURB_ID_LEN}sH")
_ACK_HEAD = struct.Struct(">IB")
_ID = struct.Struct(">Q")
MAX_ACK_IDS = 64


@dataclass(frozen=True, slots=True)
class PullRequest:
    seq: int

    def encode(self) -> bytes:
        return _REQUEST.pack(self.seq)

    @classmethod
    def decode(cls, body: bytes) -> PullRequest:
        if len(body) != _REQUEST.size:
            raise DecodeError("pull request: wrong length")
        return cls(*_REQUEST.unpack(body))


@dataclass(frozen=True, slots=True)
class PullItem:
    seq: int
    index: int
    count: int
    item_type: ItemType
    item_id: int
    surb_id: bytes
    data: bytes

    def encode(self) -> bytes:
        head = _ITEM.pack(
            self.seq, self.index, self.count, self.item_type, self.item_id, self.surb_id,
            len(self.data),
        )
        return head + self.data

    @classmethod
    def decode(cls, body: bytes) -> PullItem:
        if len(body) < _ITEM.size:
            raise DecodeError("pull item: truncated")
        seq, index, count, kind, item_id, surb_id, length = _ITEM.unpack_from(body)
        data = body[_ITEM.size :]
        if len(data) != length:
            raise DecodeError("pull item: length mismatch")
        if not 0 <= index < count:
            raise DecodeError("pull item: index out of range")
        try:
            item_type = ItemType(kind)
        except ValueError:
            raise DecodeError(f"pull item: unknown type {kind}") from None
        return cls(seq, index, count, item_type, item_id, surb_id, data)

    @staticmethod
    def overhead() -> int:
        return _ITEM.size


@dataclass(frozen=True, slots=True)
class PullAck:
    seq: int
    item_ids: tuple[int, ...]

    def encode(self) -> bytes:
        if len(self.item_ids) > MAX_ACK_IDS:
            raise DecodeError(f"at most {MAX_ACK_IDS} ids per ack")
        return _ACK_HEAD.pack(self.seq, len(self.item_ids)) + b"".join(
            _ID.pack(i) for i in self.item_ids
        )

    @classmethod
    def decode(cls, body: bytes) -> PullAck:
        if len(body) < _ACK_HEAD.size:
            raise DecodeError("pull ack: truncated")
        seq, n = _ACK_HEAD.unpack_from(body)
        rest = body[_ACK_HEAD.size :]
        if n > MAX_ACK_IDS or len(rest) != n * _ID.size:
            raise DecodeError("pull ack: wrong length")
        ids = tuple(_ID.unpack_from(rest, i * _ID.size)[0] for i in range(n))
        return cls(seq, ids)
