"""The client's encrypted local store (SQLite, every sensitive value sealed with
ChaCha20-Poly1305 under a data key wrapped by an Argon2id passphrase key). The only module of
the client that speaks SQL. See ``docs/e2e.md``, section "Local store"."""

from client.storage.errors import (
    StoreCorrupted,
    StoreError,
    StoreExists,
    StoreLocked,
    StoreMissing,
    StoreRolledBack,
    WrongPassphrase,
)
from client.storage.sealing import KdfParams, Sealer, throttle_delay
from client.storage.store import Store

__all__ = [
    "KdfParams",
    "Sealer",
    "Store",
    "StoreCorrupted",
    "StoreError",
    "StoreExists",
    "StoreLocked",
    "StoreMissing",
    "StoreRolledBack",
    "WrongPassphrase",
    "throttle_delay",
]
