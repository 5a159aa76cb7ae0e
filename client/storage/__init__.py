"""The client's encrypted local store (SQLite, every sensitive value sealed with
ChaCha20-Poly1305 under a data key wrapped by an Argon2id passphrase key). The only module of
the client that speaks SQL. See ``docs/e2e.md``, section "Local store"."""

from client.storage.errors import (
    StoreCorrupted,
    StoreError,
    StoreExists,
    StoreLocked,
    StoreMissing,
    WrongPassphrase,
)
from client.storage.store import KdfParams, Sealer, Store, throttle_delay

__all__ = [
    "KdfParams",
    "Sealer",
    "Store",
    "StoreCorrupted",
    "StoreError",
    "StoreExists",
    "StoreLocked",
    "StoreMissing",
    "WrongPassphrase",
    "throttle_delay",
]
