"""The primitives every part of the end-to-end layer composes, in one place so the published
test vectors are checked against exactly these calls.

* X25519 (RFC 7748) for every Diffie-Hellman;
* HKDF-SHA256 (RFC 5869) for every key derivation;
* ChaCha20-Poly1305 (RFC 8439) for every AEAD;
* HMAC-SHA256 for the symmetric-key ratchet (as the Double Ratchet specification recommends).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.e2e.errors import MessageError

KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


class AeadError(MessageError):
    """An AEAD open failed: wrong key, tampered ciphertext or associated data."""


def hkdf(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-and-expand."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def x25519_generate() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw bytes ``(secret, public)``."""
    private = X25519PrivateKey.generate()
    return (
        private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC),
        private.public_key().public_bytes(_RAW, _RAW_PUB),
    )


def x25519_public(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(_RAW, _RAW_PUB)


def x25519(secret: bytes, public: bytes) -> bytes:
    """The X25519 function on raw bytes. Raises :class:`MessageError` for a low-order peer key
    (all-zero output), which ``cryptography`` refuses."""
    try:
        return X25519PrivateKey.from_private_bytes(secret).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError:
        raise MessageError("invalid X25519 public key") from None


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305: ciphertext || 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    if len(ciphertext) < TAG_LEN:
        raise AeadError("ciphertext shorter than its tag")
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise AeadError("authentication failed") from None


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def pad(data: bytes, bucket: int) -> bytes:
    """ISO/IEC 7816-4 padding (0x80 then zeros) up to the next multiple of ``bucket``."""
    total = (len(data) // bucket + 1) * bucket
    return data + b"\x80" + bytes(total - len(data) - 1)


def unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80:
        raise MessageError("bad padding")
    return stripped[:-1]
