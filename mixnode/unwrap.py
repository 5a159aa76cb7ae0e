"""The bytes that carry the Sphinx peel to worker processes, and what a worker does with them.

A node's costly step is the Sphinx hop (two X25519 multiplications); everything else — replay
filter, topology and delay checks, the pool, the mailbox, the links — is cheap and stateful. So
the hop is a pure function, :func:`mixcore.hop.unwrap`, that a worker process can run on a batch
of packets with copies of the node's mix keys, while the node process keeps all the state. The
replay check stays in the node process, in one place: a worker only reports a packet's tag.

This module is sans-IO: :class:`WorkerCore` turns frames into frames and the codec functions
turn batches into bytes and back. ``mixnode/workers.py`` moves the frames over pipes.

Frames, both directions: ``length (u32, of what follows) | kind (u8) | body``.

* ``READY`` (worker -> node), empty: the worker imported everything and waits for keys.
* ``KEYS`` (node -> worker): ``n (u8) | n x (epoch (u32) | secret (32))``, the whole key set.
* ``BATCH`` (node -> worker): ``id (u32) | n_live (u8) | live epochs (u32 each) | n_retired
  (u8) | retired epochs | count (u16) | count x packet`` (every packet ``packet_len`` bytes).
* ``RESULTS`` (worker -> node): ``id (u32) | count (u16) | count x record``, one per packet in
  batch order; a record is ``status (u8)`` then, by status: DROPPED ``reason (u8)``; RELAY
  ``epoch | tag (16) | next node (32) | delay (f64) | packet``; DELIVER ``epoch | tag |
  mailbox (16) | length (u16) | payload``; SURB_REPLY ``epoch | tag | mailbox | surb id (16) |
  body (body_len)``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from mixcore.hop import HOP_REASONS, Unwrapped, unwrap
from mixcore.sphinx import Deliver, MixPrivateKey, Relay, Sphinx, SurbReply

_REASON_CODE = {reason: i for i, reason in enumerate(HOP_REASONS)}

# ---------------------------------------------------------------------------------------------
# Frames

READY, KEYS, BATCH, RESULTS = 0, 1, 2, 3
_FRAME = struct.Struct(">IB")
FRAME_HEADER_LEN = _FRAME.size
_U32 = struct.Struct(">I")
_BATCH_HEAD = struct.Struct(">IB")
_COUNT = struct.Struct(">H")
_RESULTS_HEAD = struct.Struct(">IH")
_RELAY_HEAD = struct.Struct(">BI16s32sd")
_DELIVER_HEAD = struct.Struct(">BI16s16sH")
_SURB_HEAD = struct.Struct(">BI16s16s16s")
_DROPPED = 0
_RELAY = 1
_DELIVER = 2
_SURB = 3
#: Largest batch a frame may carry (the u16 count); nodes send far fewer.
MAX_BATCH = 1024
SECRET_LEN = 32


class FrameError(ValueError):
    """A frame that breaks this layout: the other side is not our code, or is broken."""


def frame(kind: int, body: bytes) -> bytes:
    return _FRAME.pack(len(body) + 1, kind) + body


def split_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove and return every complete frame at the start of ``buffer``."""
    frames: list[tuple[int, bytes]] = []
    offset, end = 0, len(buffer)
    while end - offset >= FRAME_HEADER_LEN:
        length, kind = _FRAME.unpack_from(buffer, offset)
        if length < 1:
            raise FrameError("empty frame")
        stop = offset + 4 + length
        if stop > end:
            break
        frames.append((kind, bytes(buffer[offset + FRAME_HEADER_LEN : stop])))
        offset = stop
    if offset:
        del buffer[:offset]
    return frames


def encode_keys(keys: dict[int, MixPrivateKey]) -> bytes:
    return bytes([len(keys)]) + b"".join(
        _U32.pack(epoch) + key.secret_bytes() for epoch, key in sorted(keys.items())
    )


def decode_keys(body: bytes, suite: str) -> dict[int, MixPrivateKey]:
    n = body[0] if body else 0
    if len(body) != 1 + n * (4 + SECRET_LEN):
        raise FrameError("malformed KEYS frame")
    keys = {}
    for i in range(n):
        at = 1 + i * (4 + SECRET_LEN)
        (epoch,) = _U32.unpack_from(body, at)
        keys[epoch] = MixPrivateKey.from_secret(body[at + 4 : at + 4 + SECRET_LEN], suite)
    return keys


def encode_batch(
    batch_id: int, live: Sequence[int], retired: Sequence[int], packets: Sequence[bytes]
) -> bytes:
    return b"".join(
        (
            _BATCH_HEAD.pack(batch_id, len(live)),
            *(_U32.pack(e) for e in live),
            bytes([len(retired)]),
            *(_U32.pack(e) for e in retired),
            _COUNT.pack(len(packets)),
            *packets,
        )
    )


def decode_batch(body: bytes, packet_len: int) -> tuple[int, list[int], list[int], list[bytes]]:
    try:
        batch_id, n_live = _BATCH_HEAD.unpack_from(body)
        at = _BATCH_HEAD.size
        live = [_U32.unpack_from(body, at + 4 * i)[0] for i in range(n_live)]
        at += 4 * n_live
        n_retired = body[at]
        retired = [_U32.unpack_from(body, at + 1 + 4 * i)[0] for i in range(n_retired)]
        at += 1 + 4 * n_retired
        (count,) = _COUNT.unpack_from(body, at)
    except (struct.error, IndexError):
        raise FrameError("malformed BATCH frame") from None
    at += _COUNT.size
    if len(body) != at + count * packet_len:
        raise FrameError("BATCH frame length does not match its count")
    packets = [body[at + i * packet_len : at + (i + 1) * packet_len] for i in range(count)]
    return batch_id, live, retired, packets


def encode_results(batch_id: int, results: Sequence[Unwrapped]) -> bytes:
    parts = [_RESULTS_HEAD.pack(batch_id, len(results))]
    for item in results:
        if isinstance(item, str):
            parts.append(bytes([_DROPPED, _REASON_CODE[item]]))
            continue
        epoch, result = item
        if isinstance(result, Relay):
            parts.append(
                _RELAY_HEAD.pack(_RELAY, epoch, result.replay_tag, result.next_node, result.delay)
            )
            parts.append(result.packet)
        elif isinstance(result, Deliver):
            parts.append(
                _DELIVER_HEAD.pack(
                    _DELIVER, epoch, result.replay_tag, result.mailbox, len(result.payload)
                )
            )
            parts.append(result.payload)
        else:
            parts.append(
                _SURB_HEAD.pack(_SURB, epoch, result.replay_tag, result.mailbox, result.surb_id)
            )
            parts.append(result.body)
    return b"".join(parts)


def decode_results(body: bytes, packet_len: int, body_len: int) -> tuple[int, list[Unwrapped]]:
    try:
        batch_id, count = _RESULTS_HEAD.unpack_from(body)
        at = _RESULTS_HEAD.size
        out: list[Unwrapped] = []
        for _ in range(count):
            status = body[at]
            if status == _RELAY:
                _, epoch, tag, node, delay = _RELAY_HEAD.unpack_from(body, at)
                at += _RELAY_HEAD.size
                out.append((epoch, Relay(tag, node, delay, body[at : at + packet_len])))
                at += packet_len
            elif status == _DROPPED:
                out.append(HOP_REASONS[body[at + 1]])
                at += 2
            elif status == _DELIVER:
                _, epoch, tag, mailbox, length = _DELIVER_HEAD.unpack_from(body, at)
                at += _DELIVER_HEAD.size
                out.append((epoch, Deliver(tag, mailbox, body[at : at + length])))
                at += length
            elif status == _SURB:
                _, epoch, tag, mailbox, surb_id = _SURB_HEAD.unpack_from(body, at)
                at += _SURB_HEAD.size
                out.append((epoch, SurbReply(tag, mailbox, surb_id, body[at : at + body_len])))
                at += body_len
            else:
                raise FrameError(f"unknown result status {status}")
    except (struct.error, IndexError):
        raise FrameError("malformed RESULTS frame") from None
    if at != len(body):
        raise FrameError("RESULTS frame has trailing bytes")
    return batch_id, out


class WorkerCore:
    """What a worker process does with each frame: remember keys, unwrap batches."""

    def __init__(self, sphinx: Sphinx) -> None:
        self.sphinx = sphinx
        self.keys: dict[int, MixPrivateKey] = {}

    def handle(self, kind: int, body: bytes) -> bytes | None:
        """The reply frame to ``(kind, body)``, or None (KEYS needs no reply)."""
        if kind == KEYS:
            self.keys = decode_keys(body, self.sphinx.geometry.suite)
            return None
        if kind != BATCH:
            raise FrameError(f"unexpected frame kind {kind}")
        batch_id, live_epochs, retired_epochs, packets = decode_batch(
            body, self.sphinx.geometry.packet_len
        )
        live = [(e, self.keys[e]) for e in live_epochs if e in self.keys]
        retired = [self.keys[e] for e in retired_epochs if e in self.keys]
        sphinx = self.sphinx
        results = [unwrap(sphinx, live, retired, packet) for packet in packets]
        return frame(RESULTS, encode_results(batch_id, results))
