"""Errors of the directory role, each a one-line message a user or an uploading node can act on."""

from __future__ import annotations

from mixcore.errors import MixnetError


class DirectoryError(MixnetError):
    """Base class of the directory's own errors."""


class DirectoryConfigError(DirectoryError):
    """The authority's configuration file is missing, malformed or inconsistent."""


class StoreError(DirectoryError):
    """The SQLite store refused an operation (e.g. a second, different signature for an epoch)."""


class DescriptorRejected(DirectoryError):
    """An uploaded descriptor was refused. ``status`` is the HTTP status the API answers with.

    The message is one line naming the failed check, and never echoes the uploaded bytes.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
