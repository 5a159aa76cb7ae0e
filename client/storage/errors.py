"""Errors of the local store; all are :class:`mixcore.errors.MixnetError` subclasses and none
carries secret material."""

from __future__ import annotations

from mixcore.errors import MixnetError


class StoreError(MixnetError):
    """Base class of the local store's errors."""


class WrongPassphrase(StoreError):
    """The passphrase does not unlock the store (nothing was changed but the failure count)."""

    def __init__(self, failures: int, next_delay: float) -> None:
        super().__init__(
            f"wrong passphrase ({failures} failed attempt{'s' if failures != 1 else ''} in a row;"
            f" the next attempt will wait {next_delay:g} s)"
        )
        self.failures = failures
        self.next_delay = next_delay


class StoreCorrupted(StoreError):
    """A sealed row or the store's header failed its integrity check: tampered, truncated,
    moved to another row, or not a store of this format."""


class StoreRolledBack(StoreCorrupted):
    """The store is older than the write counter kept next to it (an older copy put back, a
    restored backup), or that counter file is missing, forged or another store's."""


class StoreExists(StoreError):
    """``Store.create`` on a path that already exists."""


class StoreMissing(StoreError):
    """``Store.open`` on a path with no store."""


class StoreLocked(StoreError):
    """The database file is readable by other users, or the store is closed."""
