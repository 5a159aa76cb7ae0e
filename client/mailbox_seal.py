"""Sealing every item a provider stores to the mailbox owner's key, so no field is in the clear.

A provider stores what reaches a mailbox and hands it over on the next pull. Before this seal the
fragment header (kind, message id, index, count, chunk length) was plaintext there: a loop was
always ``count=1`` of a full chunk, a real message rarely, and one message's fragments shared an
id. Now every mailbox item is, whatever it carries (a fragment of a 1:1 or group message, a first
message, a receipt, or the owner's own loop)::

    ephemeral X25519 public key (32) | ChaCha20-Poly1305(k, nonce 0, inner) (len(inner) + 16)

with ``k = HKDF-SHA256(X25519(e, M), salt = E || M, info = "mixnet-mailbox-item-v1")`` where
``M`` is the mailbox's sealing public key (from the owner's contact card) and ``E`` the
ephemeral public key as sent. A fresh ephemeral key per item (also per retransmission) makes
the key unique, so the fixed nonce is safe, and two sealings of one fragment share no byte.
The top bit of ``E`` (which X25519 ignores, RFC 7748 section 5) is drawn at random, so no
bit position is constant across items. Every sealed item has the same length, so a provider
sees equal-length, uniformly random-looking strings.

The mailbox sealing key is derived from the client's link (Noise static) key with HKDF under
its own label: one secret to keep, two independent keys (the link key never seals, the sealing
key never authenticates a link).
"""

from __future__ import annotations

from collections.abc import Callable
from secrets import token_bytes

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from client.errors import ClientError
from mixcore.keys import LinkKey

MAILBOX_KEY_LEN = 32
SEAL_OVERHEAD = 32 + 16
"""Bytes a seal adds: the ephemeral public key and the AEAD tag."""

_ITEM_INFO = b"mixnet-mailbox-item-v1"
_KEY_INFO = b"mixnet-mailbox-seal-key-v1"
_NONCE = bytes(12)


class SealError(ClientError):
    """An item that does not open under our mailbox key (forged, for someone else, damaged)."""


def _item_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=_ITEM_INFO).derive(shared)


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def seal(
    recipient: bytes, inner: bytes, *, randbytes: Callable[[int], bytes] = token_bytes
) -> bytes:
    """``inner`` sealed to the mailbox public key ``recipient`` (``len(inner) + 48`` bytes).
    ``randbytes`` gives the bit that hides the ephemeral key's unused top bit."""
    if len(recipient) != MAILBOX_KEY_LEN:
        raise ClientError(f"a mailbox key is {MAILBOX_KEY_LEN} bytes")
    ephemeral = X25519PrivateKey.generate()
    public = bytearray(_raw_public(ephemeral))
    public[31] |= randbytes(1)[0] & 0x80  # X25519 ignores this bit: make it carry nothing
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    except ValueError:  # a low-order point: the key in the card is not a real key
        raise ClientError("the recipient's mailbox key is not a usable X25519 key") from None
    key = _item_key(shared, bytes(public), recipient)
    return bytes(public) + ChaCha20Poly1305(key).encrypt(_NONCE, inner, None)


class MailboxKey:
    """The X25519 key pair that opens what is stored in one's own mailbox."""

    __slots__ = ("_private", "public")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public: bytes = _raw_public(private)

    @classmethod
    def generate(cls) -> MailboxKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_link_key(cls, link_key: LinkKey) -> MailboxKey:
        """The sealing key belonging to a client's link key (deterministic, domain-separated)."""
        secret = HKDF(hashes.SHA256(), 32, salt=None, info=_KEY_INFO).derive(
            link_key.secret_bytes()
        )
        return cls(X25519PrivateKey.from_private_bytes(secret))

    def open(self, item: bytes) -> bytes:
        """The inner bytes of a sealed ``item``; :class:`SealError` if it does not open."""
        if len(item) < SEAL_OVERHEAD:
            raise SealError("a sealed item is shorter than its overhead")
        ephemeral = item[:32]
        masked = ephemeral[:31] + bytes([ephemeral[31] & 0x7F])
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(masked))
        except ValueError:
            raise SealError("a sealed item with a low-order ephemeral key") from None
        key = _item_key(shared, ephemeral, self.public)
        try:
            return ChaCha20Poly1305(key).decrypt(_NONCE, item[32:], None)
        except InvalidTag:
            raise SealError("a sealed item that does not open under this mailbox key") from None

    def __repr__(self) -> str:
        return f"MailboxKey({self.public[:4].hex()}…)"
