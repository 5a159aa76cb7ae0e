"""Errors the client core raises at its caller (the daemon, or a test).

Only the user's own mistakes and impossible requests raise: a message that is too large, a queue
that is full, a malformed address. (A recipient whose provider the consensus does not list is
not refused: the message waits ``provider_grace`` for it, then fails as undeliverable.)
Anything a peer sends is never raised; it is dropped and counted in ``statistics()`` instead,
so garbage from the network cannot stop the client.
"""

from __future__ import annotations

from mixcore.errors import MixnetError


class ClientError(MixnetError):
    """Base class of the client core's errors."""


class MessageTooLarge(ClientError, ValueError):
    """The encoded message needs more fragments than ``max_message_fragments`` allows."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message of {size} bytes after encoding is too large: the limit is {limit} bytes"
        )
        self.size = size
        self.limit = limit


class QueueFull(ClientError):
    """Queuing the message would exceed ``max_pending_fragments`` unacknowledged fragments."""

    def __init__(self, needed: int, pending: int, limit: int) -> None:
        super().__init__(
            f"send queue full: the message needs {needed} fragments, {pending} of "
            f"{limit} are pending; wait for acknowledgements and retry"
        )
        self.needed = needed
        self.pending = pending
        self.limit = limit


class NoRouteError(ClientError):
    """No path can be built from the current consensus (a missing provider or an empty layer)."""


class FragmentError(ClientError):
    """Bytes that are not a well-formed fragment (forged, truncated or padded wrongly)."""


class ConsensusMismatch(ClientError):
    """A new consensus changes the packet geometry, which a running client cannot follow."""


class ArqProtocolError(ClientError):
    """A fragment was driven through a transition its state table does not allow (a bug)."""
