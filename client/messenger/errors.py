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


class RecipientWouldRefuse(MessengerError):
    """The message breaks a limit the recipient's decoder enforces (checked before sending,
    with the very same decoder, so nothing is sent that would be dropped on arrival)."""


class TextTooLong(MessageTooLong, RecipientWouldRefuse):
    """A text with more characters than a recipient's decoder accepts."""

    def __init__(self, length: int, limit: int) -> None:
        MessengerError.__init__(
            self, f"message too long: {length:,} characters; a recipient accepts at most "
                  f"{limit:,} characters per message"
        )
        self.size = length
        self.limit = limit
