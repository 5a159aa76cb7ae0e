"""Errors of the messenger layer, phrased for the person at the keyboard (the CLI prints them
as they are). None carries message content or key material."""

from __future__ import annotations

from mixcore.errors import MixnetError


class MessengerError(MixnetError):
    """Base class of the messenger's errors."""


class UnknownContact(MessengerError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown contact {name!r} (see: mixnet contact list; add one with: "
            "mixnet contact add CARD --name NAME)"
        )


class UnknownGroup(MessengerError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown group {name!r} (see: mixnet group list)")


class MessageTooLong(MessengerError):
    """The encrypted message would exceed what the transport accepts in one message."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message too long: {size} bytes after encryption, the transport carries at most "
            f"{limit} bytes per message"
        )
        self.size = size
        self.limit = limit


class InnerFormatError(MessengerError):
    """Decrypted bytes that are not a well-formed inner message."""
