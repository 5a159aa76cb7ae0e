"""The project's exception types.

Every decoder and verifier in ``mixcore`` raises only subclasses of :class:`MixnetError` on bad
input, so callers (and the fuzz tests) can tell "the peer sent garbage" from "we have a bug".
Messages name the field or check that failed and never include secret material.
"""

from __future__ import annotations


class MixnetError(Exception):
    """Base class of every error the protocol core raises on purpose."""


class ParamsError(MixnetError, ValueError):
    """A network parameter is out of range; the message names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid parameter {field!r}: {reason}")
        self.field = field


class ParamsFileError(MixnetError):
    """A params file is missing, not JSON, or holds invalid parameters (the message says which)."""


class DecodeError(MixnetError):
    """Bytes that do not parse as the expected canonical structure."""


class PacketError(MixnetError):
    """A Sphinx packet that cannot be parsed or processed."""


class MalformedPacket(PacketError):
    """Wrong length, unknown version or an invalid group element."""


class WrongSuitePacket(MalformedPacket):
    """A packet of another Sphinx suite than the network's (its version byte names it)."""


class HeaderMacError(PacketError):
    """The header MAC did not verify at this hop (tampered header or wrong key)."""


class BodyMacError(PacketError):
    """The payload's integrity check failed at delivery (tampered body)."""


class RoutingError(PacketError):
    """The routing command inside the header is not well formed."""


class SurbError(MixnetError):
    """A SURB or a reply to it is malformed or does not decrypt."""


class SignatureError(MixnetError):
    """A signature does not verify under the expected key."""


class KeyFileError(MixnetError):
    """A key file is missing, malformed, of the wrong kind, or has unsafe permissions."""


class ConsensusError(MixnetError):
    """A consensus document is not acceptable (threshold, epoch, encoding)."""


class DescriptorError(MixnetError):
    """A node descriptor is malformed or fails its checks."""


class LinkError(MixnetError):
    """A link broke: bad handshake, bad cell, closed by the peer, or timed out."""


class InvalidCellError(LinkError, ValueError):
    """The caller asked to send a cell that cannot be sent (body too long, a packet of the wrong
    size, a kind out of range). Nothing was encrypted and the link remains usable."""


class LinkHandshakeError(LinkError):
    """The Noise handshake failed (wrong static key, garbage, or a protocol violation)."""


class LinkTimeout(LinkError):
    """The handshake did not finish within its deadline."""


class LinkClosed(LinkError):
    """The peer closed the link (cleanly or mid-cell)."""
