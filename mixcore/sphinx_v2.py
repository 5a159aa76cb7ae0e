"""Sphinx suite v2 (``sphinx-v2-x25519``): our own construction over X25519.

Why a second suite (v1 stays sphinxmix's, byte for byte): sphinxmix's blinding factors are 128
bits wide, one key serves both the body MAC and the LIONESS body cipher, its key derivation has
no domain separation, and its ``create_header`` costs a sender several times its point
multiplications. This suite fixes all four; ``docs/protocol.md`` §3 specifies it byte by byte
and ``docs/decisions.md`` records why X25519 (measured against P-256 and libsodium).

The group is Curve25519 in its x-only (Montgomery) form, used through X25519 (RFC 7748):

* a node's mix key is a 32-byte X25519 secret ``a``; its public key ``A = X25519(a, 9)``;
* a hop computes ``s = X25519(a, alpha)`` and, when it relays, the next
  ``alpha' = X25519(b, alpha)`` with the blinding factor ``b`` derived from ``s``: a full
  32-byte X25519 scalar (251 bits after clamping, where sphinxmix uses 128);
* the sender does not blind sequentially (``i + 1`` multiplications for hop ``i``, as
  Katzenpost does with X25519); it multiplies the clamped scalars modulo the group order
  ``l`` and, for each hop, writes the product as a clamped scalar ``k`` with ``k = +-c (mod l)``
  (the x-coordinate of ``-P`` is that of ``P``; a product that fits neither sign has
  probability ~2^-125 and just restarts with a fresh ``x``). A 5-hop header then costs one
  fixed-base and five variable-base multiplications.

Clamped scalars are multiples of 8, so a small-order component added to an alpha vanishes: such
a packet yields exactly the honest packet's shared secret, replay tag and output (the replay
filter drops the second copy), and tells nobody anything. A non-canonical alpha (``>= 2^255-19``)
is refused outright, and one of small order makes the X25519 result zero, which both libraries
refuse.

Key schedule: ``KDF(label, ikm, n) = SHAKE256(suite name | 0x00 | label | 0x00 | ikm)[:n]``. A
hop's keys are ``KDF("hop", s, 128)`` split into the header stream key (16, AES-128-CTR), the
header MAC key (32, BLAKE2b-128), the replay tag (16), the blinding factor (32), the LIONESS body
key (16) and the body MAC key (16): the body MAC no longer shares the cipher's key. LIONESS is
the textbook four-round construction (Anderson and Biham) over ``L (16) | R``:
``R ^= AES-CTR(K1 ^ L)``, ``L ^= BLAKE2b-128_K2(R)``, ``R ^= AES-CTR(K3 ^ L)``,
``L ^= BLAKE2b-128_K4(R)``, its round keys ``KDF("lioness", key, 64)``.

This module is the suite's core: bytes in, bytes out. :mod:`mixcore.sphinx` wraps it in the
packet API that both suites share, and passes in the AES implementation (the OpenSSL contexts
it reuses), so only that module touches petlib.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from secrets import token_bytes
from typing import NamedTuple, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from mixcore.params import SPHINX_SUITE_V2

NAME = SPHINX_SUITE_V2
VERSION = 2
#: alpha: an X25519 u-coordinate, little-endian, canonical (< 2^255 - 19).
ALPHA_LEN = 32
PUBLIC_KEY_LEN = 32
SECRET_KEY_LEN = 32
K = 16

P = 2**255 - 19
#: Order of Curve25519's prime-order subgroup.
L = 2**252 + 27742317777372353535851937790883648493
_INV8 = pow(8, -1, L)
_A = 486662
#: u-coordinates of the points of small order (canonical encodings): a public key may not be one.
LOW_ORDER_U = frozenset(
    {
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        P - 1,
    }
)
_HOP_KEYS_LEN = 16 + 32 + 16 + 32 + 16 + 16


class Aes(Protocol):
    def ctr(self, key: bytes, iv: bytes, data: bytes) -> bytes: ...


class HopKeys(NamedTuple):
    """What one shared secret yields (see the module docstring for the layout)."""

    header: bytes
    header_mac: bytes
    replay_tag: bytes
    blinding: bytes
    body: bytes
    body_mac: bytes


class RetryHeader(Exception):
    """A scalar product fits no clamped scalar (probability ~2^-125): draw a fresh ``x``."""


def kdf(label: bytes, ikm: bytes, n: int) -> bytes:
    """Domain-separated derivation: the suite's name and a label, then the input key material."""
    return hashlib.shake_256(NAME.encode() + b"\x00" + label + b"\x00" + ikm).digest(n)


def hop_keys(shared: bytes) -> HopKeys:
    m = kdf(b"hop", shared, _HOP_KEYS_LEN)
    return HopKeys(m[:16], m[16:48], m[48:64], m[64:96], m[96:112], m[112:128])


def mac(key: bytes, data: bytes) -> bytes:
    """BLAKE2b keyed, 16-byte output: header MAC and body MAC."""
    return hashlib.blake2b(data, key=key, digest_size=K).digest()


def clamp(scalar: bytes) -> int:
    """The integer X25519 multiplies by for a 32-byte scalar (RFC 7748 ``decodeScalar25519``)."""
    n = int.from_bytes(scalar, "little")
    return (n & ~7 & ((1 << 255) - 1)) | (1 << 254)


def clamped_representative(c: int) -> bytes:
    """A 32-byte scalar ``k`` whose clamped value is ``+-c mod l`` (raises :class:`RetryHeader`
    in the ~2^-125 case where neither sign fits)."""
    for sign in (c, -c):
        m = ((sign - (1 << 254)) * _INV8) % L
        if m < 1 << 251:
            return ((1 << 254) + 8 * m).to_bytes(32, "little")
    raise RetryHeader


def is_canonical_u(data: bytes) -> bool:
    return len(data) == 32 and int.from_bytes(data, "little") < P


def is_valid_public_key(data: bytes) -> bool:
    """32 canonical bytes of a point on the curve (not its twist), not of small order."""
    if not isinstance(data, bytes) or not is_canonical_u(data):
        return False
    u = int.from_bytes(data, "little")
    if u in LOW_ORDER_U:
        return False
    v = (u * u * u + _A * u * u + u) % P  # on the curve iff v is a square mod p
    return pow(v, (P - 1) // 2, P) == 1


def _xor16(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(K, "little")


class SecretKey:
    """A node's X25519 mix key; the secret never appears in repr or errors."""

    __slots__ = ("_private", "_secret", "public")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_KEY_LEN:
            raise ValueError(f"an X25519 mix secret is {SECRET_KEY_LEN} bytes")
        self._secret = secret
        self._private = X25519PrivateKey.from_private_bytes(secret)
        self.public = self._private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes] = token_bytes) -> SecretKey:
        return cls(randbytes(SECRET_KEY_LEN))

    def secret_bytes(self) -> bytes:
        return self._secret

    def exchange(self, alpha: bytes) -> bytes:
        """``X25519(a, alpha)``; ValueError for a point of small order (zero result)."""
        shared = x25519(self._secret, alpha)
        if shared is None:
            raise ValueError("X25519 result is zero (a point of small order)")
        return shared


def x25519(scalar: bytes, u: bytes) -> bytes | None:
    """libsodium's ``crypto_scalarmult`` without PyNaCl's wrapper (a hop makes two calls);
    None when the result is zero, which libsodium refuses (``u`` of small order)."""
    out = _ffi.new("unsigned char[32]")
    if _lib.crypto_scalarmult(out, scalar, u):
        return None
    result: bytes = _ffi.buffer(out, 32)[:]
    return result


class Core:
    """Header and body work of the suite for one geometry (``beta_len``, ``body_len``)."""

    def __init__(self, beta_len: int, layer_len: int, aes: Callable[[], Aes]) -> None:
        self.beta_len = beta_len
        self.layer_len = layer_len
        """Bytes a relay hop's layer takes in beta: length byte, RELAY command, next gamma."""
        self._aes = aes
        self.urandom: Callable[[int], bytes] = token_bytes
        """Where ``x`` and the exit layer's padding come from (test vectors replace it)."""
        self._zero_iv = bytes(K)
        self._layer_pad = bytes(layer_len)

    # -- body --------------------------------------------------------------------------------

    def _round_keys(self, key: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        m = kdf(b"lioness", key, 4 * K)
        return m[:16], m[16:32], m[32:48], m[48:64]

    def lioness_enc(self, key: bytes, message: bytes) -> bytes:
        k1, k2, k3, k4 = self._round_keys(key)
        aes, iv = self._aes(), self._zero_iv
        left, right = message[:K], message[K:]
        right = aes.ctr(_xor16(k1, left), iv, right)
        left = _xor16(left, mac(k2, right))
        right = aes.ctr(_xor16(k3, left), iv, right)
        left = _xor16(left, mac(k4, right))
        return left + right

    def lioness_dec(self, key: bytes, message: bytes) -> bytes:
        k1, k2, k3, k4 = self._round_keys(key)
        aes, iv = self._aes(), self._zero_iv
        left, right = message[:K], message[K:]
        left = _xor16(left, mac(k4, right))
        right = aes.ctr(_xor16(k3, left), iv, right)
        left = _xor16(left, mac(k2, right))
        right = aes.ctr(_xor16(k1, left), iv, right)
        return left + right

    # -- header ------------------------------------------------------------------------------

    def create_header(
        self,
        public_keys: Sequence[bytes],
        relays: Sequence[bytes],
        final: bytes,
    ) -> tuple[bytes, list[HopKeys]]:
        """``alpha | beta | gamma`` for a path of ``len(public_keys)`` hops, and every hop's keys.

        ``relays[i]`` is hop ``i``'s length-prefixed RELAY command naming hop ``i + 1``;
        ``final`` the exit's length-prefixed final command. ``x`` and the exit layer's random
        padding come from :attr:`urandom`.
        """
        n = len(public_keys)
        pad_len = self.beta_len - (n - 1) * self.layer_len - len(final)
        if n < 1 or len(relays) != n - 1 or pad_len < 0:
            raise ValueError("path does not fit the header")
        while True:
            try:
                alpha, keys = self._hop_secrets(self.urandom(32), public_keys)
                break
            except RetryHeader:
                continue
        aes, zero = self._aes(), self._zero_iv
        streams = [aes.ctr(k.header, zero, bytes(self.beta_len + self.layer_len)) for k in keys]
        # Filler: what the hops after the first will find beyond the end of beta.
        filler = b""
        for i in range(1, n):
            block = filler + self._layer_pad
            start = self.beta_len - (i - 1) * self.layer_len
            stream = streams[i - 1][start : start + len(block)]
            filler = _xor(block, stream)
        plain = final + self.urandom(pad_len)
        beta = _xor(plain, streams[n - 1]) + filler
        gamma = mac(keys[n - 1].header_mac, beta)
        for i in range(n - 2, -1, -1):
            plain = relays[i] + gamma + beta[: self.beta_len - self.layer_len]
            beta = _xor(plain, streams[i][: self.beta_len])
            gamma = mac(keys[i].header_mac, beta)
        return alpha + beta + gamma, keys

    @staticmethod
    def _hop_secrets(x: bytes, public_keys: Sequence[bytes]) -> tuple[bytes, list[HopKeys]]:
        """alpha_0 and each hop's keys: one fixed-base and ``n`` variable-base multiplications."""
        alpha = crypto_scalarmult_base(x)
        c = clamp(x)
        scalar = x
        keys = []
        for i, public in enumerate(public_keys):
            if i:
                scalar = clamped_representative(c)
            try:
                shared = crypto_scalarmult(scalar, public)
            except RuntimeError:  # libsodium refuses a zero result (a key of small order)
                raise ValueError("mix public key of small order") from None
            hop = hop_keys(shared)
            keys.append(hop)
            c = c * clamp(hop.blinding) % L
        return alpha, keys

    def process_header(
        self, key: SecretKey, alpha: bytes, beta: bytes
    ) -> tuple[HopKeys, bytes] | None:
        """(keys, decrypted routing stream) or None when the shared secret is zero."""
        try:
            shared = key.exchange(alpha)
        except ValueError:
            return None
        keys = hop_keys(shared)
        return keys, self._aes().ctr(keys.header, self._zero_iv, beta + self._layer_pad)

    @staticmethod
    def blind(keys: HopKeys, alpha: bytes) -> bytes:
        """The next hop's alpha: ``X25519(b, alpha)`` (alpha was not of small order: its
        shared secret was not zero, and clamped scalars are multiples of 8)."""
        out = x25519(keys.blinding, alpha)
        assert out is not None
        return out


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b[:n], "little")).to_bytes(n, "little")


__all__ = [
    "ALPHA_LEN",
    "NAME",
    "PUBLIC_KEY_LEN",
    "VERSION",
    "Core",
    "HopKeys",
    "SecretKey",
    "clamp",
    "clamped_representative",
    "hop_keys",
    "is_valid_public_key",
    "kdf",
    "mac",
]
