"""The payload seam: what turns a user's message into the bytes that get fragmented.

The transport moves opaque bytes to a mailbox. The end-to-end layer (X3DH + Double Ratchet)
will implement :class:`MessageCodec` and be passed to the core in place of
:class:`PlaintextCodec`; nothing else in the transport changes. ``decode`` sees the reassembled
bytes of a complete message and may raise :class:`CodecError` for anything it rejects; the core
counts that as a drop and moves on.
"""

from __future__ import annotations

from typing import Protocol

from client.errors import ClientError


class CodecError(ClientError):
    """Reassembled bytes the codec refuses (not for us, forged, undecryptable)."""


class MessageCodec(Protocol):
    def encode(self, provider: bytes, mailbox: bytes, message: bytes) -> bytes:
        """The bytes to fragment for a message to ``mailbox`` at ``provider``."""
        ...

    def decode(self, data: bytes) -> bytes:
        """The message carried by reassembled ``data``; :class:`CodecError` if unacceptable."""
        ...


class PlaintextCodec:
    """No end-to-end protection yet: the bytes are the message (until the ratchet lands)."""

    def encode(self, provider: bytes, mailbox: bytes, message: bytes) -> bytes:
        return bytes(message)

    def decode(self, data: bytes) -> bytes:
        return data
