"""The store's cryptography: the Argon2id passphrase KDF, the row sealer (ChaCha20-Poly1305
under keys derived from the data key, padding to power-of-two buckets), the keyed index
hashes, the integrity-record entries and the counter MAC. No SQL here (``store.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.storage.errors import StoreCorrupted, StoreError
from mixcore.encoding import expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError

FORMAT_VERSION = 2
KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
ROW_KEY_LEN = 16
FINGERPRINT_LEN = 16
MIN_BUCKET = 256
THROTTLE_BASE = 1.0
THROTTLE_MAX = 300.0
MIN_MEMORY_KIB = 19 * 1024  # OWASP's floor for Argon2id
MIN_ITERATIONS = 2
WRAP_CONTEXT = "mixnet-store-key-v2"
ROW_CONTEXT = "mixnet-store-row-v2"
STATE_CONTEXT = "mixnet-store-state-v2"
COUNTER_CONTEXT = "mixnet-store-counter-v2"


def throttle_delay(failures: int) -> float:
    """Seconds to wait before an unlock attempt after ``failures`` wrong ones in a row."""
    if failures <= 0:
        return 0.0
    return min(THROTTLE_BASE * 2.0 ** min(failures - 1, 30), THROTTLE_MAX)


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters (RFC 9106's second recommended option is 64 MiB, t=3, p=4).

    ``create`` and ``change_passphrase`` refuse parameters below OWASP's floor (19 MiB, 2
    passes) unless they carry ``insecure_for_tests`` (only the tests set it, to 32 KiB and one
    pass; no configuration file or command line reaches it)."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4
    insecure_for_tests: bool = field(default=False, compare=False, repr=False)

    def check(self) -> None:
        if not (8 * self.lanes <= self.memory_kib <= 4 * 1024 * 1024):
            raise StoreCorrupted("store header: Argon2id memory out of range")
        if not (1 <= self.iterations <= 64 and 1 <= self.lanes <= 64):
            raise StoreCorrupted("store header: Argon2id iterations or lanes out of range")

    def check_strength(self) -> None:
        self.check()
        weak = self.memory_kib < MIN_MEMORY_KIB or self.iterations < MIN_ITERATIONS
        if weak and not self.insecure_for_tests:
            raise StoreError(
                f"Argon2id parameters below the minimum ({MIN_MEMORY_KIB} KiB, "
                f"{MIN_ITERATIONS} passes): refusing to protect a store with them"
            )

    def derive(self, passphrase: str | bytes, salt: bytes) -> bytes:
        secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
        return Argon2id(
            salt=salt,
            length=KEY_LEN,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        ).derive(secret)


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=info).derive(key)


def bucket(n: int) -> int:
    """The padded length of ``n`` bytes: the next power of two, at least :data:`MIN_BUCKET`."""
    return max(MIN_BUCKET, 1 << max(n - 1, 0).bit_length())


def _pad(data: bytes) -> bytes:
    size = bucket(len(data) + 1)
    return data + b"\x80" + bytes(size - len(data) - 1)


def _unpad(data: bytes) -> bytes:
    end = data.rstrip(b"\x00")
    if not end or end[-1] != 0x80:
        raise DecodeError("bad padding")
    return end[:-1]


def fingerprint(sealed: bytes) -> bytes:
    return hashlib.blake2b(sealed, digest_size=FINGERPRINT_LEN).digest()


class Sealer:
    """Seals and opens rows, the state and the counter under keys derived from the data key."""

    __slots__ = ("_aead", "_counter_key", "_index_key", "_integrity_key", "_state", "store_id")

    def __init__(self, data_key: bytes, store_id: bytes) -> None:
        self._aead = ChaCha20Poly1305(_hkdf(data_key, b"mixnet-store-rows-v2"))
        self._state = ChaCha20Poly1305(_hkdf(data_key, b"mixnet-store-state-v2"))
        self._index_key = _hkdf(data_key, b"mixnet-store-index-v2")
        self._integrity_key = _hkdf(data_key, b"mixnet-store-integrity-v2")
        self._counter_key = _hkdf(data_key, b"mixnet-store-counter-v2")
        self.store_id = store_id

    def index(self, label: str, value: str) -> bytes:
        msg = label.encode() + b"\x00" + value.encode("utf-8")
        return hmac.new(self._index_key, msg, hashlib.sha256).digest()[:ROW_KEY_LEN]

    def row_key(self, table: str, row_id: str) -> bytes:
        return self.index(table, row_id)

    def _ad(self, table: str, cols: list[bytes]) -> bytes:
        return pack([ROW_CONTEXT, FORMAT_VERSION, self.store_id, table, *cols])

    def seal(self, table: str, cols: list[bytes], body: list[Any]) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, _pad(pack(body)), self._ad(table, cols))

    def open(self, table: str, cols: list[bytes], sealed: Any, fields: int) -> list[Any]:
        """Authenticate and open a row; :class:`StoreCorrupted` on any mismatch."""
        where = f"a row of table {table!r}"
        if not isinstance(sealed, bytes) or len(sealed) < NONCE_LEN + TAG_LEN:
            raise StoreCorrupted(f"{where} is truncated or not a sealed value")
        try:
            plain = self._aead.decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:],
                                       self._ad(table, cols))
        except InvalidTag:
            raise StoreCorrupted(
                f"{where} failed authentication (tampered, truncated or moved from another row)"
            ) from None
        try:
            return expect_list(unpack_canonical(_unpad(plain), max_bytes=1 << 30), fields, "row")
        except DecodeError:
            raise StoreCorrupted(f"{where} has a malformed body") from None

    def entry(self, table: str, cols: list[bytes], fp: bytes) -> int:
        mac = hmac.new(self._integrity_key, pack([table, *cols, fp]), hashlib.sha256).digest()
        return int.from_bytes(mac, "big")

    def seal_state(self, state: list[Any]) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._state.encrypt(nonce, pack(state), pack([STATE_CONTEXT,
                                                                     self.store_id]))

    def open_state(self, sealed: bytes) -> Any:
        try:
            plain = self._state.decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:],
                                        pack([STATE_CONTEXT, self.store_id]))
            return unpack_canonical(plain)
        except (InvalidTag, DecodeError, TypeError):
            raise StoreCorrupted(
                "the store's integrity record failed authentication (tampered, or the key wrap "
                "of another copy of the store was put in)"
            ) from None

    def counter_mac(self, counter: int) -> bytes:
        return hmac.new(self._counter_key, pack([COUNTER_CONTEXT, self.store_id, counter]),
                        hashlib.sha256).digest()


def wrap_ad(params: KdfParams, salt: bytes, store_id: bytes) -> bytes:
    return pack(
        [
            WRAP_CONTEXT,
            FORMAT_VERSION,
            store_id,
            salt,
            params.memory_kib,
            params.iterations,
            params.lanes,
        ]
    )
