"""The daemon's API for the chat screen. textual runs on asyncio, the rest of the client on
trio; this speaks the same frames (``client.api``) over an asyncio Unix-socket connection, one
connection per call so a daemon restart costs nothing but a failed refresh."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from client.api import ApiError, DaemonNotRunning, FrameReader, decode_body, encode_frame
from client.daemon_config import socket_of


class ChatApi(Protocol):
    async def call(self, op: str, **args: Any) -> Any: ...


class DaemonApi:
    """:class:`ChatApi` over the running daemon's socket in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.socket_path = socket_of(data_dir)

    async def call(self, op: str, **args: Any) -> Any:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(str(self.data_dir)) from None
        try:
            writer.write(encode_frame({"id": 1, "op": op, **args}))
            await writer.drain()
            frames = FrameReader()
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ApiError("the daemon closed the connection")
                got = frames.feed(data)
                if got:
                    reply = decode_body(got[0])
                    break
        finally:
            writer.close()
        if not reply.get("ok"):
            raise ApiError(str(reply.get("error", "unknown error")))
        return reply.get("result")
