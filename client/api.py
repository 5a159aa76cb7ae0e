"""The daemon's local API: length-prefixed msgpack over a Unix socket.

A frame is a 4-byte big-endian length and a msgpack map. Requests are
``{"id": int, "op": str, ...arguments}``; every request gets exactly one reply
``{"id": int, "ok": true, "result": ...}`` or ``{"id": int, "ok": false, "error": str}``. A
malformed request gets an error reply and the connection stays usable; only a frame over the
size limit or one that cannot be parsed at all closes the connection. Front ends (the CLI, the
chat screen) speak only this.

The daemon's own operations (arguments -> result; handlers in ``client/daemon_ops.py``,
the messenger's operations are listed in ``client/messenger/ops.py``; one registry,
``client/api_ops.py``, answers both):

* ``status`` -> daemon statistics (connection, epoch, rates, counters)
* ``address`` -> ``{"provider": bytes, "mailbox": bytes, "text": str}``
* ``send`` ``provider, mailbox, mailbox_key, data`` -> ``{"message_id": bytes}``
* ``message`` ``message_id`` -> ``{"state": str, "reason": str}``
* ``inbox`` ``after=0, unread_only=False, limit=100`` -> list of messages
* ``mark_read`` ``seqs`` -> ``{"marked": int}``
* ``outbox`` ``state=None`` -> list of outgoing messages with their states
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import trio

from mixcore.errors import DecodeError, MixnetError

MAX_FRAME = 8 * 1024 * 1024
_LEN = struct.Struct(">I")


class ApiError(MixnetError):
    """The daemon answered a request with an error, or could not be reached."""


class DaemonNotRunning(ApiError):
    def __init__(self, data_dir: str) -> None:
        super().__init__(
            f"the client daemon is not running (start it with: mixnet client run --dir {data_dir})"
        )


def encode_frame(message: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise DecodeError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise DecodeError(f"not a msgpack frame: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise DecodeError("a frame must be a map")
    return message


class FrameReader:
    """Sans-IO reassembly of frames from a byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= _LEN.size:
            (length,) = _LEN.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise DecodeError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            if len(self._buffer) < _LEN.size + length:
                break
            frames.append(bytes(self._buffer[_LEN.size : _LEN.size + length]))
            del self._buffer[: _LEN.size + length]
        return frames


class ApiClient:
    """One connection to the daemon; ``await call(op, **args)`` returns the result."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._reader = FrameReader()
        self._pending: list[bytes] = []
        self._next_id = 0

    @classmethod
    async def connect(cls, socket_path: str, data_dir: str) -> ApiClient:
        try:
            stream = await trio.open_unix_socket(socket_path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(data_dir) from None
        except PermissionError:
            raise ApiError(f"no permission to use {socket_path} (is it your daemon?)") from None
        return cls(stream)

    async def call(self, op: str, **args: Any) -> Any:
        self._next_id += 1
        await self._stream.send_all(encode_frame({"id": self._next_id, "op": op, **args}))
        while not self._pending:
            data = await self._stream.receive_some(65536)
            if not data:
                raise ApiError("the daemon closed the connection")
            self._pending.extend(self._reader.feed(data))
        reply = decode_body(self._pending.pop(0))
        if not reply.get("ok"):
            raise ApiError(str(reply.get("error", "unknown error")))
        return reply.get("result")

    async def aclose(self) -> None:
        await self._stream.aclose()
