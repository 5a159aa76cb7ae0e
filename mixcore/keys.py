"""Long-term and per-epoch keys, and the key files that hold them.

* :class:`IdentityKey` (Ed25519): signs a node's descriptors and an authority's consensus votes.
* :class:`LinkKey` (X25519): the Noise static key of a node's links; a client's link key is its
  mailbox credential at its provider.
* Sphinx mix keys are per epoch and live in :mod:`mixcore.sphinx` (the only module that touches
  the Sphinx group); :func:`save_secret` / :func:`load_secret` store them like the others.

Key files are JSON, written atomically with mode 0600. Loading refuses a private key file that
any other user could read (as OpenSSH does), with a message saying how to fix it. Secrets never
appear in ``repr`` or in exception messages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mixcore.errors import KeyFileError, SignatureError
from mixcore.files import exposure, write_atomic

KEY_FILE_VERSION = 1
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


def short_id(public: bytes) -> str:
    """A short, printable fingerprint for logs and reprs (not a security boundary)."""
    return public[:6].hex()


class IdentityKey:
    """An Ed25519 signing key pair."""

    __slots__ = ("_private", "public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public: bytes = private.public_key().public_bytes(_RAW, _RAW_PUB)

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> IdentityKey:
        if len(secret) != 32:
            raise KeyFileError("an Ed25519 secret key is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(secret))

    def secret_bytes(self) -> bytes:
        return self._private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"IdentityKey({short_id(self.public)}…)"


def verify_signature(public: bytes, signature: bytes, message: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ``public``'s over ``message``."""
    if len(public) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        raise SignatureError("malformed key or signature length")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise SignatureError(f"bad signature for key {short_id(public)}") from None


def signature_valid(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        verify_signature(public, signature, message)
    except SignatureError:
        return False
    return True


class LinkKey:
    """An X25519 key pair used as a Noise static key."""

    __slots__ = ("_private", "public")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public: bytes = private.public_key().public_bytes(_RAW, _RAW_PUB)

    @classmethod
    def generate(cls) -> LinkKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> LinkKey:
        if len(secret) != 32:
            raise KeyFileError("an X25519 secret key is 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(secret))

    def secret_bytes(self) -> bytes:
        return self._private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)

    def __repr__(self) -> str:
        return f"LinkKey({short_id(self.public)}…)"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What a key file holds: its kind, the secret, and optionally the epoch it is for."""

    kind: str
    secret: bytes
    epoch: int | None = None

    def __repr__(self) -> str:
        return f"StoredKey(kind={self.kind!r}, epoch={self.epoch!r}, secret=<redacted>)"


def save_secret(path: str | os.PathLike[str], stored: StoredKey) -> None:
    """Write a key file atomically with mode 0600 (never briefly readable by others)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": KEY_FILE_VERSION, "kind": stored.kind, "secret": stored.secret.hex()}
    if stored.epoch is not None:
        body["epoch"] = stored.epoch
    write_atomic(path, (json.dumps(body) + "\n").encode())


def load_secret(path: str | os.PathLike[str], kind: str | tuple[str, ...]) -> StoredKey:
    """Read a key file of ``kind`` (or of one of several kinds); refuse it if others may read it
    or it is malformed."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    problem = exposure(path, st, "key file")
    if problem:
        raise KeyFileError(problem)
    try:
        body = json.loads(path.read_text())
        version, file_kind, secret_hex = body["version"], body["kind"], body["secret"]
        epoch = body.get("epoch")
        secret = bytes.fromhex(secret_hex)
    except (OSError, ValueError, KeyError, TypeError):
        raise KeyFileError(f"key file {path} is not a valid mixnet key file") from None
    if version != KEY_FILE_VERSION:
        raise KeyFileError(f"key file {path} has unsupported version {version!r}")
    kinds = (kind,) if isinstance(kind, str) else kind
    if file_kind not in kinds:
        expected = " or ".join(repr(k) for k in kinds)
        raise KeyFileError(f"key file {path} holds a {file_kind!r} key, expected {expected}")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool)):
        raise KeyFileError(f"key file {path} has a malformed epoch")
    return StoredKey(kind=file_kind, secret=secret, epoch=epoch)


def save_identity_key(path: str | os.PathLike[str], key: IdentityKey) -> None:
    save_secret(path, StoredKey("ed25519-identity", key.secret_bytes()))


def load_identity_key(path: str | os.PathLike[str]) -> IdentityKey:
    return IdentityKey.from_secret(load_secret(path, "ed25519-identity").secret)


def save_link_key(path: str | os.PathLike[str], key: LinkKey) -> None:
    save_secret(path, StoredKey("x25519-link", key.secret_bytes()))


def load_link_key(path: str | os.PathLike[str]) -> LinkKey:
    return LinkKey.from_secret(load_secret(path, "x25519-link").secret)
